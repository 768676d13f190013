// Layer stack with one orchestration for C++ and Python, intermediate outputs and checkpointing.
#include "tessera/nn/encoder.h"

#include "tessera/nn/checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace tessera::nn {

EncoderImpl::EncoderImpl(int64_t n, LayerFactory f, std::string name, std::string class_name)
    : Module(std::move(class_name)), num_layers(n), factory(std::move(f)), layers_name(std::move(name)) {
  reset();
}

void EncoderImpl::reset() {
  layers = register_module(layers_name, torch::nn::ModuleList());
  layer_ptrs_.clear();
  for (int64_t i = 0; i < num_layers; ++i) {
    auto layer = factory(i);
    auto* as_layer = dynamic_cast<Layer*>(layer.get());
    TORCH_CHECK(as_layer != nullptr, class_name_, ": layer ", i, " (", layer->name(), ") does not implement nn::Layer");
    layers->push_back(layer);
    layer_ptrs_.push_back(as_layer);
  }
}

at::Tensor EncoderImpl::run_layer(int64_t i, const at::Tensor& x, const LayerArgs& args) {
  TORCH_CHECK_INDEX(i >= 0 && i < num_layers, class_name_, ": no layer ", i, " of ", num_layers);
  Layer* layer = layer_ptrs_[i];
  if (gradient_checkpointing && is_training() && at::GradMode::is_enabled()) {
    std::vector<at::Tensor> inputs = args.tensors();
    inputs.insert(inputs.begin(), x);
    const auto params = layers[i]->parameters();
    const bool trainable = std::any_of(params.begin(), params.end(), [](const at::Tensor& p) { return p.requires_grad(); });
    // The graph keeps the layer alive: a backward may outlive the model that made the loss.
    std::shared_ptr<torch::nn::Module> keep = layers->ptr(i);
    return checkpoint(
        [keep, layer, args](const std::vector<at::Tensor>& t) {
          return layer->forward_layer(t[0], args.with_tensors({t.begin() + 1, t.end()}));
        },
        inputs, trainable);
  }
  return layer->forward_layer(x, args);
}

at::Tensor EncoderImpl::call(int64_t i, const at::Tensor& x, const LayerArgs& args) {
  LayerArgs a = args;
  a.layer_idx = i;
  return caller_.fn && !direct_calls ? caller_.fn(i, x, a) : run_layer(i, x, a);
}

EncoderOutput EncoderImpl::forward(const at::Tensor& x, const LayerArgs& args, bool output_hidden_states,
                                   int64_t stop_at) {
  const int64_t last = stop_at > 0 ? stop_at : num_layers + stop_at;
  TORCH_CHECK_INDEX(last >= 0 && last <= num_layers, class_name_, ": cannot stop at layer ", stop_at, " of ",
                    num_layers);
  EncoderOutput out;
  at::Tensor h = x;
  if (output_hidden_states) out.hidden_states.push_back(h);
  for (int64_t i = 0; i < last; ++i) {
    h = call(i, h, args);
    if (output_hidden_states) out.hidden_states.push_back(h);
  }
  out.last_hidden_state = h;
  return out;
}

std::vector<int64_t> take_indices(int64_t n, const std::vector<int64_t>& indices) {
  std::vector<int64_t> out;
  for (int64_t i : indices) {
    const int64_t k = i < 0 ? n + i : i;
    TORCH_CHECK_VALUE(k >= 0 && k < n, "forward_intermediates: layer index ", i, " is out of range for ", n,
                      " layers (", -n, " to ", n - 1, ")");
    out.push_back(k);
  }
  return out;
}

std::vector<int64_t> last_layers(int64_t n, int64_t count) {
  TORCH_CHECK_VALUE(count >= 1 && count <= n, "forward_intermediates: indices=", count, " asks for the last ", count,
                    " layers, but there are ", n, " (1 to ", n, ")");
  std::vector<int64_t> out;
  for (int64_t k = n - count; k < n; ++k) out.push_back(k);
  return out;
}

std::pair<at::Tensor, std::vector<at::Tensor>> EncoderImpl::forward_intermediates(const at::Tensor& x,
                                                                                  const std::vector<int64_t>& indices,
                                                                                  const LayerArgs& args,
                                                                                  bool stop_early) {
  const std::vector<int64_t> take = take_indices(num_layers, indices);
  const int64_t max_index = take.empty() ? -1 : *std::max_element(take.begin(), take.end());
  const int64_t last = stop_early ? max_index + 1 : num_layers;
  std::vector<at::Tensor> outputs(num_layers);
  at::Tensor h = x;
  for (int64_t i = 0; i < last; ++i) outputs[i] = h = call(i, h, args);
  std::vector<at::Tensor> picked;
  for (int64_t k : take) picked.push_back(outputs[k]);
  return {h, picked};
}

}  // namespace tessera::nn
