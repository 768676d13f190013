// data/: IDX parsing and its errors, Fashion-MNIST, image folders and caption files, the
// DistributedSampler order, and the loader (determinism, sharding, bad samples, early stop,
// resume).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "test_util.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>

#include "tessera/data/caption_file.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/data/idx_file.h"
#include "tessera/data/image_folder.h"
#include "tessera/data/loader.h"
#include "tessera/data/sampler.h"
#include "tessera/vision/image_decode.h"
#include "test_data_images.h"

using namespace tessera::data;
using tessera::vision::TransformOptions;
namespace fs = std::filesystem;

namespace {
using tessera::testing::expect_error;

const std::string kFashionRoot = "/usr/share/datasets/fashion-mnist";


// A fresh folder per call (fs::remove_all resolves to a copy inside libtorch that crashes).
std::string temp_dir(const std::string& name) {
  std::string tmpl = ::testing::TempDir() + "/tessera_data_" + name + "_XXXXXX";
  return mkdtemp(tmpl.data());
}

void write(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string be32(uint32_t v) {
  return {char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}

// Images i % 256 everywhere (8 x 8 x 3), label i; indices in `bad` throw like a corrupt file.
struct Synthetic : Dataset {
  int64_t n;
  std::set<int64_t> bad;
  explicit Synthetic(int64_t n, std::set<int64_t> bad = {}) : n(n), bad(std::move(bad)) {}
  int64_t size() const override { return n; }
  Sample get(int64_t i) const override {
    TORCH_CHECK_VALUE(!bad.count(i), "decode_image(img", i, ".jpg): corrupt jpeg data");
    return {at::full({8, 8, 3}, i % 256, at::kByte), i, ""};
  }
};

TransformOptions small_eval() { return TransformOptions().image_size(8).mean({0, 0, 0}).std({1, 1, 1}); }

std::vector<Batch> epoch_batches(Loader& loader) {
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

}  // namespace

TEST(Idx, ParsesFashionMnistAndRawFiles) {
  if (!fs::exists(kFashionRoot + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST";
  FashionMNIST test(kFashionRoot, FashionMNIST::Split::test);
  ASSERT_EQ(test.size(), 10000);
  EXPECT_EQ(test.images().sizes(), at::IntArrayRef({10000, 28, 28}));
  EXPECT_TRUE(at::equal(at::bincount(test.labels()), at::full({10}, 1000, at::kLong)));
  EXPECT_EQ(test.classes()[9], "Ankle boot");
  Sample s = test.get(0);
  EXPECT_EQ(s.image.sizes(), at::IntArrayRef({28, 28, 1}));
  EXPECT_EQ(s.label, 9);  // the first test image is an ankle boot
  expect_error([&] { test.get(10000); }, "out of range");

  // The same images from an uncompressed copy.
  const std::string dir = temp_dir("idx_raw");
  const at::Tensor first = test.images().narrow(0, 0, 5).contiguous();
  write(dir + "/img", be32(2051) + be32(5) + be32(28) + be32(28) +
                          std::string((const char*)first.data_ptr(), 5 * 784));
  EXPECT_TRUE(at::equal(read_idx(dir + "/img", kIdxImagesMagic), first));
}

TEST(Idx, BadFilesNameTheFile) {
  const std::string dir = temp_dir("idx_bad");
  write(dir + "/magic", be32(2049) + be32(2) + "ab");
  expect_error([&] { read_idx(dir + "/magic", kIdxImagesMagic); }, "magic number 2049, expected 2051");
  expect_error([&] { read_idx(dir + "/magic", kIdxImagesMagic); }, dir + "/magic");
  write(dir + "/short", be32(2051) + be32(2) + be32(2) + be32(2) + "abc");
  expect_error([&] { read_idx(dir + "/short"); }, "truncated");
  write(dir + "/long", be32(2049) + be32(2) + "abc");
  expect_error([&] { read_idx(dir + "/long"); }, "holds 11 bytes");
  write(dir + "/type", std::string("\0\0\x07\x01", 4) + be32(1) + "a");
  expect_error([&] { read_idx(dir + "/type"); }, "unknown element type");
  write(dir + "/notidx", "PK\x03\x04 zip file");
  expect_error([&] { read_idx(dir + "/notidx"); }, "not an IDX file");
  expect_error([&] { read_idx(dir + "/missing"); }, dir + "/missing");
  // A gzip file cut in half.
  if (fs::exists(kFashionRoot + "/t10k-labels-idx1-ubyte.gz")) {
    std::ifstream f(kFashionRoot + "/t10k-labels-idx1-ubyte.gz", std::ios::binary);
    std::string gz((std::istreambuf_iterator<char>(f)), {});
    write(dir + "/cut.gz", gz.substr(0, gz.size() / 2));
    expect_error([&] { read_idx(dir + "/cut.gz"); }, dir + "/cut.gz");
  }
  // Images and labels that disagree.
  write(dir + "/i", be32(2051) + be32(2) + be32(1) + be32(1) + "ab");
  write(dir + "/l", be32(2049) + be32(3) + "abc");
  expect_error([&] { FashionMNIST(dir + "/i", dir + "/l"); }, "has 2 images but");
  write(dir + "/l2", be32(2049) + be32(2) + std::string("\x01\x0c", 2));
  expect_error([&] { FashionMNIST(dir + "/i", dir + "/l2"); }, "has label 12");
  expect_error([&] { FashionMNIST(dir, FashionMNIST::Split::train); }, "not found; tried");
}

TEST(Sampler, MatchesDistributedSamplerShape) {
  // 10 samples over 3 ranks: 4 each, padded with the first two of the order.
  std::multiset<int64_t> seen;
  for (int64_t r = 0; r < 3; ++r) {
    auto mine = shard_indices(10, true, 5, 2, r, 3);
    EXPECT_EQ(mine.size(), 4u);
    seen.insert(mine.begin(), mine.end());
  }
  for (int64_t i = 0; i < 10; ++i) EXPECT_GE(seen.count(i), 1u);
  EXPECT_EQ(seen.size(), 12u);
  EXPECT_EQ(shard_indices(10, false, 0, 0, 1, 3), std::vector<int64_t>({1, 4, 7, 0}));
  EXPECT_NE(shard_indices(100, true, 0, 0, 0, 1), shard_indices(100, true, 0, 1, 0, 1));
  EXPECT_NE(sample_seed(0, 0, 1), sample_seed(0, 1, 0));
}

TEST(ImageFolder, ClassesSortedFilesRecursiveBadFileSkipped) {
  if (!tessera::vision::image_decode_available()) GTEST_SKIP() << "built without OpenCV";
  const std::string root = temp_dir("folder");
  write(root + "/zebra/b.png", tessera::testing::kPng4x3);
  write(root + "/zebra/A.PNG", tessera::testing::kGrayPng3x2);
  write(root + "/zebra/sub/c.jpg", tessera::testing::kJpeg24x16);
  write(root + "/zebra/notes.txt", "ignored");
  write(root + "/cat/x.jpeg", "this is not a jpeg");
  write(root + "/cat/y.png", tessera::testing::kPng4x3);
  auto ds = std::make_shared<ImageFolder>(root);
  EXPECT_EQ(ds->classes(), std::vector<std::string>({"cat", "zebra"}));
  ASSERT_EQ(ds->size(), 5);
  // Folder then name, byte order: "A.PNG" < "b.png", and zebra/ before zebra/sub/.
  EXPECT_EQ(fs::path(ds->samples()[2].first).filename(), "A.PNG");
  EXPECT_EQ(fs::path(ds->samples()[4].first).filename(), "c.jpg");
  EXPECT_EQ(ds->get(2).image.sizes(), at::IntArrayRef({2, 3, 3}));
  expect_error([&] { ds->get(0); }, "x.jpeg): not a JPEG, PNG or WebP");

  Loader loader(ds, small_eval(), LoaderOptions().batch_size(2).shuffle(false).num_workers(2));
  auto batches = epoch_batches(loader);
  ASSERT_EQ(batches.size(), 2u);
  // Row 0's file is corrupt: refilled from the first position after the batch (index 2).
  EXPECT_TRUE(at::equal(batches[0].indices, at::tensor({2, 1}, at::kLong)));
  EXPECT_TRUE(at::equal(batches[1].indices, at::tensor({2, 3}, at::kLong)));
  EXPECT_EQ(batches[0].pixel_values.sizes(), at::IntArrayRef({2, 3, 8, 8}));
  EXPECT_EQ(loader.skipped(), 1);
  ASSERT_EQ(loader.errors().size(), 1u);
  EXPECT_NE(loader.errors()[0].find("x.jpeg"), std::string::npos);
}

TEST(CaptionDataset, JsonlAndCsvWithQuotesAndRelativePaths) {
  const std::string dir = temp_dir("captions");
  write(dir + "/imgs/a.png", tessera::testing::kPng4x3);
  write(dir + "/list.jsonl", "{\"image\": \"imgs/a.png\", \"caption\": \"a \\\"red\\\" dot\"}\n\n" +
                                 std::string("{\"image\": \"/abs/b.jpg\", \"caption\": \"two\"}\n"));
  CaptionDataset jl(dir + "/list.jsonl");
  ASSERT_EQ(jl.size(), 2);
  EXPECT_EQ(jl.entries()[0].image, dir + "/imgs/a.png");
  EXPECT_EQ(jl.entries()[0].caption, "a \"red\" dot");
  EXPECT_EQ(jl.entries()[1].image, "/abs/b.jpg");
  EXPECT_TRUE(jl.has_captions());

  write(dir + "/list.csv", "id,caption,image\r\n1,\"commas, \"\"quotes\"\"\nand lines\",imgs/a.png\r\n2,plain,x.png\n");
  CaptionDataset csv(dir + "/list.csv");
  ASSERT_EQ(csv.size(), 2);
  EXPECT_EQ(csv.entries()[0].caption, "commas, \"quotes\"\nand lines");
  EXPECT_EQ(csv.entries()[1].image, dir + "/x.png");

  write(dir + "/bad.jsonl", "{\"image\": \"a.png\"}\n");
  expect_error([&] { CaptionDataset(dir + "/bad.jsonl"); }, "bad.jsonl' line 1");
  write(dir + "/bad2.jsonl", "{\"image\": \"a.png\", \"caption\": \"x\"}\n{oops\n");
  expect_error([&] { CaptionDataset(dir + "/bad2.jsonl"); }, "line 2: invalid JSON");
  write(dir + "/bad.csv", "image,text\na.png,hi\n");
  expect_error([&] { CaptionDataset(dir + "/bad.csv"); }, "no \"caption\" column");
  write(dir + "/open.csv", "image,caption\na.png,\"never closed\n");
  expect_error([&] { CaptionDataset(dir + "/open.csv"); }, "line 2: quoted field never closed");

  if (!tessera::vision::image_decode_available()) return;
  Loader loader(std::make_shared<CaptionDataset>(dir + "/list.csv"), small_eval(),
                LoaderOptions().batch_size(1).shuffle(false).drop_last(false).num_workers(1));
  auto batches = epoch_batches(loader);  // x.png is missing: its row comes from position 0
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[1].captions, std::vector<std::string>({"commas, \"quotes\"\nand lines"}));
  EXPECT_EQ(loader.skipped(), 1);
}

TEST(Loader, DeterministicForASeedWhateverTheWorkers) {
  auto ds = std::make_shared<Synthetic>(103);
  auto opts = TransformOptions().image_size(6).train(true).mean({0, 0, 0}).std({1, 1, 1});
  std::vector<std::vector<Batch>> runs;
  for (int64_t workers : {0, 1, 3}) {
    Loader loader(ds, opts, LoaderOptions().batch_size(10).seed(42).num_workers(workers).prefetch(2));
    loader.set_epoch(3);
    runs.push_back(epoch_batches(loader));
  }
  ASSERT_EQ(runs[0].size(), 10u);  // 103 // 10 with drop_last
  for (size_t r = 1; r < runs.size(); ++r) {
    for (size_t b = 0; b < runs[0].size(); ++b) {
      EXPECT_TRUE(at::equal(runs[r][b].indices, runs[0][b].indices));
      EXPECT_TRUE(at::equal(runs[r][b].pixel_values, runs[0][b].pixel_values));
    }
  }
  EXPECT_TRUE(at::equal(runs[0][0].labels, runs[0][0].indices));
  // A pixel of row k is index % 256 / 255 (a flat image stays flat under any crop or flip).
  EXPECT_FLOAT_EQ(runs[0][0].pixel_values[4][1][2][3].item<float>(),
                  float(runs[0][0].indices[4].item<int64_t>() % 256) / 255.0f);
  Loader other(ds, opts, LoaderOptions().batch_size(10).seed(43));
  other.set_epoch(3);
  EXPECT_FALSE(at::equal(other.next()->indices, runs[0][0].indices));
}

TEST(Loader, ShardsCoverTheDatasetDisjointly) {
  auto ds = std::make_shared<Synthetic>(120);
  std::vector<int64_t> all;
  for (int64_t rank = 0; rank < 4; ++rank) {
    Loader loader(ds, small_eval(), LoaderOptions().batch_size(7).rank(rank).world_size(4).drop_last(false));
    loader.set_epoch(1);
    EXPECT_EQ(loader.size(), 5);  // 30 samples per rank: 4 batches of 7 and one of 2
    for (const Batch& b : epoch_batches(loader)) {
      for (int64_t i = 0; i < b.indices.size(0); ++i) all.push_back(b.indices[i].item<int64_t>());
    }
  }
  std::sort(all.begin(), all.end());
  std::vector<int64_t> expected(120);
  std::iota(expected.begin(), expected.end(), int64_t(0));
  EXPECT_EQ(all, expected);
}

TEST(Loader, CorruptSamplesSkippedCountedReported) {
  auto ds = std::make_shared<Synthetic>(50, std::set<int64_t>{3, 17, 18});
  Loader loader(ds, small_eval(), LoaderOptions().batch_size(8).seed(1).max_errors(2).drop_last(false));
  auto batches = epoch_batches(loader);
  ASSERT_EQ(batches.size(), 7u);
  for (size_t i = 0; i < batches.size(); ++i) {
    const Batch& b = batches[i];
    EXPECT_EQ(b.indices.size(0), i < 6 ? 8 : 2);  // refilled, never short
    for (int64_t bad : {3, 17, 18}) EXPECT_FALSE(b.indices.eq(bad).any().item<bool>());
  }
  EXPECT_EQ(loader.skipped(), 3);
  ASSERT_EQ(loader.errors().size(), 2u);  // max_errors
  EXPECT_NE(loader.errors()[0].find("corrupt jpeg data"), std::string::npos);

  // Nothing loads: the error reaches the consumer, and the loader still shuts down.
  auto hopeless = std::make_shared<Synthetic>(4, std::set<int64_t>{0, 1, 2, 3});
  Loader bad(hopeless, small_eval(), LoaderOptions().batch_size(2));
  expect_error([&] { bad.next(); }, "every sample of batch 0");
}

TEST(Loader, EarlyStopDoesNotHang) {
  auto ds = std::make_shared<Synthetic>(5000);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    Loader loader(ds, TransformOptions().image_size(64), LoaderOptions().batch_size(64).num_workers(3).prefetch(8));
    ASSERT_TRUE(loader.next().has_value());
    if (i % 2) loader.stop();
  }  // destroyed with workers busy or idle
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
}

TEST(Loader, ResumeFromStateGivesTheSameNextBatch) {
  auto ds = std::make_shared<Synthetic>(200, std::set<int64_t>{7});
  auto opts = TransformOptions().image_size(6).train(true);
  auto lopts = LoaderOptions().batch_size(16).seed(9).rank(1).world_size(2);
  Loader a(ds, opts, lopts);
  a.set_epoch(2);
  for (int i = 0; i < 3; ++i) a.next();
  const LoaderState st = a.state();
  EXPECT_EQ(st.epoch, 2);
  EXPECT_EQ(st.batches, 3);
  Batch expected = *a.next();

  Loader b(ds, opts, lopts);
  b.load_state(st);
  b.set_epoch(2);  // a training loop's set_epoch for the resumed epoch keeps the position
  Batch got = *b.next();
  EXPECT_TRUE(at::equal(got.indices, expected.indices));
  EXPECT_TRUE(at::equal(got.pixel_values, expected.pixel_values));
  EXPECT_EQ(b.state().batches, 4);
  // An epoch runs to its end, then ends until rewound or moved on.
  while (b.next()) {
  }
  EXPECT_EQ(b.state().batches, b.size());
  EXPECT_FALSE(b.next().has_value());
  b.rewind();
  EXPECT_TRUE(b.next().has_value());
  expect_error([&] { b.load_state({0, 99}); }, "outside this loader");
}
