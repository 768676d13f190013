// Reader and writer for the safetensors format (github.com/huggingface/safetensors, format spec):
// 8-byte little-endian header length, a JSON header, then one packed byte buffer.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace tessera::core {

/// Named tensors, ordered by name (the order safetensors writes them in is irrelevant).
using TensorDict = std::map<std::string, at::Tensor>;
using Metadata = std::map<std::string, std::string>;

/// Maps `path` into memory and returns its tensors. The tensors alias a private copy-on-write
/// mapping (writing to them never touches the file); the mapping lives as long as any tensor.
/// Everything is validated before use: header size bounds, JSON syntax, dtype allowlist
/// (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL), shape x itemsize == byte span, offsets in range,
/// no overlap and no gap. Errors name the file and the tensor.
/// Example: `auto w = load_safetensors("model.safetensors").at("logit_scale");`
TensorDict load_safetensors(const std::string& path, Metadata* metadata = nullptr);

/// Parses safetensors bytes held in memory, with the checks of load_safetensors (which maps a
/// file and parses it here). The tensors alias `bytes`, kept alive as long as any tensor is;
/// `source` names the data in errors.
/// Example: `auto t = parse_safetensors(std::move(downloaded), "https://.../model.safetensors");`
TensorDict parse_safetensors(std::string bytes, const std::string& source, Metadata* metadata = nullptr);

/// Writes tensors (any device; copied to contiguous CPU) atomically to `path`.
void save_safetensors(const std::string& path, const TensorDict& tensors, const Metadata& metadata = {});

/// Serialises to the in-memory safetensors byte layout (what save_safetensors writes).
std::string serialize_safetensors(const TensorDict& tensors, const Metadata& metadata = {});

/// Loads a Hugging Face checkpoint folder: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json` (every key checked against its shard).
TensorDict load_checkpoint_dir(const std::string& dir);

}  // namespace tessera::core
