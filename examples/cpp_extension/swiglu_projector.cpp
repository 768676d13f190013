// A LLaVA projector written outside tessera. Importing this extension registers it, and from then
// on a LLaVA config may say `"projector_type": "swiglu"` (C++ or Python, training and loading
// alike): down_proj(silu(gate_proj(x)) * up_proj(x)), LLaMA's MLP between the two widths.
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>
#include <tessera/models/llava/projector.h>
#include <tessera/nn/linear.h>
#include <tessera/nn/module.h>

using tessera::models::ProjectorSpec;

class SwiGluProjectorImpl : public tessera::nn::Module<SwiGluProjectorImpl>, public tessera::models::Projector {
 public:
  explicit SwiGluProjectorImpl(ProjectorSpec spec) : Module("SwiGluProjector"), spec(std::move(spec)) { reset(); }
  void reset() override {
    gate_proj = register_module("gate_proj", tessera::nn::Linear(spec.in_dim, spec.out_dim, spec.bias));
    up_proj = register_module("up_proj", tessera::nn::Linear(spec.in_dim, spec.out_dim, spec.bias));
    down_proj = register_module("down_proj", tessera::nn::Linear(spec.out_dim, spec.out_dim, spec.bias));
  }
  // Token count unchanged: the config's image_seq_length stays one per vision feature.
  at::Tensor project(const at::Tensor& x) const override {
    return down_proj->forward(at::silu(gate_proj->forward(x)) * up_proj->forward(x));
  }

  ProjectorSpec spec;
  tessera::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};

PYBIND11_MODULE(swiglu_projector, m) {
  tessera::models::register_projector(
      "swiglu", [](const ProjectorSpec& s) { return std::make_shared<SwiGluProjectorImpl>(s); });
  m.attr("projector_type") = "swiglu";
}
