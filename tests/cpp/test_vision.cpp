// vision/: magic-byte sniffing, header caps and truncation, exact PNG decoding, and the
// transforms against hand-computed values (torchvision parity is in tests/python/test_data.py).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "test_util.h"

#include <cmath>
#include <string>

#include "tessera/vision/image_decode.h"
#include "tessera/vision/image_format.h"
#include "tessera/vision/image_transform.h"
#include "tessera/vision/transforms.h"
#include "test_data_images.h"

using namespace tessera::vision;
using tessera::testing::kGrayPng3x2;
using tessera::testing::kJpeg24x16;
using tessera::testing::kPng4x3;

namespace {
using tessera::testing::expect_error;


at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// A PNG whose IHDR claims width x height; nothing after it but IEND (never decoded).
std::string png_header(uint32_t width, uint32_t height) {
  std::string s("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
  for (uint32_t v : {width, height})
    for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  // depth 8, RGB, 3 zero method bytes, a CRC nobody checks, then an empty IEND chunk.
  return s + std::string("\x08\x02\0\0\0" "\0\0\0\0" "\0\0\0\0" "IEND", 17);
}

}  // namespace

TEST(ImageFormat, SniffsMagicBytesAndHeaderSize) {
  EXPECT_EQ(sniff_image_format(kPng4x3), ImageFormat::png);
  EXPECT_EQ(sniff_image_format(kJpeg24x16), ImageFormat::jpeg);
  EXPECT_EQ(sniff_image_format("GIF89a"), ImageFormat::unknown);
  EXPECT_EQ(sniff_image_format(""), ImageFormat::unknown);
  ImageInfo png = read_image_info(kPng4x3);
  EXPECT_EQ(png.height, 3);
  EXPECT_EQ(png.width, 4);
  EXPECT_TRUE(png.complete);
  ImageInfo jpg = read_image_info(kJpeg24x16);
  EXPECT_EQ(jpg.height, 16);
  EXPECT_EQ(jpg.width, 24);
  EXPECT_TRUE(jpg.complete);
  EXPECT_FALSE(read_image_info(kJpeg24x16.substr(0, kJpeg24x16.size() / 2)).complete);
  EXPECT_EQ(leading_bytes_hex("GIF89a", 4), "47 49 46 38 ...");
}

TEST(ImageDecode, RejectsUnknownOversizedAndTruncatedData) {
  expect_error([] { decode_image("GIF89a....", "anim.gif"); }, "anim.gif): not a JPEG, PNG or WebP");
  expect_error([] { decode_image("GIF89a....", "anim.gif"); }, "first bytes: 47 49 46 38");
  expect_error([] { decode_image(png_header(100000, 100000), "bomb.png"); }, "exceeds the limit");
  expect_error([] { decode_image(png_header(64, 64), "small.png", 1000); }, "4096 pixels exceeds");
  expect_error([] { decode_image(kJpeg24x16.substr(0, 400), "cut.jpg"); }, "cut.jpg): truncated");
  expect_error([] { read_image("/nonexistent/x.png"); }, "/nonexistent/x.png");
}

TEST(ImageDecode, PngIsExact) {
  if (!image_decode_available()) {
    expect_error([] { decode_image(kPng4x3, "a.png"); }, "built without OpenCV");
    GTEST_SKIP() << "built without OpenCV";
  }
  at::Tensor img = decode_image(kPng4x3, "a.png");
  ASSERT_EQ(img.sizes(), at::IntArrayRef({3, 4, 3}));
  ASSERT_EQ(img.scalar_type(), at::kByte);
  const uint8_t expected[3][4][3] = {{{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}},
                                     {{0, 0, 0}, {255, 255, 255}, {128, 64, 32}, {1, 2, 3}},
                                     {{7, 7, 7}, {200, 100, 50}, {9, 99, 199}, {250, 5, 125}}};
  EXPECT_TRUE(at::equal(img, at::from_blob((void*)expected, {3, 4, 3}, at::kByte)));
  // Grayscale expands to three equal channels.
  at::Tensor gray = decode_image(kGrayPng3x2, "g.png");
  EXPECT_TRUE(at::equal(gray, at::full({2, 3, 3}, 77, at::kByte)));
  // JPEG: PIL decodes this flat colour to (201, 40, 90) with the same libjpeg-turbo settings.
  at::Tensor jpg = decode_image(kJpeg24x16, "c.jpg");
  ASSERT_EQ(jpg.sizes(), at::IntArrayRef({16, 24, 3}));
  EXPECT_EQ(jpg[5][7][0].item<int>(), 201);
  EXPECT_EQ(jpg[5][7][1].item<int>(), 40);
  EXPECT_EQ(jpg[5][7][2].item<int>(), 90);
  // Flipped bits in the compressed data: an error naming the source, never a crash.
  std::string broken = kPng4x3;
  for (size_t i = 41; i < 60; ++i) broken[i] = static_cast<char>(broken[i] ^ 0x5a);
  expect_error([&] { decode_image(broken, "broken.png"); }, "broken.png");
  // A Huffman table whose code counts overflow: the decoder itself must refuse it.
  std::string bad_jpeg = kJpeg24x16;
  const size_t dht = bad_jpeg.find("\xff\xc4");
  ASSERT_NE(dht, std::string::npos);
  for (size_t i = dht + 5; i < dht + 21; ++i) bad_jpeg[i] = '\xff';
  expect_error([&] { decode_image(bad_jpeg, "bad.jpg"); }, "decode_image(bad.jpg): corrupt jpeg");
}

TEST(Transforms, ShortestSideSizeTruncatesLikeTorchvision) {
  using HW = std::pair<int64_t, int64_t>;
  EXPECT_EQ(shortest_side_size(480, 640, 224), HW(224, 298));
  EXPECT_EQ(shortest_side_size(640, 480, 224), HW(298, 224));
  EXPECT_EQ(shortest_side_size(28, 28, 224), HW(224, 224));
  EXPECT_EQ(shortest_side_size(3, 1000, 2), HW(2, 666));
}

TEST(Transforms, ResizeKeepsConstantsAndAveragesRamps) {
  at::Tensor flat = at::full({10, 14, 3}, 123, at::kByte);
  at::Tensor r = resize(flat, 7, 5);
  EXPECT_EQ(r.sizes(), at::IntArrayRef({7, 5, 3}));
  EXPECT_TRUE(at::equal(r, at::full({7, 5, 3}, 123, at::kByte)));
  EXPECT_TRUE(r.is_contiguous());  // channels_last output is contiguous HWC
  EXPECT_TRUE(resize(flat, 10, 14).is_same(flat));  // same size: returned as is
  // Halving a linear ramp: away from the borders every symmetric filter gives the mean of the
  // two source pixels under the output pixel, 2j + 0.5.
  at::Tensor ramp = at::arange(32, at::kFloat).view({1, 1, 32});
  for (auto mode : {Interpolation::bilinear, Interpolation::bicubic}) {
    at::Tensor half = resize(ramp, 1, 16, mode);
    for (int64_t j = 2; j < 14; ++j) EXPECT_NEAR(half[0][0][j].item<float>(), 2 * j + 0.5, 1e-4);
  }
  // uint8 and float kernels agree to one level on smooth content. (On noise they do not: the
  // uint8 kernel, like PIL, rounds and clamps between its horizontal and vertical passes.)
  at::Tensor yy = at::arange(33).view({33, 1, 1}), xx = at::arange(47).view({1, 47, 1});
  at::Tensor u8 = (yy * 3 + xx * 2 + at::arange(3).view({1, 1, 3}) * 20).to(at::kByte);
  at::Tensor a = resize(u8, 20, 30).to(at::kFloat);
  at::Tensor b = resize(u8.permute({2, 0, 1}).to(at::kFloat), 20, 30).clamp(0, 255).round().permute({1, 2, 0});
  EXPECT_LE((a - b).abs().max().item<float>(), 1.0f);
}

TEST(Transforms, CenterCropRoundsHalfToEvenAndPads) {
  at::Tensor img = at::arange(5 * 7, at::kFloat).view({1, 5, 7});
  // Offsets round(3 / 2) = 2 (half to even) and round(5 / 2) = 2.
  at::Tensor c = center_crop(img, 2, 2);
  EXPECT_EQ(c[0][0][0].item<float>(), 2 * 7 + 2);
  EXPECT_EQ(center_crop(img, 4, 4)[0][0][0].item<float>(), 0 * 7 + 2);  // round(0.5) = 0, round(1.5) = 2
  // transformers' processors round down: floor(1.5) = 1, floor(0.5) = 0 (LLaVA's "square" crop).
  EXPECT_EQ(center_crop(img, 2, 2, /*floor_offsets=*/true)[0][0][0].item<float>(), 1 * 7 + 2);
  EXPECT_EQ(center_crop(img, 4, 4, /*floor_offsets=*/true)[0][0][0].item<float>(), 0 * 7 + 1);
  // Larger than the image: zero padding (width 2 + 1 left + 2 right, height 1 top + 1 bottom).
  at::Tensor small = at::ones({2, 2, 3}, at::kByte);
  at::Tensor p = center_crop(small, 4, 5);
  EXPECT_EQ(p.sizes(), at::IntArrayRef({4, 5, 3}));
  EXPECT_EQ(p.sum().item<int64_t>(), 12);
  EXPECT_EQ(p[1][1][0].item<int>(), 1);
  EXPECT_EQ(p[1][3][0].item<int>(), 0);
  expect_error([&] { crop(img, 4, 0, 2, 2); }, "not inside");
}

TEST(Transforms, NormalizeMatchesFormulaAndFlips) {
  const std::vector<double> mean{0.48145466, 0.4578275, 0.40821073}, std{0.26862954, 0.26130258, 0.27577711};
  at::Tensor img = at::randint(0, 256, {5, 6, 3}, at::kByte);
  at::Tensor x = to_float_normalized(img, mean, std);
  ASSERT_EQ(x.sizes(), at::IntArrayRef({3, 5, 6}));
  at::Tensor ref = (img.permute({2, 0, 1}).to(at::kFloat).div(255) -
                    at::tensor({0.48145466f, 0.4578275f, 0.40821073f}).view({3, 1, 1})) /
                   at::tensor({0.26862954f, 0.26130258f, 0.27577711f}).view({3, 1, 1});
  EXPECT_TRUE(at::equal(x, ref));  // bitwise: the same float32 steps
  Normalize norm(mean, std);
  at::Tensor flipped = at::empty({3, 5, 6});
  norm.into(img, flipped, /*flip=*/true);
  EXPECT_TRUE(at::equal(flipped, x.flip({2})));
  // One channel broadcasts to three.
  at::Tensor g = norm(img.narrow(2, 0, 1));
  EXPECT_TRUE(at::equal(g[0], x[0]));
  expect_error([] { Normalize({0.5}, {0.0}); }, "std[0] is zero");
}

TEST(Transforms, RandomResizedCropBoxIsSeededAndInRange) {
  for (uint64_t s = 0; s < 200; ++s) {
    CropBox a = random_resized_crop_box(60, 80, {0.08, 1.0}, {0.75, 4.0 / 3}, gen(s));
    CropBox b = random_resized_crop_box(60, 80, {0.08, 1.0}, {0.75, 4.0 / 3}, gen(s));
    EXPECT_EQ(std::tie(a.top, a.left, a.height, a.width), std::tie(b.top, b.left, b.height, b.width));
    EXPECT_GE(a.top, 0);
    EXPECT_GE(a.left, 0);
    EXPECT_LE(a.top + a.height, 60);
    EXPECT_LE(a.left + a.width, 80);
    const double frac = double(a.height * a.width) / (60 * 80);
    EXPECT_GT(frac, 0.05);  // 0.08 up to rounding of h and w
  }
  // No draw can fit a 20 x 20 square in 10 x 40, so the fallback crops a centred 10 x 10.
  CropBox f = random_resized_crop_box(10, 40, {1.0, 1.0}, {1.0, 1.0}, gen(0));
  EXPECT_EQ(std::tie(f.top, f.left, f.height, f.width), std::make_tuple(0, 15, 10, 10));
}

TEST(Transforms, FlipProbability) {
  int flips = 0;
  for (uint64_t s = 0; s < 4000; ++s) flips += draw_horizontal_flip(0.5, gen(s));
  EXPECT_NEAR(flips / 4000.0, 0.5, 0.03);
  for (uint64_t s = 0; s < 50; ++s) {
    EXPECT_FALSE(draw_horizontal_flip(0.0, gen(s)));
    EXPECT_TRUE(draw_horizontal_flip(1.0, gen(s)));
  }
}

TEST(ImageTransform, EvalAndTrainPipelines) {
  at::Tensor gray = at::randint(0, 256, {28, 28, 1}, at::kByte);
  ImageTransform eval(TransformOptions().image_size(56));
  at::Tensor x = eval.apply(gray, gen(0));
  ASSERT_EQ(x.sizes(), at::IntArrayRef({3, 56, 56}));
  // Resize of one channel then broadcast: the three channels differ only by mean/std.
  const double m0 = 0.48145466, s0 = 0.26862954, m1 = 0.4578275, s1 = 0.26130258;
  EXPECT_TRUE(at::allclose(x[1], ((x[0] * s0 + m0) - m1) / s1, 1e-5, 1e-5));
  EXPECT_EQ(ImageTransform(TransformOptions().image_size(56).expand_grayscale(false)).apply(gray, gen(0)).size(0), 1);

  at::Tensor rgb = at::randint(0, 256, {40, 50, 3}, at::kByte);
  ImageTransform train(TransformOptions().image_size(32).train(true));
  EXPECT_TRUE(at::equal(train.apply(rgb, gen(7)), train.apply(rgb, gen(7))));
  EXPECT_FALSE(at::equal(train.apply(rgb, gen(7)), train.apply(rgb, gen(8))));
  // The train pipeline is exactly crop box -> resize -> flip -> normalize with the same draws.
  at::Generator g = gen(3);
  CropBox b = random_resized_crop_box(40, 50, {0.08, 1.0}, {0.75, 4.0 / 3}, g);
  at::Tensor manual = resize(crop(rgb, b.top, b.left, b.height, b.width), 32, 32);
  if (draw_horizontal_flip(0.5, g)) manual = horizontal_flip(manual);
  EXPECT_TRUE(at::equal(train.apply(rgb, gen(3)),
                        to_float_normalized(manual, train.options().mean(), train.options().std())));
  expect_error([] { ImageTransform(TransformOptions().scale({0.5, 0.1})); }, "scale");
}
