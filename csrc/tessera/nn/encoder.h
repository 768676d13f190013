// A stack of pre-norm blocks under `layers.N` (HF CLIPEncoder). Returns every intermediate
// hidden state on request — timm's forward_intermediates, LLaVA's vision_feature_layer.
#pragma once
#include "tessera/nn/transformer_block.h"

#include <torch/nn/modules/container/modulelist.h>

#include <vector>

namespace tessera::nn {

struct EncoderOutput {
  at::Tensor last_hidden_state;
  /// Input embeddings then each layer's output (num_layers + 1 tensors) when requested.
  std::vector<at::Tensor> hidden_states;
};

class EncoderImpl : public torch::nn::Cloneable<EncoderImpl> {
 public:
  EncoderImpl(TransformerBlockOptions block, int64_t num_layers);
  void reset() override;
  /// `stop_at`: run only the first N layers (N < 0 counts from the end; 0 runs all).
  EncoderOutput forward(const at::Tensor& x, const AttentionArgs& args = {}, bool output_hidden_states = false,
                        int64_t stop_at = 0);
  /// Recompute activations in backward instead of storing them (saves memory when training).
  bool gradient_checkpointing = false;
  TransformerBlockOptions block_options;
  int64_t num_layers;
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(Encoder);

}  // namespace tessera::nn
