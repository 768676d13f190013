#include "tessera/nn/decode_layer.h"

#include "tessera/nn/kv_cache.h"
#include "tessera/nn/transformer_block.h"
#include "tessera/ops/decode_attention.h"
#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_rows.h"
#include "tessera/ops/kernel_guard.h"

#include <ATen/ATen.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace tessera::nn {
namespace {

std::atomic<bool> fused_decoding{true};
std::atomic<int64_t> steps{0};

using ops::detail::widen;

/// The layer's weights as the kernels read them, or nullopt where one is refused.
struct Weights {
  ops::DecodeWeight q, k, v, o, gate, up, down;
};

std::optional<Weights> weights_of(const TransformerBlockImpl& b, at::ScalarType t) {
  const auto& a = *b.self_attn;
  Weights w;
  std::pair<const Linear*, ops::DecodeWeight*> all[] = {{&a.q_proj, &w.q},  {&a.k_proj, &w.k},   {&a.v_proj, &w.v},
                                                         {&a.o_proj, &w.o},  {&b.gate, &w.gate}, {&b.fc1, &w.up},
                                                         {&b.fc2, &w.down}};
  for (auto& [linear, out] : all) {
    std::optional<ops::DecodeWeight> d = (*linear)->decode_weight(t);
    // int8 decoding reads its own copy; otherwise the weight is of x's dtype.
    if (!d || (d->dtype != t && d->dtype != at::kChar)) return std::nullopt;
    *out = std::move(*d);
  }
  return w;
}

/// Whether the layer's own forward would compute what the fused step does: the layout, eval-time
/// numerics, and every operand on the CPU in x's dtype.
bool shape_applies(const TransformerBlockImpl& b, const at::Tensor& x, const LayerArgs& args) {
  const auto& o = b.options;
  if (!fused_decoding.load(std::memory_order_relaxed) || !args.cache || !args.rope_cos.defined() || !args.rope_sin.defined())
    return false;
  if (!o.pre_norm() || o.norm() != NormKind::rms_norm || !o.gated_mlp() || o.act() != Activation::silu) return false;
  if (b.cross_attn || o.query_ffn() || o.position_bias() || args.position_bias.defined() || b.layer_scale1().defined())
    return false;
  if (!b.gate || !b.fc1 || !b.fc2 || !b.attn_norm || !b.mlp_norm) return false;
  const bool dropout = o.hidden_dropout() > 0 || o.attention_dropout() > 0 || o.drop_path() > 0;
  if (dropout && (b.is_training() || b.self_attn->is_training())) return false;
  const at::ScalarType t = x.scalar_type();
  if (x.dim() != 3 || x.size(1) != 1 || x.size(2) != o.dim() || !x.is_contiguous()) return false;
  if (!ops::decode_rows_apply(x, o.dim())) return false;
  const int64_t B = x.size(0), hd = b.self_attn->head_dim();
  for (const at::Tensor* table : {&args.rope_cos, &args.rope_sin})
    if (table->scalar_type() != t || !table->device().is_cpu() || table->dim() != 3 || table->size(0) != B ||
        table->size(1) != 1 || table->size(2) != hd || !table->is_contiguous() || hd % 2 != 0)
      return false;
  for (const Norm* n : {&b.attn_norm, &b.mlp_norm}) {
    const at::Tensor& w = (*n)->weight();
    if (w.scalar_type() != t || w.numel() != o.dim() || !w.device().is_cpu() || !w.is_contiguous()) return false;
  }
  return ops::own_kernel_may_take({args.rope_cos, args.rope_sin, b.attn_norm->weight(), b.mlp_norm->weight(),
                                   args.mask});
}

template <typename T>
struct Buffers {
  std::vector<T> xn, q, q_rotated, k, v, attn, proj, gate, up;
};

template <typename T>
Buffers<T>& buffers() {
  thread_local Buffers<T> b;
  return b;
}

/// Where decode_gemvs puts a weight's results: T's own buffer (fp32 directly, bf16 rounded).
template <typename T>
ops::GemvOut into(const ops::DecodeWeight& w, T* y) {
  if constexpr (std::is_same_v<T, float>)
    return {&w, y, nullptr};
  else
    return {&w, nullptr, y};
}

/// out = a + b rounded to T (at::add's arithmetic).
template <typename T>
void add(const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(widen(a[i]) + widen(b[i]));
}

template <typename T>
at::Tensor step(const TransformerBlockImpl& b, const at::Tensor& x, const LayerArgs& args, const Weights& w,
                KVCache::Room& room, const at::Tensor& mask) {
  const auto& a = *b.self_attn;
  const int64_t B = x.size(0), D = b.options.dim(), H = a.heads(), Hk = a.kv_heads(), hd = a.head_dim();
  const int64_t F = w.up.out, cap = room.keys.size(2), pos = room.length;
  Buffers<T>& buf = buffers<T>();
  buf.xn.resize(B * D);
  buf.q.resize(B * H * hd);
  buf.q_rotated.resize(B * H * hd);
  buf.k.resize(B * Hk * hd);
  buf.v.resize(B * Hk * hd);
  buf.attn.resize(B * H * hd);
  buf.proj.resize(B * D);
  buf.gate.resize(B * F);
  buf.up.resize(B * F);
  const T* xp = x.data_ptr<T>();
  at::Tensor out = at::empty_like(x);
  T* op = out.data_ptr<T>();
  const T* cos = args.rope_cos.data_ptr<T>();
  const T* sin = args.rope_sin.data_ptr<T>();

  // Attention: norm, projections, rotary (keys straight into the cache), one query per head.
  ops::detail::rms_rows(xp, b.attn_norm->weight().data_ptr<T>(), buf.xn.data(), B, D,
                        static_cast<float>(b.attn_norm->eps));
  ops::decode_gemvs({into(w.q, buf.q.data()), into(w.k, buf.k.data()), into(w.v, buf.v.data())}, buf.xn.data(), B);
  T* kc = room.keys.data_ptr<T>();
  T* vc = room.values.data_ptr<T>();
  for (int64_t r = 0; r < B; ++r) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t at_head = (r * H + h) * hd;
      ops::detail::rotary_row(buf.q.data() + at_head, cos + r * hd, sin + r * hd, buf.q_rotated.data() + at_head, hd);
    }
    for (int64_t h = 0; h < Hk; ++h) {
      const int64_t at_pos = ((r * Hk + h) * cap + pos) * hd;
      ops::detail::rotary_row(buf.k.data() + (r * Hk + h) * hd, cos + r * hd, sin + r * hd, kc + at_pos, hd);
      std::memcpy(vc + at_pos, buf.v.data() + (r * Hk + h) * hd, hd * sizeof(T));
    }
  }
  ops::detail::DecodeAttentionArgs<T> att;
  att.q = buf.q_rotated.data();
  att.q_b = H * hd;
  att.q_h = hd;
  att.k = kc;
  att.v = vc;
  att.k_b = att.v_b = Hk * cap * hd;
  att.k_h = att.v_h = cap * hd;
  att.k_s = att.v_s = hd;
  if (mask.defined()) {
    att.mask = mask.data_ptr<T>();
    att.m_b = mask.stride(0);
    att.m_h = mask.stride(1);
    att.m_k = mask.stride(3);
  }
  att.out = buf.attn.data();
  att.o_b = H * hd;
  att.o_h = hd;
  att.B = B;
  att.H = H;
  att.Hk = Hk;
  att.K = pos + 1;
  att.D = hd;
  att.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  ops::detail::decode_attention_run(att);
  ops::decode_gemv(w.o, buf.attn.data(), B, buf.proj.data());
  add(xp, buf.proj.data(), op, B * D);

  // SwiGLU: down(silu(gate(n)) * up(n)), with at::silu itself (its exp is the vectorised one).
  ops::detail::rms_rows(op, b.mlp_norm->weight().data_ptr<T>(), buf.xn.data(), B, D, static_cast<float>(b.mlp_norm->eps));
  ops::decode_gemvs({into(w.gate, buf.gate.data()), into(w.up, buf.up.data())}, buf.xn.data(), B);
  at::Tensor g = at::from_blob(buf.gate.data(), {B * F}, x.options());
  at::silu_(g);
  for (int64_t i = 0; i < B * F; ++i) buf.up[i] = static_cast<T>(widen(buf.gate[i]) * widen(buf.up[i]));
  ops::decode_gemv(w.down, buf.up.data(), B, buf.proj.data());
  add(op, buf.proj.data(), op, B * D);
  return out;
}

}  // namespace

