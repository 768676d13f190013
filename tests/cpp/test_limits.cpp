// Resource limits on hostile headers (docs/reliability.md): a file that claims huge sizes is
// refused with an error naming it before memory for those sizes is taken, and a header that makes
// size arithmetic overflow or nests deeply is an error, never a crash. Complements the fuzzers
// (fuzz/), whose committed crash inputs ctest replays as fuzz_regressions_*.
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tessera/core/json_config.h"
#include "tessera/core/safetensors.h"
#include "tessera/data/idx_file.h"
#include "tessera/vision/image_decode.h"
#include "test_util.h"

namespace fs = std::filesystem;
using tessera::testing::expect_error;

namespace {

std::string be32(uint32_t v) {
  std::string s;
  for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// PNG signature, IHDR of the given size, IEND: all the header reader needs.
std::string png_header(uint32_t width, uint32_t height) {
  return std::string("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16) + be32(width) + be32(height) +
         std::string("\x08\x02\0\0\0" "\0\0\0\0" "\0\0\0\0" "IEND", 17);
}

// SOI, SOF0 of the given size (3 components), SOS, one byte of scan data, EOI.
std::string jpeg_header(uint16_t width, uint16_t height) {
  std::string sof("\xFF\xC0\x00\x11\x08", 5);
  sof += static_cast<char>(height >> 8);
  sof += static_cast<char>(height & 0xff);
  sof += static_cast<char>(width >> 8);
  sof += static_cast<char>(width & 0xff);
  sof += std::string("\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", 10);
  return std::string("\xFF\xD8", 2) + sof +
         std::string("\xFF\xDA\x00\x0C\x03\x01\x00\x02\x11\x03\x11\x00\x3F\x00" "\x00\xFF\xD9", 17);
}

std::string safetensors_bytes(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((uint64_t(header.size()) >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string nested_array(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// Peak resident memory of this process so far, in MiB.
double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

std::string temp_path(const std::string& name) {
  return (fs::path(::testing::TempDir()) / ("tessera_limits_" + std::to_string(getpid()) + "_" + name)).string();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

// First in the file, so that the peak RSS it compares against is not another test's.
TEST(Limits, IdxGzipBombStopsAtTheHeaderSize) {
  // A 16-byte IDX vector followed by 96 MiB of zeros, gzip-compressed to ~100 KB.
  const std::string path = temp_path("bomb.idx.gz");
  {
    gzFile f = gzopen(path.c_str(), "wb9");
    ASSERT_NE(f, nullptr);
    const std::string header = std::string("\0\0\x08\x01", 4) + be32(16) + std::string(16, '\1');
    gzwrite(f, header.data(), static_cast<unsigned>(header.size()));
    const std::string zeros(1 << 20, '\0');
    for (int i = 0; i < 96; ++i) gzwrite(f, zeros.data(), static_cast<unsigned>(zeros.size()));
    gzclose(f);
  }
  const double before = peak_rss_mib();
  expect_error([&] { tessera::data::read_idx(path); }, "more than");
  EXPECT_LT(peak_rss_mib() - before, 48.0) << "the reader buffered the decompressed stream";
  fs::remove(path);
}

TEST(Limits, IdxAbsurdDimensionsRefusedBeforeReading) {
  const std::string path = temp_path("dims.idx");
  // 2^21 x 2^21 x 2^22 bytes: the element count wraps to 0 in 64 bits.
  write_file(path, std::string("\0\0\x08\x03", 4) + be32(1u << 21) + be32(1u << 21) + be32(1u << 22));
  expect_error([&] { tessera::data::read_idx(path); }, "exceed 2^62 bytes");
  // 255 dimensions of 2^31 - 1.
  std::string many("\0\0\x08\xff", 4);
  for (int i = 0; i < 255; ++i) many += be32(0x7fffffff);
  write_file(path, many);
  expect_error([&] { tessera::data::read_idx(path); }, path);
  // 64k x 64k images in a 20-byte file: truncated, and nothing of that size allocated.
  const double before = peak_rss_mib();
  write_file(path, std::string("\0\0\x08\x03", 4) + be32(1) + be32(65536) + be32(65536) + "abcd");
  expect_error([&] { tessera::data::read_idx(path); }, "(truncated)");
  EXPECT_LT(peak_rss_mib() - before, 16.0);
  fs::remove(path);
}

TEST(Limits, ImageHeaderOverTheCapRefusedBeforeDecoding) {
  using tessera::vision::decode_image;
  const double before = peak_rss_mib();
  expect_error([] { decode_image(png_header(65536, 65536), "64k.png"); }, "64k.png): 65536 x 65536");
  expect_error([] { decode_image(jpeg_header(65535, 65535), "64k.jpg"); }, "exceeds the limit");
  // 2^32 - 1 squared overflows int64: still a plain "exceeds the limit".
  expect_error([] { decode_image(png_header(0xffffffffu, 0xffffffffu), "max.png"); }, "exceeds the limit");
  expect_error([] { decode_image(png_header(0xffffffffu, 1), "wide.png"); }, "exceeds the limit");
  EXPECT_LT(peak_rss_mib() - before, 16.0);
}

TEST(Limits, SafetensorsHugeShapesRefused) {
  using tessera::core::parse_safetensors;
  // 2^62 F64 values: the byte count wraps to 0 and would match empty data_offsets.
  expect_error([] {
    parse_safetensors(safetensors_bytes(
        R"({"x":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})"), "wrap.st");
  }, "wrap.st, tensor 'x': shape [4611686018427387904] x 8-byte values overflows");
  // A terabyte tensor claimed by a 100-byte file.
  expect_error([] {
    parse_safetensors(safetensors_bytes(
        R"({"x":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}})"), "tb.st");
  }, "outside the data buffer");
  // A header length beyond the cap, in an 8-byte file.
  expect_error([] { parse_safetensors(std::string("\0\0\0\0\0\1\0\0", 8), "len.st"); }, "-byte limit");
}

TEST(Limits, DeeplyNestedJsonInErrorsIsSummarised) {
  // nlohmann's dump() recurses per level: the error message must not print such a value.
  const std::string header = R"({"x":{"dtype":"F32","shape":)" + nested_array(200000) +
                             R"(,"data_offsets":[0,0]}})";
  expect_error([&] { tessera::core::parse_safetensors(safetensors_bytes(header), "deep.st"); },
               "an array nested more than 16 levels deep");
  // A config deeper than 32 levels is refused whole (copying it would recurse too); within
  // that, a value deeper than 16 levels is summarised in messages.
  const auto deep = nlohmann::json::parse(R"({"hidden_size":)" + nested_array(200000) + "}");
  expect_error([&] { tessera::core::ConfigReader(deep, "deep config"); },
               "deep config nests more than 32 levels deep");
  const auto j = nlohmann::json::parse(R"({"hidden_size":)" + nested_array(20) + "}");
  expect_error([&] { tessera::core::ConfigReader(j, "config").get_int("hidden_size", 0); },
               "config: hidden_size must be an integer, got an array nested more than 16 levels deep");
  EXPECT_EQ(tessera::core::json_excerpt(nlohmann::json::parse("[1, [2, 3]]")), "[1,[2,3]]");
  EXPECT_EQ(tessera::core::json_excerpt(nlohmann::json(std::string(300, 'a')), 10), "\"aaaaaaaaa...");
}
