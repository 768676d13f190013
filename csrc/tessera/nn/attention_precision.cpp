#include "tessera/nn/attention_precision.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <ATen/cpu/Utils.h>

#include <atomic>
#include <string>

namespace tessera::nn {
namespace {
std::atomic<bool> attention_in_fp32{true};
thread_local bool forward_for_backward = false;

bool cpu_has(const char* feature) {
  const auto caps = at::cpu::get_cpu_capabilities();
  const auto it = caps.find(feature);
  return it != caps.end() && it->second.isBool() && it->second.toBool();
}

// The reduced-precision kernels are the slow ones on this CPU (read once: the CPU does not change).
bool slow_in(at::ScalarType t) {
  static const bool slow_bf16 = !cpu_has("amx_bf16");
  static const bool slow_fp16 = !cpu_has("amx_fp16") && !cpu_has("avx512_fp16");
  return t == at::kBFloat16 ? slow_bf16 : t == at::kHalf ? slow_fp16 : false;
}

bool backward_will_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (forward_for_backward) return true;
  return at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
}
}  // namespace

std::optional<at::ScalarType> sdpa_dtype(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const at::ScalarType t = q.scalar_type();
  if (at::autocast::is_autocast_enabled(at::kCPU)) {
    // SDPA is on autocast's lower-precision list: it casts every floating, non-double input.
    bool eligible = true;
    for (const at::Tensor* x : {&q, &k, &v})
      eligible = eligible && x->is_floating_point() && x->scalar_type() != at::kDouble;
    if (eligible) return at::autocast::get_autocast_dtype(at::kCPU);
  }
  if (k.scalar_type() != t || v.scalar_type() != t) return std::nullopt;
  return t;
}

std::optional<at::ScalarType> fp32_attention_rounds_to(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       double dropout_p) {
  if (!attention_in_fp32.load(std::memory_order_relaxed) || !q.device().is_cpu() || dropout_p > 0) return std::nullopt;
  const std::optional<at::ScalarType> t = sdpa_dtype(q, k, v);
  if (!t || !slow_in(*t)) return std::nullopt;
  if (*t == at::kHalf || (k.size(2) <= kShortKeys && backward_will_run(q, k, v))) return t;
  return std::nullopt;
}

void set_cpu_attention_in_fp32(bool on) { attention_in_fp32.store(on); }
bool cpu_attention_in_fp32() { return attention_in_fp32.load(); }

ForwardForBackward::ForwardForBackward() : previous_(forward_for_backward) { forward_for_backward = true; }
ForwardForBackward::~ForwardForBackward() { forward_for_backward = previous_; }

}  // namespace tessera::nn
