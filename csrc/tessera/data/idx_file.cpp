// IDX reader after the format description on yann.lecun.com/exdb/mnist (and torchvision's
// mnist.read_sn3_pascalvincent_tensor): magic, big-endian sizes, big-endian values.
#include "tessera/data/idx_file.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

namespace tessera::data {
namespace {

using GzFile = std::unique_ptr<gzFile_s, int (*)(gzFile)>;

// gzread passes non-gzip files through unchanged, so one reader serves .gz and raw files.
GzFile open_maybe_gzipped(const std::string& path) {
  GzFile f(gzopen(path.c_str(), "rb"), &gzclose);
  TORCH_CHECK(f, "read_idx: cannot open '", path, "': ", std::strerror(errno));
  gzbuffer(f.get(), 1 << 17);
  return f;
}

// Appends up to `limit` bytes to `data`, stopping early at the end of the stream. A bounded
// read means a small gzip bomb (or a header that lies) costs at most what the header states
// plus one chunk, never the whole decompressed stream.
void read_up_to(gzFile f, const std::string& path, std::string& data, size_t limit) {
  std::vector<char> buf(std::min<size_t>(1 << 20, limit - std::min(limit, data.size())));
  while (data.size() < limit) {
    const size_t want = std::min(buf.size(), limit - data.size());
    const int got = gzread(f, buf.data(), static_cast<unsigned>(want));
    if (got > 0) data.append(buf.data(), static_cast<size_t>(got));
    if (got <= 0 || static_cast<size_t>(got) < want) break;
  }
  int err = Z_OK;
  const char* msg = gzerror(f, &err);
  TORCH_CHECK_VALUE(err == Z_OK || err == Z_STREAM_END, "read_idx: '", path,
                    "' is corrupt or truncated (zlib: ", msg, ")");
}

struct IdxType {
  uint8_t code;
  at::ScalarType dtype;
  size_t itemsize;
};
constexpr IdxType kTypes[] = {{0x08, at::kByte, 1},  {0x09, at::kChar, 1},   {0x0B, at::kShort, 2},
                              {0x0C, at::kInt, 4},   {0x0D, at::kFloat, 4}, {0x0E, at::kDouble, 8}};

uint32_t be32(const std::string& b, size_t i) {
  auto u = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(b[i + k])); };
  return (u(0) << 24) | (u(1) << 16) | (u(2) << 8) | u(3);
}

}  // namespace

at::Tensor read_idx(const std::string& path, int64_t expected_magic) {
  GzFile file = open_maybe_gzipped(path);
  std::string data;
  read_up_to(file.get(), path, data, 4);
  TORCH_CHECK_VALUE(data.size() >= 4, "read_idx: '", path, "' is too short for an IDX header (",
                    data.size(), " bytes)");
  const int64_t magic = be32(data, 0);
  TORCH_CHECK_VALUE(data[0] == 0 && data[1] == 0, "read_idx: '", path, "' is not an IDX file ",
                    "(magic number ", magic, " does not start with two zero bytes)");
  TORCH_CHECK_VALUE(expected_magic < 0 || magic == expected_magic, "read_idx: '", path,
                    "' has magic number ", magic, ", expected ", expected_magic,
                    expected_magic == kIdxImagesMagic ? " (IDX images)" :
                    expected_magic == kIdxLabelsMagic ? " (IDX labels)" : "");
  const auto code = static_cast<uint8_t>(data[2]);
  const IdxType* type = nullptr;
  for (const IdxType& t : kTypes) type = t.code == code ? &t : type;
  TORCH_CHECK_VALUE(type, "read_idx: '", path, "' has unknown element type code 0x", std::hex,
                    int(code));
  const size_t ndim = static_cast<uint8_t>(data[3]);
  read_up_to(file.get(), path, data, 4 + 4 * ndim);
  TORCH_CHECK_VALUE(data.size() >= 4 + 4 * ndim, "read_idx: '", path, "' is truncated inside ",
                    "its ", ndim, "-dimension header");
  // Sizes are checked against 2^62 bytes in total before anything is read or allocated: the
  // product of 255 int32 sizes overflows size_t, and a wrapped count would pass the size check.
  constexpr size_t kMaxBytes = size_t(1) << 62;
  std::vector<int64_t> sizes;
  size_t count = 1;
  for (size_t d = 0; d < ndim; ++d) {
    const uint32_t n = be32(data, 4 + 4 * d);
    TORCH_CHECK_VALUE(n <= (uint32_t(1) << 31) - 1, "read_idx: '", path, "' dimension ", d,
                      " has an invalid size ", n);
    sizes.push_back(n);
    TORCH_CHECK_VALUE(n == 0 || count <= kMaxBytes / type->itemsize / n, "read_idx: '", path,
                      "' header sizes ", at::IntArrayRef(sizes), "... of ", type->itemsize,
                      "-byte values exceed 2^62 bytes");
    count *= n;
  }
  const size_t offset = 4 + 4 * ndim, expected = offset + count * type->itemsize;
  read_up_to(file.get(), path, data, expected + 1);  // one byte more reveals trailing data
  if (data.size() > expected) {
    // Counts the trailing bytes for the message, in bounded memory and at most 64 MiB of them.
    constexpr size_t kCountCap = size_t(64) << 20;
    size_t total = data.size();
    std::vector<char> scratch(1 << 16);
    int got;
    while (total - expected < kCountCap &&
           (got = gzread(file.get(), scratch.data(), static_cast<unsigned>(scratch.size()))) > 0)
      total += static_cast<size_t>(got);
    TORCH_CHECK_VALUE(false, "read_idx: '", path, "' holds ", total - expected < kCountCap ? "" : "more than ",
                      total, " bytes but its header ", at::IntArrayRef(sizes), " of ", type->itemsize,
                      "-byte values needs ", expected);
  }
  TORCH_CHECK_VALUE(data.size() == expected, "read_idx: '", path, "' holds ", data.size(),
                    " bytes but its header ", at::IntArrayRef(sizes), " of ", type->itemsize,
                    "-byte values needs ", expected, " (truncated)");
  at::Tensor out = at::empty(sizes, type->dtype);
  auto* dst = static_cast<char*>(out.data_ptr());
  // An empty tensor (a zero size) has no buffer: memcpy of a null pointer is undefined, even of 0 bytes.
  if (count > 0) std::memcpy(dst, data.data() + offset, count * type->itemsize);
  if (type->itemsize > 1) {  // IDX is big-endian; swap each value in place
    for (size_t i = 0; i < count; ++i) {
      char* v = dst + i * type->itemsize;
      for (size_t a = 0, b = type->itemsize - 1; a < b; ++a, --b) std::swap(v[a], v[b]);
    }
  }
  return out;
}

}  // namespace tessera::data
