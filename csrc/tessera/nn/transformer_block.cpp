// Generic transformer layer (see transformer_block.h for the references).
#include "tessera/nn/transformer_block.h"

#include "tessera/nn/decode_layer.h"

#include <ATen/ATen.h>

namespace tessera::nn {
namespace {

// Stochastic depth as timm's drop_path: drop whole samples, rescale the kept ones.
at::Tensor drop_path(const at::Tensor& x, double p, bool training) {
  if (p <= 0.0 || !training) return x;
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  at::Tensor mask = at::empty(shape, x.options()).bernoulli_(keep);
  return keep > 0.0 ? x * mask / keep : x * mask;
}

}  // namespace

TransformerBlockImpl::TransformerBlockImpl(TransformerBlockOptions options_, BlockLayout layout_)
    : Module(layout_.class_name), options(std::move(options_)), layout(std::move(layout_)) {
  reset();
}

void TransformerBlockImpl::reset() {
  const auto& o = options;
  const auto& L = layout;
  auto norm = [&](const std::string& path) {
    return Norm(std::dynamic_pointer_cast<NormImpl>(
        register_at(*this, path, Norm(o.dim(), o.norm(), o.norm_eps()).ptr(), L.containers)));
  };
  auto linear = [&](const std::string& path, int64_t in, int64_t out) {
    return Linear(std::dynamic_pointer_cast<LinearImpl>(
        register_at(*this, path, Linear(in, out, o.mlp_bias()).ptr(), L.containers)));
  };
  auto attention_options = [&](int64_t kv_in) {
    return AttentionOptions(o.dim(), o.num_heads())
        .num_kv_heads(kv_in ? 0 : o.num_kv_heads())
        .head_dim(o.head_dim())
        .kv_input_dim(kv_in)
        .q_bias(o.q_bias())
        .k_bias(o.k_bias())
        .v_bias(o.v_bias())
        .o_bias(o.o_bias())
        .dropout(o.attention_dropout());
  };
  // Each sublayer registers its attention/MLP, then its norm: CLIP's and BERT's order.
  self_attn = Attention(std::dynamic_pointer_cast<AttentionImpl>(
      register_at(*this, L.attn, Attention(attention_options(0), L.attn_layout).ptr(), L.containers)));
  attn_norm = norm(L.attn_norm);
  position_bias_ = o.position_bias() ? register_at(*this, L.position_bias, o.position_bias()(), L.containers) : nullptr;
  if (o.cross_attention_dim() > 0) {
    cross_attn = Attention(std::dynamic_pointer_cast<AttentionImpl>(register_at(
        *this, L.cross_attn, Attention(attention_options(o.cross_attention_dim()), L.cross_layout).ptr(),
        L.containers)));
    TORCH_CHECK_VALUE(!L.cross_norm.empty(), class_name_, ": a cross-attention layout needs a cross_norm path");
    cross_norm = norm(L.cross_norm);
  }
  // A Q-Former without text input has only the query feed-forward (an empty fc1 path).
  TORCH_CHECK_VALUE(!L.fc1.empty() || o.query_ffn(), class_name_, ": a layout without fc1 needs the query feed-forward");
  if (!L.fc1.empty()) {
    if (o.gated_mlp()) gate = linear(L.gate, o.dim(), o.mlp_dim());
    fc1 = linear(L.fc1, o.dim(), o.mlp_dim());
    fc2 = linear(L.fc2, o.mlp_dim(), o.dim());
    mlp_norm = norm(L.mlp_norm);
  }
  if (o.query_ffn()) {
    query_fc1 = linear(L.query_fc1, o.dim(), o.mlp_dim());
    query_fc2 = linear(L.query_fc2, o.mlp_dim(), o.dim());
    query_norm = norm(L.query_norm);
  }
  if (o.layer_scale_init() > 0.0) {
    ls1_ = add_parameter(L.layer_scale1, at::empty({o.dim()}));
    ls2_ = add_parameter(L.layer_scale2, at::empty({o.dim()}));
  } else {
    ls1_ = ls2_ = Slot{};
  }
  // The leaves initialised themselves (unless under NoInitGuard); layer scale is ours.
  if (init_enabled() && ls1_.defined()) {
    at::NoGradGuard g;
    param(ls1_).fill_(o.layer_scale_init());
    param(ls2_).fill_(o.layer_scale_init());
  }
}

at::Tensor TransformerBlockImpl::sublayer(const at::Tensor& x, const Norm& norm,
                                          const std::function<at::Tensor(const at::Tensor&)>& f,
                                          const at::Tensor& scale) const {
  const bool train = is_training();
  if (!options.pre_norm()) {  // BERT: norm(x + dropout(f(x)))
    return norm->forward(x + at::dropout(f(x), options.hidden_dropout(), train));
  }
  at::Tensor y = at::dropout(f(norm->forward(x)), options.hidden_dropout(), train);
  if (scale.defined()) y = y * scale;
  return x + drop_path(y, options.drop_path(), train);
}

at::Tensor TransformerBlockImpl::feed_forward(const at::Tensor& x, const Linear& up, const Linear& down,
                                              const Linear& gate_proj) const {
  at::Tensor h = gate_proj ? apply_activation(gate_proj->forward(x), options.act()) * up->forward(x)
                           : apply_activation(up->forward(x), options.act());
  return down->forward(h);
}

at::Tensor TransformerBlockImpl::forward(const at::Tensor& x, const LayerArgs& args) const {
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(2) == options.dim(), class_name_, " expects hidden states [batch, seq, ",
                    options.dim(), "], got ", x.sizes());
  if (std::optional<at::Tensor> y = decode_layer(*this, x, args)) return *y;
  at::Tensor mask = args.mask;
  auto add_bias = [&](const at::Tensor& b) { mask = mask.defined() ? mask + b : b; };
  if (args.position_bias.defined()) add_bias(args.position_bias);
  if (position_bias_) add_bias(dynamic_cast<const PositionBias&>(*position_bias_).attention_bias(args, x.size(1)).unsqueeze(0));