void set_fused_decoding_enabled(bool on) { fused_decoding.store(on); }
bool fused_decoding_enabled() { return fused_decoding.load(); }
int64_t fused_decoding_steps() { return steps.load(); }

std::optional<at::Tensor> decode_layer(const TransformerBlockImpl& b, const at::Tensor& x, const LayerArgs& args) {
  if (!shape_applies(b, x, args)) return std::nullopt;
  const at::ScalarType t = x.scalar_type();
  std::optional<Weights> w = weights_of(b, t);
  if (!w) return std::nullopt;
  const auto& a = *b.self_attn;
  const int64_t B = x.size(0), H = a.heads();
  KVCache::Room room = args.cache->room(args.layer_idx, 1, B, a.kv_heads(), a.head_dim(), x.options());
  if (!room.keys.defined()) return std::nullopt;
  const int64_t K = room.length + 1;
  at::Tensor mask = args.mask;  // additive, broadcast to [B, H, 1, K] as the attention reads it
  if (mask.defined()) {
    if (mask.dim() != 4 || mask.size(2) != 1 || mask.size(3) != K || (mask.size(0) != 1 && mask.size(0) != B) ||
        (mask.size(1) != 1 && mask.size(1) != H) || !mask.device().is_cpu())
      return std::nullopt;
    mask = mask.to(t).expand({B, H, 1, K});
  }
  at::Tensor y = t == at::kFloat ? step<float>(b, x, args, *w, room, mask) : step<at::BFloat16>(b, x, args, *w, room, mask);
  args.cache->commit(args.layer_idx, 1);
  steps.fetch_add(1, std::memory_order_relaxed);
  return y;
}

}  // namespace tessera::nn
