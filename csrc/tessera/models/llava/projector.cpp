// The projector registry and the built-in projectors.
#include "tessera/models/llava/projector.h"

#include "tessera/core/named_table.h"
#include "tessera/core/registry.h"
#include "tessera/nn/activation.h"
#include "tessera/nn/linear.h"
#include "tessera/nn/module.h"

#include <c10/util/Exception.h>

namespace tessera::models {
namespace {

core::NamedTable<ProjectorFactory>& registry() {
  static core::NamedTable<ProjectorFactory> r;
  return r;
}

/// linear_1 [-> act -> linear_2]: transformers' LlavaMultiModalProjector names.
class MlpProjectorImpl : public nn::Module<MlpProjectorImpl>, public Projector {
 public:
  MlpProjectorImpl(ProjectorSpec spec, bool two_layers)
      : Module("LlavaMultiModalProjector"), spec(std::move(spec)), two_layers(two_layers) {
    reset();
  }
  void reset() override {
    linear_1 = register_module("linear_1", nn::Linear(spec.in_dim, spec.out_dim, spec.bias));
    linear_2 = two_layers ? register_module("linear_2", nn::Linear(spec.out_dim, spec.out_dim, spec.bias))
                          : nn::Linear{nullptr};
  }
  at::Tensor project(const at::Tensor& x) const override {
    at::Tensor h = linear_1->forward(x);
    return linear_2 ? linear_2->forward(nn::apply_activation(h, nn::activation_from_name(spec.act))) : h;
  }
  ProjectorSpec spec;
  bool two_layers;
  nn::Linear linear_1{nullptr}, linear_2{nullptr};
};

const bool builtins = [] {
  register_projector("mlp2x_gelu", [](const ProjectorSpec& s) {
    require_no_projector_config(s, "mlp2x_gelu");
    return std::make_shared<MlpProjectorImpl>(s, true);
  });
  register_projector("linear", [](const ProjectorSpec& s) {
    require_no_projector_config(s, "linear");
    return std::make_shared<MlpProjectorImpl>(s, false);
  });
  return true;
}();

}  // namespace

void register_projector(const std::string& name, ProjectorFactory factory) {
  // As model configs and families: a second registration (a built-in's name included) replaced
  // the first without a word, and every config of that projector_type built the newcomer.
  TORCH_CHECK_VALUE(core::usable_name(name), "projector name '", name, "' is not usable (a letter or digit, then ",
                    "letters, digits, '.', '_', '+' or '-')");
  TORCH_CHECK_VALUE(static_cast<bool>(factory), "projector '", name, "': the factory is empty");
  TORCH_CHECK_VALUE(registry().add(name, std::move(factory)), "projector '", name, "' is registered twice (registered: ",
                    registry().known(), ")");
}

std::vector<std::string> list_projectors() { return registry().names(); }

void check_projector_type(const std::string& name, const std::string& where) {
  TORCH_CHECK_VALUE(registry().find(name) != nullptr, where, ": unknown projector_type '", name,
                    "' (registered: ", registry().known(), ")");
}

std::shared_ptr<torch::nn::Module> make_projector(const std::string& name, const ProjectorSpec& spec) {
  check_projector_type(name, "projector");
  auto module = (*registry().find(name))(spec);
  TORCH_CHECK_VALUE(dynamic_cast<Projector*>(module.get()) != nullptr, "projector '", name,
                    "' built a module that does not implement tessera::models::Projector");
  return module;
}

void require_no_projector_config(const ProjectorSpec& spec, const std::string& type) {
  TORCH_CHECK_VALUE(spec.config_json == "{}" || spec.config_json.empty(), "llava config: projector_type '", type,
                    "' has no sizes of its own, so projector_config ", spec.config_json,
                    " would be ignored; it is read by the qformer projector (or a projector you register)");
}

}  // namespace tessera::models
