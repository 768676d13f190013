// Output structs shared by model families, with Hugging Face's field names. Each struct lists its
// fields once in visit_fields (tensor, tensor list or nested output), and `kName` is the Python
// ModelOutput class it becomes; bindings convert any of them generically (csrc/python/outputs.h).
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace tessera::models {

/// transformers' BaseModelOutputWithPooling.
struct PooledOutput {
  static constexpr const char* kName = "BaseModelOutputWithPooling";
  at::Tensor last_hidden_state;           ///< [B, L, D]
  at::Tensor pooler_output;               ///< [B, D]
  std::vector<at::Tensor> hidden_states;  ///< embeddings + every layer, when requested

  template <class V>
  void visit_fields(V&& v) const {
    v("last_hidden_state", last_hidden_state);
    v("pooler_output", pooler_output);
    v("hidden_states", hidden_states);
  }
};

/// timm's forward_intermediates result: the final hidden states and the picked layers' outputs.
struct IntermediatesOutput {
  static constexpr const char* kName = "IntermediatesOutput";
  at::Tensor last_hidden_state;
  std::vector<at::Tensor> intermediates;

  template <class V>
  void visit_fields(V&& v) const {
    v("last_hidden_state", last_hidden_state);
    v("intermediates", intermediates);
  }
};

}  // namespace tessera::models
