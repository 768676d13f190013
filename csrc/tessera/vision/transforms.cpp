// Transforms after torchvision.transforms.v2.functional (_geometry.py: resize_image,
// crop/center_crop_image, horizontal_flip_image; _misc.py: normalize_image) and
// RandomResizedCrop.make_params, using the same ATen kernels and the same random draws.
#include "tessera/vision/transforms.h"

#include <ATen/ops/_upsample_bicubic2d_aa.h>
#include <ATen/ops/_upsample_bilinear2d_aa.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/flip.h>
#include <ATen/ops/log.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tessera::vision {
namespace {

bool is_u8(const at::Tensor& img) { return img.scalar_type() == at::kByte; }

void check_image(const at::Tensor& img, const char* fn) {
  TORCH_CHECK_VALUE(img.defined() && img.dim() == 3, fn, ": expected an image tensor of 3 ",
                    "dims (uint8 HWC or float CHW), got ",
                    img.defined() ? img.sizes() : at::IntArrayRef{});
  TORCH_CHECK_TYPE(is_u8(img) || img.is_floating_point(), fn,
                   ": expected a uint8 (HWC) or floating (CHW) image, got ", img.scalar_type());
}

// Dims of height and width: 0, 1 for HWC; 1, 2 for CHW.
int64_t h_dim(const at::Tensor& img) { return is_u8(img) ? 0 : 1; }
int64_t height_of(const at::Tensor& img) { return img.size(h_dim(img)); }
int64_t width_of(const at::Tensor& img) { return img.size(h_dim(img) + 1); }
int64_t channels_of(const at::Tensor& img) { return img.size(is_u8(img) ? 2 : 0); }

// A contiguous copy of a uint8 HWC view (a crop), row by row on this thread. ATen's copy
// would parallelise over OpenMP, and an OpenMP team started from a loader thread keeps
// spinning after each region - measured at 40% of a 2-core machine.
at::Tensor contiguous_serial(const at::Tensor& img) {
  if (img.is_contiguous()) return img;
  const int64_t H = img.size(0), W = img.size(1), C = img.size(2);
  at::Tensor out = at::empty({H, W, C}, at::kByte);
  const uint8_t* src = img.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t sh = img.stride(0), sw = img.stride(1), sc = img.stride(2);
  for (int64_t y = 0; y < H; ++y) {
    const uint8_t* row = src + y * sh;
    uint8_t* o = dst + y * W * C;
    if (sw == C && sc == 1) {
      std::memcpy(o, row, static_cast<size_t>(W * C));
    } else {
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < C; ++c) o[x * C + c] = row[x * sw + c * sc];
    }
  }
  return out;
}

// Python's round(): half to even (the default floating-point rounding mode).
int64_t py_round(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

}  // namespace

std::pair<int64_t, int64_t> shortest_side_size(int64_t height, int64_t width, int64_t size) {
  TORCH_CHECK_VALUE(size > 0 && height > 0 && width > 0, "shortest_side_size: expected positive ",
                    "sizes, got image ", height, " x ", width, " and size ", size);
  const int64_t shorter = std::min(height, width), longer = std::max(height, width);
  // int(size * long / short): true division then truncation, as torchvision computes it.
  const auto new_long = static_cast<int64_t>(static_cast<double>(size * longer) / shorter);
  return width <= height ? std::make_pair(new_long, size) : std::make_pair(size, new_long);
}

at::Tensor resize(const at::Tensor& img, int64_t height, int64_t width, Interpolation interpolation) {
  check_image(img, "resize");
  TORCH_CHECK_VALUE(height > 0 && width > 0, "resize: expected a positive size, got ", height,
                    " x ", width);
  const int64_t H = height_of(img), W = width_of(img), C = channels_of(img);
  if (H == height && W == width) return img;
  // ATen resizes NCHW; a contiguous HWC image is NCHW in channels_last order. As torchvision
  // does, give dim 0 the full numel as stride so ATen allocates the output channels_last too
  // (for N == 1 the layout is otherwise ambiguous, pytorch#68430), which makes the result a
  // contiguous HWC tensor and lets the uint8 kernel skip a repack.
  at::Tensor x = img.unsqueeze(0);
  if (is_u8(img)) {
    const at::Tensor hwc = contiguous_serial(img);
    x = hwc.permute({2, 0, 1}).unsqueeze(0).as_strided({1, C, H, W}, {C * H * W, 1, W * C, C});
  }
  at::Tensor y = interpolation == Interpolation::bicubic
                     ? at::_upsample_bicubic2d_aa(x, {height, width}, /*align_corners=*/false)
                     : at::_upsample_bilinear2d_aa(x, {height, width}, /*align_corners=*/false);
  return is_u8(img) ? y.squeeze(0).permute({1, 2, 0}) : y.squeeze(0);
}

