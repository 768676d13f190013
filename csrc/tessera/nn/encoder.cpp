// Transformer encoder stack with optional intermediate outputs and activation checkpointing.
#include "tessera/nn/encoder.h"

#include "tessera/nn/checkpoint.h"

#include <ATen/ATen.h>

namespace tessera::nn {

EncoderImpl::EncoderImpl(TransformerBlockOptions block, int64_t n) : block_options(block), num_layers(n) { reset(); }

void EncoderImpl::reset() {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers; ++i) layers->push_back(TransformerBlock(block_options));
}

EncoderOutput EncoderImpl::forward(const at::Tensor& x, const AttentionArgs& args, bool output_hidden_states,
                                   int64_t stop_at) {
  const int64_t n = static_cast<int64_t>(layers->size());
  const int64_t last = stop_at == 0 ? n : (stop_at > 0 ? stop_at : n + stop_at);
  TORCH_CHECK_INDEX(last >= 0 && last <= n, "encoder: cannot stop at layer ", stop_at, " of ", n);
  EncoderOutput out;
  at::Tensor h = x;
  if (output_hidden_states) out.hidden_states.push_back(h);
  for (int64_t i = 0; i < last; ++i) {
    auto block = layers[i]->as<TransformerBlockImpl>();
    if (gradient_checkpointing && is_training() && at::GradMode::is_enabled()) {
      h = checkpoint([block, args](const at::Tensor& t) { return block->forward(t, args); }, h);
    } else {
      h = block->forward(h, args);
    }
    if (output_hidden_states) out.hidden_states.push_back(h);
  }
  out.last_hidden_state = h;
  return out;
}

}  // namespace tessera::nn
