// The `qformer` projector of LLaVA's registry: BLIP-2's bridge as a LLaVA projector (learned
// queries read the vision features through a Q-Former, then `language_projection` into the LM),
// so LLaVA's task, data checks, chat, LoRA and FSDP2 drive it. Its sizes are the LLaVA config's
// `projector_config` (Blip2QFormerConfig fields); `projector_num_queries` queries per image.
//   multi_modal_projector.{query_tokens, qformer.*, language_projection.*}
#include "tessera/models/blip2/qformer.h"
#include "tessera/models/llava/projector.h"
#include "tessera/nn/linear.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

Blip2QFormerOptions projector_qformer_options(const ProjectorSpec& spec) {
  nlohmann::json j = nlohmann::json::parse(spec.config_json);
  // The queries read the vision features; text never enters a projector.
  j["encoder_hidden_size"] = spec.in_dim;
  j["use_qformer_text_input"] = false;
  return Blip2QFormerOptions::from_json(j, "llava config.projector_config", /*strict=*/true);
}

class QFormerProjectorImpl : public nn::Module<QFormerProjectorImpl>, public Projector {
 public:
  explicit QFormerProjectorImpl(ProjectorSpec spec_)
      : Module("Blip2QFormerProjector"), spec(std::move(spec_)), qformer_options(projector_qformer_options(spec)) {
    TORCH_CHECK_VALUE(spec.num_queries > 0, "projector_type 'qformer' needs projector_num_queries > 0 (its learned "
                      "queries: the image tokens per image)");
    reset();
  }
  void reset() override {
    const int64_t H = qformer_options.hidden_size();
    query_tokens_ = add_parameter("query_tokens", std::vector<int64_t>{1, spec.num_queries, H});
    qformer = register_module("qformer", Blip2QFormerModel(qformer_options));
    language_projection = register_module("language_projection", nn::Linear(H, spec.out_dim, spec.bias));
  }
  at::Tensor project(const at::Tensor& features) const override {
    TORCH_CHECK_VALUE(features.dim() == 3 && features.size(2) == spec.in_dim, "qformer projector: expected features "
                      "[N, T, ", spec.in_dim, "], got ", features.sizes());
    at::Tensor queries = param(query_tokens_).expand({features.size(0), -1, -1});
    // Projector::project is const; the Q-Former's forward is not (its encoder routes layer calls).
    auto& q = const_cast<Blip2QFormerModelImpl&>(*qformer);
    return language_projection->forward(q.forward(queries, -1, {}, features).last_hidden_state);
  }
  bool reads_normed_features() const override { return true; }  // as blip2_pretrain trained it
  void init_own_parameters() override {  // N(0, initializer_range), as LAVIS draws its queries
    at::NoGradGuard g;
    param(query_tokens_).normal_(0, qformer_options.initializer_range());
  }

  ProjectorSpec spec;
  Blip2QFormerOptions qformer_options;
  Blip2QFormerModel qformer{nullptr};
  nn::Linear language_projection{nullptr};

 private:
  nn::Slot query_tokens_;
};

const bool qformer_projector_registered = [] {
  register_projector("qformer", [](const ProjectorSpec& s) { return std::make_shared<QFormerProjectorImpl>(s); });
  return true;
}();

}  // namespace
}  // namespace tessera::models
