// Reader for the IDX format of LeCun's MNIST page (also Fashion-MNIST's): a big-endian magic
// 0x0000 <type> <ndim>, ndim big-endian int32 sizes, then the values, gzip-compressed or not.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace tessera::data {

/// The magic number of IDX images (unsigned byte, 3 dims) and labels (unsigned byte, 1 dim).
constexpr int64_t kIdxImagesMagic = 2051;
constexpr int64_t kIdxLabelsMagic = 2049;

/// Reads an IDX file (.gz or uncompressed, told apart by content) into a tensor of its
/// element type (uint8, int8, int16, int32, float32, float64) and shape. When `expected_magic`
/// is >= 0 the magic number must equal it. The byte count must match the header exactly.
/// Throws c10::Error naming `path` for a missing file, c10::ValueError for a wrong magic
/// number, an unknown type code, a size mismatch or corrupt gzip data.
///
///     at::Tensor images = read_idx("train-images-idx3-ubyte.gz", kIdxImagesMagic);  // [60000, 28, 28]
at::Tensor read_idx(const std::string& path, int64_t expected_magic = -1);

}  // namespace tessera::data
