// Attention on top of at::scaled_dot_product_attention (the fused kernels on every backend).
#include "tessera/nn/attention.h"

#include "tessera/nn/attention_mask.h"
#include "tessera/nn/attention_precision.h"
#include "tessera/nn/kv_cache.h"
#include "tessera/nn/rotary.h"
#include "tessera/nn/step_attention_backend.h"
#include "tessera/ops/decode_attention.h"

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cmath>
#include <limits>
#include <tuple>

namespace tessera::nn {
namespace {
// A query row whose every key is masked additively (a left-padded prompt's pad rows; a user's
// -1e9 mask) is a softmax over equal values: the mean of the values of its least-masked keys, as
// transformers' eager attention computes it in fp32. SDPA's CPU backward loses log(n) at that
// magnitude and weights each of those keys 1, not 1/n; in fp16 the dtype's lowest does not even
// swamp the scores. Such a row - one whose largest mask value is beyond the dtype's integer
// precision (2^digits), where the scores cannot move it - gets a zero query and a mask of 0 at
// those keys, -inf elsewhere: that mean, in every dtype, with its true gradient.
double saturation(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return std::ldexp(1.0, std::numeric_limits<double>::digits);
    case at::kHalf: return std::ldexp(1.0, 11);
    case at::kBFloat16: return std::ldexp(1.0, 8);
    default: return std::ldexp(1.0, std::numeric_limits<float>::digits);
  }
}

std::pair<at::Tensor, at::Tensor> without_saturated_rows(const at::Tensor& q, const at::Tensor& m) {
  const at::Tensor row_max = m.amax(-1, /*keepdim=*/true);
  const at::Tensor saturated = (row_max <= -saturation(m.scalar_type())).logical_and(row_max.isfinite());  // -inf: 0
  if (m.device().is_cpu() && !saturated.any().item<bool>()) return {q, m};  // no sync on a GPU: rewrite always
  const at::Tensor rewritten =
      at::where(saturated, at::where(m == row_max, at::zeros({}, m.options()),
                                     at::full({}, -std::numeric_limits<double>::infinity(), m.options())),
                m);
  return {q.masked_fill(saturated, 0), rewritten};
}

// attention() after its mask is additive and its blind rows are known.
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor m, bool causal,
                  double dropout_p, std::optional<double> scale);
}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     bool causal, double dropout_p, std::optional<double> scale) {
  TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                    "attention expects q, k, v of shape [batch, heads, seq, head_dim], got ", q.sizes(), ", ",
                    k.sizes(), ", ", v.sizes());
  TORCH_CHECK_VALUE(q.size(1) % k.size(1) == 0, "attention: ", q.size(1),
                    " query heads is not a multiple of ", k.size(1), " key/value heads");
  TORCH_CHECK_VALUE(k.size(0) == q.size(0) && v.size(0) == q.size(0) && v.size(1) == k.size(1) &&
                        v.size(2) == k.size(2) && k.size(3) == q.size(3),
                    "attention: q ", q.sizes(), ", k ", k.sizes(), " and v ", v.sizes(),
                    " must agree in batch, k and v in heads and length, q and k in head_dim");
  TORCH_CHECK_TYPE(at::isFloatingType(q.scalar_type()) && at::isFloatingType(k.scalar_type()) &&
                       at::isFloatingType(v.scalar_type()),
                   "attention: q, k and v must be floating point, got ", q.scalar_type(), ", ", k.scalar_type(), " and ",
                   v.scalar_type());
  if (mask.defined()) {  // SDPA's rule, said with the shapes rather than as an expand failure
    const std::vector<int64_t> full{q.size(0), q.size(1), q.size(2), k.size(2)};
    bool fits = mask.dim() <= 4;
    for (int64_t i = 1; fits && i <= mask.dim(); ++i) {
      const int64_t have = mask.size(-i), want = full[4 - i];
      fits = have == 1 || have == want;
    }
    TORCH_CHECK_VALUE(fits, "attention: a mask of shape ", mask.sizes(), " does not broadcast to [batch, heads, ",
                      "queries, keys] = ", at::IntArrayRef(full));
  }
  TORCH_CHECK_VALUE(dropout_p >= 0 && dropout_p <= 1, "attention: dropout_p must be in [0, 1], got ", dropout_p);
  TORCH_CHECK_VALUE(!scale || std::isfinite(*scale), "attention: scale must be finite, got ", *scale);
  const int64_t q_len = q.size(2), k_len = k.size(2);
  at::Tensor m = mask;
  // Query rows that can see no key give zeros, as SDPA gives them for a boolean mask: a boolean
  // row without a true, or with `causal` and more queries than keys, the rows before the first
  // key (the additive form would average the masked keys instead).
  at::Tensor blind;
  if (m.defined() && !m.is_floating_point()) {
    // SDPA's boolean mask (true: attend) as an additive one; any other integer mask is ambiguous.
    TORCH_CHECK_VALUE(m.scalar_type() == at::kBool, "attention: a mask is additive (floating point) or boolean "
                      "(true: attend), got ", m.scalar_type());
    blind = m.any(-1, /*keepdim=*/true).logical_not();
    m = additive_mask(m, q.scalar_type());
  }
  if (causal && q_len > k_len) {
    at::Tensor before = (at::arange(q_len, q.options().dtype(at::kLong)) < q_len - k_len).view({q_len, 1});
    blind = blind.defined() ? blind.logical_or(before) : before;
  }
  if (blind.defined()) return attend(q, k, v, m, causal, dropout_p, scale).masked_fill(blind, 0);
  return attend(q, k, v, m, causal, dropout_p, scale);
}

