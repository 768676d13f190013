// Output structs shared by model families, with Hugging Face's field names.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace tessera::models {

/// transformers' BaseModelOutputWithPooling.
struct PooledOutput {
  at::Tensor last_hidden_state;           ///< [B, L, D]
  at::Tensor pooler_output;               ///< [B, D]
  std::vector<at::Tensor> hidden_states;  ///< embeddings + every layer, when requested
};

}  // namespace tessera::models
