// A stack of layers under one name (`layers.N` in CLIP, `layer.N` in ViT/BERT), built one by one
// (layers may differ), each called with its own index. The layer loop here is the only one: C++
// callers run it directly, and Python installs a LayerCaller so that each layer goes through
// nn.Module.__call__ (hooks, FSDP2, checkpoint wrappers) while the math stays in C++.
#pragma once
#include "tessera/nn/layer.h"
#include "tessera/nn/module.h"

#include <torch/nn/modules/container/modulelist.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tessera::nn {

struct EncoderOutput {
  at::Tensor last_hidden_state;
  /// Input then each layer's output (num_layers + 1 tensors) when requested.
  std::vector<at::Tensor> hidden_states;
};

/// Builds layer `index` (a Module that implements Layer).
using LayerFactory = std::function<std::shared_ptr<torch::nn::Module>(int64_t index)>;

/// Example: `Encoder enc(12, [&](int64_t) { return TransformerBlock(opts, layout).ptr(); });`
class EncoderImpl : public Module<EncoderImpl> {
 public:
  EncoderImpl(int64_t num_layers, LayerFactory factory, std::string layers_name = "layers",
              std::string class_name = "Encoder");
  void reset() override;
  /// Runs layers [0, stop_at) (stop_at <= 0 counts from the end: 0 runs all). Each layer gets
  /// `args` with its own layer_idx.
  EncoderOutput forward(const at::Tensor& x, const LayerArgs& args = {}, bool output_hidden_states = false,
                        int64_t stop_at = 0);
  /// timm's forward_intermediates: the outputs of the layers in `indices` (negative counts from
  /// the end), running only up to the last of them when `stop_early`. Returns (final, picked).
  std::pair<at::Tensor, std::vector<at::Tensor>> forward_intermediates(const at::Tensor& x,
                                                                       const std::vector<int64_t>& indices,
                                                                       const LayerArgs& args = {},
                                                                       bool stop_early = false);
  /// Layer `index` in C++ (activation-checkpointed when enabled): what Python's layer node runs.
  at::Tensor run_layer(int64_t index, const at::Tensor& x, const LayerArgs& args);
  /// Routes every layer call through `caller` (Python's); an empty caller restores C++ calls.
  void set_layer_caller(LayerCaller caller) { caller_.fn = std::move(caller); }

  /// Recompute activations in backward instead of storing them (saves memory when training).
  bool gradient_checkpointing = false;
  /// Call layers in C++ even when a Python caller is installed (decoding loops without hooks:
  /// one layer call per generated token through Python would dominate small models).
  bool direct_calls = false;
  int64_t num_layers;
  LayerFactory factory;
  std::string layers_name;
  torch::nn::ModuleList layers{nullptr};

 private:
  at::Tensor call(int64_t index, const at::Tensor& x, const LayerArgs& args);
  // Not copied with the module: a clone belongs to no Python tree until one mirrors it.
  struct CallerSlot {
    CallerSlot() = default;
    CallerSlot(const CallerSlot&) {}
    CallerSlot& operator=(const CallerSlot&) { return *this; }
    LayerCaller fn;
  } caller_;
  std::vector<Layer*> layer_ptrs_;
};
TORCH_MODULE(Encoder);

/// timm's feature_take_indices: `indices` (negative from the end) checked against `n` layers; an
/// index out of range is a ValueError naming it.
std::vector<int64_t> take_indices(int64_t n, const std::vector<int64_t>& indices);
/// timm's int form of `indices`: the last `count` of `n` layers (1 <= count <= n).
std::vector<int64_t> last_layers(int64_t n, int64_t count);

}  // namespace tessera::nn