namespace {
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor m, bool causal,
                  double dropout_p, std::optional<double> scale) {
  const int64_t q_len = q.size(2), k_len = k.size(2);
  bool is_causal = false;
  // One query at the end of the keys (a decoding step) sees every key: no causal mask to build.
  if (causal && !(q_len == 1 && k_len >= 1)) {
    if (!m.defined() && q_len == k_len) {
      is_causal = true;  // lets SDPA pick its causal fast path
    } else {
      at::Tensor c = causal_mask(q_len, k_len, q.scalar_type(), q.device());
      // Where causality masks, the dtype's lowest, as transformers' masks hold it (not a sum: a
      // key masked twice would be -inf, and a pad row would then average fewer keys than theirs).
      m = m.defined() ? at::where(c.eq(0), m.to(c.scalar_type()), c) : c;
    }
  }
  if (m.defined() && m.scalar_type() != q.scalar_type()) m = m.to(q.scalar_type());
  at::Tensor query = q;
  const bool differentiated =
      at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  // A decoding step's query sees its own token; skipped there unless gradients are taken.
  if (m.defined() && (differentiated || q_len > 1)) std::tie(query, m) = without_saturated_rows(q, m);
  if (ops::decode_attention_applies(query, k, v, m, dropout_p)) return ops::decode_attention(query, k, v, m, scale);
  const bool gqa = q.size(1) != k.size(1);
  std::optional<at::Tensor> opt_mask = m.defined() ? std::optional<at::Tensor>(m) : std::nullopt;
  if (const std::optional<at::ScalarType> rounded_to = fp32_attention_rounds_to(q, k, v, dropout_p)) {
    // Below autocast, which would cast the fp32 operands straight back (SDPA is on its
    // lower-precision list).
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto up = [](const at::Tensor& t) { return t.to(at::kFloat); };
    if (opt_mask && opt_mask->is_floating_point()) {
      // The mask's "masked" (its dtype's lowest, -65504 in fp16) stays masked in fp32: scores past
      // 65504, which fp32 holds, outweighed it and padded keys leaked into real tokens.
      const bool half = opt_mask->scalar_type() == at::kHalf;
      at::Tensor wide = up(*opt_mask);
      opt_mask = half ? wide.masked_fill(wide.le(static_cast<double>(std::numeric_limits<c10::Half>::lowest())),
                                         std::numeric_limits<float>::lowest())
                      : wide;
    }
    return at::scaled_dot_product_attention(up(query), up(k), up(v), opt_mask, dropout_p, is_causal, scale, gqa)
        .to(*rounded_to);
  }
  std::optional<NoCudnnAttention> no_cudnn;
  if (step_avoids_cudnn_attention(q, k)) no_cudnn.emplace();
  return at::scaled_dot_product_attention(query, k, v, opt_mask, dropout_p, is_causal, scale, gqa);
}
}  // namespace