  at::Tensor h = sublayer(x, attn_norm, [&](const at::Tensor& t) { return self_attn->forward(t, mask, args); },
                          layer_scale1());
  const int64_t nq = options.query_ffn() ? std::min<int64_t>(args.query_length, h.size(1)) : h.size(1);
  auto mlp = [&](const at::Tensor& t) { return feed_forward(t, fc1, fc2, gate); };
  TORCH_CHECK_VALUE(fc1 || nq == h.size(1), class_name_, " has no feed-forward for the ", h.size(1) - nq,
                    " tokens after the ", nq, " queries (a Q-Former without text input)");
  if (!options.query_ffn() || nq == 0) {  // every token takes the same path
    if (cross_attn && (!options.query_ffn() || nq > 0))
      h = sublayer(h, cross_norm, [&](const at::Tensor& t) { return cross_attn->forward_cross(t, args); }, {});
    return sublayer(h, mlp_norm, mlp, layer_scale2());
  }
  // Q-Former: learned queries [0, nq) attend to the context and take their own feed-forward.
  at::Tensor q = h.narrow(1, 0, nq);
  if (cross_attn) q = sublayer(q, cross_norm, [&](const at::Tensor& t) { return cross_attn->forward_cross(t, args); }, {});
  q = sublayer(q, query_norm, [&](const at::Tensor& t) { return feed_forward(t, query_fc1, query_fc2, Linear{nullptr}); },
               {});
  if (nq == h.size(1)) return q;
  at::Tensor text = sublayer(h.narrow(1, nq, h.size(1) - nq), mlp_norm, mlp, layer_scale2());
  return at::cat({q, text}, 1);
}

}  // namespace tessera::nn