at::Tensor resize_shortest(const at::Tensor& img, int64_t size, Interpolation interpolation) {
  check_image(img, "resize_shortest");
  const auto [h, w] = shortest_side_size(height_of(img), width_of(img), size);
  return resize(img, h, w, interpolation);
}

at::Tensor crop(const at::Tensor& img, int64_t top, int64_t left, int64_t height, int64_t width) {
  check_image(img, "crop");
  const int64_t H = height_of(img), W = width_of(img);
  TORCH_CHECK_VALUE(top >= 0 && left >= 0 && height > 0 && width > 0 && top + height <= H &&
                        left + width <= W,
                    "crop: box (top ", top, ", left ", left, ", ", height, " x ", width,
                    ") is not inside the ", H, " x ", W, " image");
  const int64_t d = h_dim(img);
  return img.narrow(d, top, height).narrow(d + 1, left, width);
}

at::Tensor center_crop(const at::Tensor& img, int64_t height, int64_t width, bool floor_offsets) {
  check_image(img, "center_crop");
  TORCH_CHECK_VALUE(height > 0 && width > 0, "center_crop: expected a positive size, got ",
                    height, " x ", width);
  at::Tensor x = img;
  int64_t H = height_of(x), W = width_of(x);
  if (height > H || width > W) {
    const int64_t pl = width > W ? (width - W) / 2 : 0, pr = width > W ? (width - W + 1) / 2 : 0;
    const int64_t pt = height > H ? (height - H) / 2 : 0, pb = height > H ? (height - H + 1) / 2 : 0;
    // constant_pad_nd lists the last dim first: HWC pads C by (0, 0) before W and H.
    x = is_u8(x) ? at::constant_pad_nd(x, {0, 0, pl, pr, pt, pb}) : at::constant_pad_nd(x, {pl, pr, pt, pb});
    H = height_of(x);
    W = width_of(x);
  }
  if (floor_offsets) return crop(x, (H - height) / 2, (W - width) / 2, height, width);
  return crop(x, py_round((H - height) / 2.0), py_round((W - width) / 2.0), height, width);
}

at::Tensor horizontal_flip(const at::Tensor& img) {
  check_image(img, "horizontal_flip");
  return at::flip(img, {h_dim(img) + 1});
}

Normalize::Normalize(std::vector<double> mean, std::vector<double> std) {
  TORCH_CHECK_VALUE(!mean.empty() && mean.size() == std.size(), "Normalize: mean and std must ",
                    "have the same, non-zero length, got ", mean.size(), " and ", std.size());
  for (size_t c = 0; c < mean.size(); ++c) {
    TORCH_CHECK_VALUE(std[c] != 0, "Normalize: std[", c, "] is zero");
    // torchvision accepts a negative std (it flips the channel); a non-finite one makes every
    // pixel of the channel NaN or inf.
    TORCH_CHECK_VALUE(std::isfinite(mean[c]) && std::isfinite(std[c]), "Normalize: mean[", c, "] and std[", c,
                      "] must be finite, got ", mean[c], " and ", std[c]);
    mean_.push_back(static_cast<float>(mean[c]));
    std_.push_back(static_cast<float>(std[c]));
    // Same float32 steps as ToTensor's div(255) then Normalize's sub_(mean).div_(std).
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[v] = (static_cast<float>(v) / 255.0f - mean_[c]) / std_[c];
    table_.push_back(t);
  }
}

at::Tensor Normalize::operator()(const at::Tensor& img) const {
  check_image(img, "Normalize");
  const int64_t C = channels_of(img);
  TORCH_CHECK_VALUE(C == channels() || C == 1, "Normalize: image has ", C, " channels, expected ",
                    channels(), " or 1");
  if (is_u8(img)) {
    at::Tensor out = at::empty({channels(), height_of(img), width_of(img)}, at::kFloat);
    into(img, out);
    return out;
  }
  const at::Tensor mean = at::tensor(at::ArrayRef<float>(mean_)).to(img.scalar_type()).view({-1, 1, 1});
  const at::Tensor std = at::tensor(at::ArrayRef<float>(std_)).to(img.scalar_type()).view({-1, 1, 1});
  return img.expand({channels(), img.size(1), img.size(2)}).sub(mean).div_(std);
}