AttentionImpl::AttentionImpl(AttentionOptions options_, AttentionLayout layout_)
    : Module(layout_.class_name), options(std::move(options_)), layout(std::move(layout_)) {
  reset();
}

void AttentionImpl::reset() {
  const auto& o = options;
  heads_ = o.num_heads();
  kv_heads_ = o.num_kv_heads() > 0 ? o.num_kv_heads() : heads_;
  head_dim_ = o.head_dim() > 0 ? o.head_dim() : o.embed_dim() / heads_;
  TORCH_CHECK_VALUE(o.head_dim() > 0 || o.embed_dim() % heads_ == 0, "attention: embed_dim ", o.embed_dim(),
                    " is not divisible by num_heads ", heads_);
  TORCH_CHECK_VALUE(heads_ % kv_heads_ == 0, "attention: num_heads ", heads_,
                    " is not a multiple of num_kv_heads ", kv_heads_);
  const int64_t kv_in = o.kv_input_dim() > 0 ? o.kv_input_dim() : o.embed_dim();
  auto add = [&](const std::string& path, int64_t in, int64_t out, bool bias) {
    return Linear(std::dynamic_pointer_cast<LinearImpl>(
        register_at(*this, path, Linear(in, out, bias).ptr(), layout.containers)));
  };
  // Registration order follows Hugging Face's modules (q, k, v, then the output projection).
  q_proj = add(layout.q, o.embed_dim(), heads_ * head_dim_, o.q_bias());
  k_proj = add(layout.k, kv_in, kv_heads_ * head_dim_, o.k_bias());
  v_proj = add(layout.v, kv_in, kv_heads_ * head_dim_, o.v_bias());
  o_proj = add(layout.o, heads_ * head_dim_, o.embed_dim(), o.o_bias());
}

at::Tensor AttentionImpl::attend(const at::Tensor& x, const at::Tensor& src, const at::Tensor& mask, bool causal,
                                 const LayerArgs* self_args) const {
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(-1) == options.embed_dim(), class_name_, " input must be [batch, seq, ",
                    options.embed_dim(), "], got ", x.sizes());
  const int64_t B = x.size(0), Q = x.size(1), K = src.size(1);
  // [B, L, H*D] -> [B, H, L, D]
  at::Tensor q = q_proj->forward(x).view({B, Q, heads_, head_dim_}).transpose(1, 2);
  at::Tensor k = k_proj->forward(src).view({B, K, kv_heads_, head_dim_}).transpose(1, 2);
  at::Tensor v = v_proj->forward(src).view({B, K, kv_heads_, head_dim_}).transpose(1, 2);
  if (self_args && self_args->rope_cos.defined()) {
    q = apply_rotary(q, self_args->rope_cos, self_args->rope_sin);
    k = apply_rotary(k, self_args->rope_cos, self_args->rope_sin);
  }
  if (self_args && self_args->cache) std::tie(k, v) = self_args->cache->update(self_args->layer_idx, k, v);
  const double p = is_training() ? options.dropout() : 0.0;
  at::Tensor y = attention(q, k, v, mask, causal, p);
  // [B, H, Q, D] -> [B, Q, H*D]
  return o_proj->forward(y.transpose(1, 2).reshape({B, Q, heads_ * head_dim_}));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& mask, const LayerArgs& args) const {
  return attend(x, x, mask, args.causal, &args);
}

at::Tensor AttentionImpl::forward_cross(const at::Tensor& x, const LayerArgs& args) const {
  TORCH_CHECK_VALUE(args.context.defined(), class_name_, ": cross-attention needs a context (encoder_hidden_states)");
  TORCH_CHECK_VALUE(args.context.dim() == 3 && args.context.size(0) == x.size(0), class_name_,
                    ": context must be [batch, seq, dim] with the batch of the hidden states ", x.sizes(), ", got ",
                    args.context.sizes());
  return attend(x, args.context, args.context_mask, /*causal=*/false, nullptr);
}

}  // namespace tessera::nn
