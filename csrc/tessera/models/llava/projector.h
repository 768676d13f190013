// Vision-to-language projectors behind one registry, chosen by name in the LLaVA config
// (`projector_type`): `mlp2x_gelu` (linear_1 -> act -> linear_2, transformers'
// LlavaMultiModalProjector), `linear` (linear_1 alone), `resampler` (learned queries that
// cross-attend to the features: `projector_num_queries` tokens per image, resampler.cpp).
// A C++ extension registers its own (examples/cpp_extension/swiglu_projector.cpp):
//   REGISTER: tessera::models::register_projector("my_proj", [](const ProjectorSpec& s) { ... });
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tessera::models {

/// What a projector maps: vision features [N, tokens, in_dim] -> [N, tokens', out_dim].
class Projector {
 public:
  virtual ~Projector() = default;
  virtual at::Tensor project(const at::Tensor& features) const = 0;
  /// Whether it reads the tower's features after its post-norm. LLaVA's projectors read a layer's
  /// raw output; BLIP-2's Q-Former reads normed features (transformers' last_hidden_state, LAVIS's
  /// ln_vision), in stage 1 as in stage 2.
  virtual bool reads_normed_features() const { return false; }
  /// Draws the parameters of its own that are neither linears nor norms (learned queries), which
  /// the parent's init_weights initialises first (so a meta-built model's `init_weights()` covers
  /// them, and a seed draws what it drew when they were drawn at construction).
  virtual void init_own_parameters() {}
};

struct ProjectorSpec {
  int64_t in_dim = 0, out_dim = 0;
  std::string act = "gelu";
  bool bias = true;
  /// Tokens per image the projector must return; 0: as many as it receives.
  int64_t num_queries = 0;
  /// Attention heads, for projectors that attend (the language model's head count).
  int64_t num_heads = 1;
  /// The LLaVA config's `projector_config` object as JSON text: sizes of a projector's own
  /// (the Q-Former's layers and width); "{}" when absent.
  std::string config_json = "{}";
};

/// Builds a module that also implements Projector.
using ProjectorFactory = std::function<std::shared_ptr<torch::nn::Module>(const ProjectorSpec&)>;

/// Adds `name` (a usable name: core::usable_name) once; a second registration of a name, a
/// built-in's included, is a ValueError, as for model configs and families.
void register_projector(const std::string& name, ProjectorFactory factory);
std::shared_ptr<torch::nn::Module> make_projector(const std::string& name, const ProjectorSpec& spec);
std::vector<std::string> list_projectors();
/// A clear error naming `where` and the registered names when `name` is unknown.
void check_projector_type(const std::string& name, const std::string& where);
/// For projectors without sizes of their own: a `projector_config` given to `type` would be
/// ignored silently, so it is a ValueError.
void require_no_projector_config(const ProjectorSpec& spec, const std::string& type);

}  // namespace tessera::models
