// Fuzzes the safetensors reader (core/safetensors.cpp, parse_safetensors: the code
// load_safetensors runs on a mapped file): header length, JSON header, dtype allowlist, shapes,
// data_offsets coverage. Every tensor it returns is read end to end (ASan catches a view past
// the buffer), and what parses must survive serialize_safetensors -> parse byte for byte.
#include <cstring>

#include "fuzz_target.h"
#include "tessera/core/safetensors.h"

namespace {

using tessera::core::TensorDict;

size_t nbytes(const at::Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

// A checksum over every byte of a tensor: reads all of its memory.
unsigned checksum(const at::Tensor& t) {
  const auto* p = static_cast<const unsigned char*>(t.data_ptr());
  unsigned sum = 0;
  for (size_t i = 0; i < nbytes(t); ++i) sum = sum * 31 + p[i];
  return sum;
}

}  // namespace

TESSERA_FUZZ_TARGET(safetensors) {
  using tessera::fuzz::require;
  tessera::core::Metadata metadata;
  const TensorDict tensors = tessera::core::parse_safetensors(
      std::string(reinterpret_cast<const char*>(data), size), "<fuzz input>", &metadata);
  for (const auto& [name, t] : tensors) {
    require(t.is_contiguous(), "parsed tensor is not contiguous");
    (void)checksum(t);
  }
  const TensorDict again = tessera::core::parse_safetensors(
      tessera::core::serialize_safetensors(tensors, metadata), "<round trip>");
  require(again.size() == tensors.size(), "round trip changed the tensor count");
  for (const auto& [name, t] : tensors) {
    const at::Tensor& u = again.at(name);
    require(u.scalar_type() == t.scalar_type() && u.sizes() == t.sizes(),
            "round trip changed a dtype or shape");
    require(std::memcmp(u.data_ptr(), t.data_ptr(), nbytes(t)) == 0, "round trip changed bytes");
  }
}
