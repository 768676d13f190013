// Fuzzes the IDX reader (data/idx_file.cpp, read_idx) on raw and gzip-compressed input: magic,
// type code, dimension count and sizes, byte count, gzip stream errors. The input is handed over
// as an in-memory file (memfd, no disk), so the real path-based reader with zlib's gzread runs.
// A tensor read must have exactly as many bytes as the input holds after its header.
#include <sys/mman.h>
#include <unistd.h>

#include <ATen/core/Tensor.h>

#include "fuzz_target.h"
#include "tessera/data/idx_file.h"

namespace {

// One memfd reused for every input: truncated and rewritten each time.
int input_fd() {
  static const int fd = memfd_create("tessera-fuzz-idx", MFD_CLOEXEC);
  tessera::fuzz::require(fd >= 0, "memfd_create failed");
  return fd;
}

}  // namespace

TESSERA_FUZZ_TARGET(idx_file) {
  const int fd = input_fd();
  tessera::fuzz::require(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == ssize_t(size),
                         "cannot write the memfd");
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const at::Tensor t = tessera::data::read_idx(path);
  const bool gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  const size_t header = 4 + 4 * size_t(t.dim());
  tessera::fuzz::require(gzip || header + size_t(t.numel()) * t.element_size() == size,
                         "tensor bytes do not match the file");
}
