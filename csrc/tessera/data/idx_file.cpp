// IDX reader after the format description on yann.lecun.com/exdb/mnist (and torchvision's
// mnist.read_sn3_pascalvincent_tensor): magic, big-endian sizes, big-endian values.
#include "tessera/data/idx_file.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

namespace tessera::data {
namespace {

// gzread passes non-gzip files through unchanged, so one reader serves .gz and raw files.
std::string read_maybe_gzipped(const std::string& path) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> f(gzopen(path.c_str(), "rb"), &gzclose);
  TORCH_CHECK(f, "read_idx: cannot open '", path, "': ", std::strerror(errno));
  gzbuffer(f.get(), 1 << 17);
  std::string data;
  std::vector<char> buf(1 << 20);
  int got;
  while ((got = gzread(f.get(), buf.data(), static_cast<unsigned>(buf.size()))) > 0)
    data.append(buf.data(), static_cast<size_t>(got));
  int err = Z_OK;
  const char* msg = gzerror(f.get(), &err);
  TORCH_CHECK_VALUE(got == 0 && (err == Z_OK || err == Z_STREAM_END), "read_idx: '", path,
                    "' is corrupt or truncated (zlib: ", msg, ")");
  return data;
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
  const std::string data = read_maybe_gzipped(path);
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
  TORCH_CHECK_VALUE(data.size() >= 4 + 4 * ndim, "read_idx: '", path, "' is truncated inside ",
                    "its ", ndim, "-dimension header");
  std::vector<int64_t> sizes;
  size_t count = 1;
  for (size_t d = 0; d < ndim; ++d) {
    const uint32_t n = be32(data, 4 + 4 * d);
    TORCH_CHECK_VALUE(n <= (uint32_t(1) << 31) - 1, "read_idx: '", path, "' dimension ", d,
                      " has an invalid size ", n);
    sizes.push_back(n);
    count *= n;
  }
  const size_t offset = 4 + 4 * ndim, expected = offset + count * type->itemsize;
  TORCH_CHECK_VALUE(data.size() == expected, "read_idx: '", path, "' holds ", data.size(),
                    " bytes but its header ", at::IntArrayRef(sizes), " of ", type->itemsize,
                    "-byte values needs ", expected, data.size() < expected ? " (truncated)" : "");
  at::Tensor out = at::empty(sizes, type->dtype);
  auto* dst = static_cast<char*>(out.data_ptr());
  std::memcpy(dst, data.data() + offset, count * type->itemsize);
  if (type->itemsize > 1) {  // IDX is big-endian; swap each value in place
    for (size_t i = 0; i < count; ++i) {
      char* v = dst + i * type->itemsize;
      for (size_t a = 0, b = type->itemsize - 1; a < b; ++a, --b) std::swap(v[a], v[b]);
    }
  }
  return out;
}

}  // namespace tessera::data
