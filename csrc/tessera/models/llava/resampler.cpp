// The `resampler` projector: a fixed number of learned queries cross-attend to the vision
// features (one perceiver-style layer, as Qwen-VL's and Flamingo's resamplers), so every image
// costs `projector_num_queries` tokens of the language model whatever its patch count.
//   features -> kv_proj -> ln_kv ─┐
//   query -> ln_q ──────────────── attn (q/k/v/out_proj, heads of the LM) -> ln_post -> proj
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "tessera/models/llava/projector.h"
#include "tessera/nn/attention.h"
#include "tessera/nn/linear.h"
#include "tessera/nn/module.h"
#include "tessera/nn/norm.h"

namespace tessera::models {
namespace {

class ResamplerImpl : public nn::Module<ResamplerImpl>, public Projector {
 public:
  explicit ResamplerImpl(ProjectorSpec spec) : Module("Resampler"), spec(std::move(spec)) {
    TORCH_CHECK_VALUE(this->spec.num_queries > 0, "resampler: projector_num_queries must be > 0");
    TORCH_CHECK_VALUE(this->spec.num_heads > 0 && this->spec.out_dim % this->spec.num_heads == 0,
                      "resampler: width ", this->spec.out_dim, " is not divisible by ", this->spec.num_heads, " heads");
    reset();
  }
  void reset() override {
    const int64_t d = spec.out_dim;
    query_ = add_parameter("query", std::vector<int64_t>{spec.num_queries, d});
    kv_proj = register_module("kv_proj", nn::Linear(spec.in_dim, d, false));
    ln_kv = register_module("ln_kv", nn::Norm(d));
    ln_q = register_module("ln_q", nn::Norm(d));
    q_proj = register_module("q_proj", nn::Linear(d, d, spec.bias));
    k_proj = register_module("k_proj", nn::Linear(d, d, spec.bias));
    v_proj = register_module("v_proj", nn::Linear(d, d, spec.bias));
    out_proj = register_module("out_proj", nn::Linear(d, d, spec.bias));
    ln_post = register_module("ln_post", nn::Norm(d));
    proj = register_module("proj", nn::Linear(d, d, spec.bias));
  }
  void init_own_parameters() override {
    at::NoGradGuard g;
    param(query_).normal_(0, 0.02);
  }
  at::Tensor project(const at::Tensor& features) const override {
    TORCH_CHECK_VALUE(features.dim() == 3 && features.size(2) == spec.in_dim, "resampler: expected features [N, T, ",
                      spec.in_dim, "], got ", features.sizes());
    const int64_t n = features.size(0), h = spec.num_heads, d = spec.out_dim / h;
    at::Tensor kv = ln_kv->forward(kv_proj->forward(features));
    at::Tensor q = ln_q->forward(param(query_)).unsqueeze(0).expand({n, spec.num_queries, spec.out_dim});
    auto heads = [&](const at::Tensor& x) { return x.view({n, x.size(1), h, d}).transpose(1, 2); };
    at::Tensor a = nn::attention(heads(q_proj->forward(q)), heads(k_proj->forward(kv)), heads(v_proj->forward(kv)));
    a = out_proj->forward(a.transpose(1, 2).reshape({n, spec.num_queries, spec.out_dim}));
    return proj->forward(ln_post->forward(a));
  }

  ProjectorSpec spec;
  nn::Linear kv_proj{nullptr}, q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr}, proj{nullptr};
  nn::Norm ln_kv{nullptr}, ln_q{nullptr}, ln_post{nullptr};

 private:
  nn::Slot query_;
};

const bool resampler_registered = [] {
  register_projector("resampler", [](const ProjectorSpec& s) {
    require_no_projector_config(s, "resampler");
    return std::make_shared<ResamplerImpl>(s);
  });
  return true;
}();

}  // namespace
}  // namespace tessera::models
