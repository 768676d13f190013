// Reduced-precision attention on a CPU, when it is cheaper in fp32. ATen's CPU flash attention is
// slower in bf16 than in fp32 for its backward over short key sequences, and slower in fp16 in
// both directions on CPUs without native fp16 arithmetic (benchmarks/attention_precision_cpu.py,
// 2 cores, AVX-512 + avx512_bf16, no AMX; bf16 time / fp32 time, forward+backward: 1.4-2.0 at
// 32-128 keys, 1.0-1.4 at 197-320, 1.0 at 384, 0.85-0.91 at 512; fp16 3.5-7 backward, 1.3-1.9
// forward).
// Such a call runs SDPA on fp32 copies of q, k, v (and a float mask) and rounds the output back to
// the inputs' dtype; the gradients flow back in that dtype. The values are SDPA's in fp32, rounded
// once: more exact than the reduced-precision kernel, not bit-equal to it.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace tessera::nn {

/// The dtype attention(q, k, v) rounds its fp32 result to, when it computes in fp32; none when it
/// runs in its own dtype. fp32 for a CPU call in bf16 whose backward will run (autograd records it,
/// or a checkpoint's first pass) with at most kShortKeys keys, or in fp16 at any length; no
/// dropout; and a CPU with no matrix unit for that dtype (AMX-BF16 / AMX-FP16 or AVX512-FP16,
/// where the reduced kernels are the fast ones; not measured here, so left alone). Ask before
/// excluding autocast's dispatch keys: the dtype is autocast's where it is on (see sdpa_dtype).
std::optional<at::ScalarType> fp32_attention_rounds_to(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       double dropout_p);

/// The dtype SDPA computes q, k, v in: CPU autocast's where it is on (SDPA is on its
/// lower-precision list; a LLaMA layer's q and k leave the fp32 rotary tables in fp32 while v is
/// bf16), else their own; none if they differ (SDPA refuses that).
std::optional<at::ScalarType> sdpa_dtype(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

/// The bf16 key count up to which the rule takes fp32: bf16 time / fp32 time is 1.0-1.4 up to
/// here (Q-Former's 257 keys 1.1-1.4), even at 384 and below 1 from 512.
constexpr int64_t kShortKeys = 320;

/// On by default; off keeps every call in its own dtype (to measure the difference).
void set_cpu_attention_in_fp32(bool on);
bool cpu_attention_in_fp32();

/// While alive on this thread, a forward counts as recorded for backward even with grad mode off:
/// the reentrant checkpoint's first pass runs without grad, and its recomputation with it, and both
/// must take the same path to give the same values.
class ForwardForBackward {
 public:
  ForwardForBackward();
  ~ForwardForBackward();
  ForwardForBackward(const ForwardForBackward&) = delete;
  ForwardForBackward& operator=(const ForwardForBackward&) = delete;

 private:
  bool previous_;
};

}  // namespace tessera::nn