void Normalize::into(const at::Tensor& img, const at::Tensor& out, bool flip) const {
  TORCH_CHECK_VALUE(img.dim() == 3 && is_u8(img), "Normalize::into: expected uint8 HWC, got ",
                    img.scalar_type(), " ", img.sizes());
  const int64_t H = img.size(0), W = img.size(1), C = img.size(2);
  TORCH_CHECK_VALUE(C == channels() || C == 1, "Normalize::into: image has ", C,
                    " channels, expected ", channels(), " or 1");
  TORCH_CHECK_VALUE(out.scalar_type() == at::kFloat && out.is_contiguous() &&
                        out.sizes() == at::IntArrayRef({channels(), H, W}),
                    "Normalize::into: expected a contiguous float [", channels(), ", ", H, ", ", W,
                    "] output, got ", out.scalar_type(), " ", out.sizes());
  const uint8_t* src = img.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  const int64_t sh = img.stride(0), sw = img.stride(1), sc = C == 1 ? 0 : img.stride(2);
  // Row by row, every channel of a source row at once: reads stay sequential whatever the
  // input strides, and the flip costs only a reversed x.
  for (int64_t c = 0; c < channels(); ++c) {
    const float* table = table_[static_cast<size_t>(c)].data();
    for (int64_t y = 0; y < H; ++y) {
      const uint8_t* row = src + y * sh + c * sc;
      float* o = dst + (c * H + y) * W;
      if (flip) {
        for (int64_t x = 0; x < W; ++x) o[x] = table[row[(W - 1 - x) * sw]];
      } else {
        for (int64_t x = 0; x < W; ++x) o[x] = table[row[x * sw]];
      }
    }
  }
}

at::Tensor to_float_normalized(const at::Tensor& img, const std::vector<double>& mean,
                               const std::vector<double>& std) {
  return Normalize(mean, std)(img);
}

CropBox random_resized_crop_box(int64_t height, int64_t width, std::array<double, 2> scale,
                                std::array<double, 2> ratio, at::Generator gen) {
  TORCH_CHECK_VALUE(height > 0 && width > 0, "random_resized_crop_box: empty image ", height,
                    " x ", width);
  TORCH_CHECK_VALUE(scale[0] <= scale[1] && ratio[0] <= ratio[1] && ratio[0] > 0,
                    "random_resized_crop_box: scale and ratio must be (min, max) with ratio > 0, ",
                    "got scale (", scale[0], ", ", scale[1], "), ratio (", ratio[0], ", ", ratio[1], ")");
  // Every draw below is the tensor op torchvision makes (float32 uniform_, exp, int64 randint),
  // so a CPU generator seeded s yields torchvision's box after torch.manual_seed(s).
  const at::Tensor log_ratio =
      at::log(at::tensor({static_cast<float>(ratio[0]), static_cast<float>(ratio[1])}));
  const double lr0 = log_ratio[0].item<float>(), lr1 = log_ratio[1].item<float>();
  const double area = static_cast<double>(height * width);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area =
        area * at::empty({1}, at::kFloat).uniform_(scale[0], scale[1], gen).item<float>();
    const double aspect =
        at::exp(at::empty({1}, at::kFloat).uniform_(lr0, lr1, gen)).item<float>();
    const int64_t w = py_round(std::sqrt(target_area * aspect));
    const int64_t h = py_round(std::sqrt(target_area / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int64_t top = at::randint(0, height - h + 1, {1}, gen, at::kLong).item<int64_t>();
      const int64_t left = at::randint(0, width - w + 1, {1}, gen, at::kLong).item<int64_t>();
      return {top, left, h, w};
    }
  }
  // Fallback: the whole image, clamped to the allowed aspect ratios, centred.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio[0]) {
    h = py_round(w / ratio[0]);
  } else if (in_ratio > ratio[1]) {
    w = py_round(h * ratio[1]);
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

at::Tensor random_resized_crop(const at::Tensor& img, int64_t height, int64_t width,
                               std::array<double, 2> scale, std::array<double, 2> ratio,
                               at::Generator gen, Interpolation interpolation) {
  check_image(img, "random_resized_crop");
  const CropBox b = random_resized_crop_box(height_of(img), width_of(img), scale, ratio, gen);
  return resize(crop(img, b.top, b.left, b.height, b.width), height, width, interpolation);
}

bool draw_horizontal_flip(double p, at::Generator gen) {
  // torch.rand(1) < p, compared in float32 as a float tensor against a Python float is.
  return at::rand({1}, gen, at::kFloat).item<float>() < static_cast<float>(p);
}

at::Tensor random_horizontal_flip(const at::Tensor& img, double p, at::Generator gen) {
  return draw_horizontal_flip(p, gen) ? horizontal_flip(img) : img;
}

}  // namespace tessera::vision
