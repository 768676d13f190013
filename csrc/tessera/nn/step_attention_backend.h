// Which of SDPA's CUDA backends a decoding step may use. cuDNN's attention builds an execution plan
// for every new query/key shape and caches it; a decoding step's key length is new at every step,
// so each step paid a plan build: on an H200 (2026-12-04, ~1.1B LLaMA, bf16, batch 1) generation
// ran at 48 ms/token where the same steps, their plans cached, took 13 ms of host time and 1.8 ms
// of device time. FlashAttention, the memory-efficient kernel and the math path have no per-shape
// plan, so a step leaves cuDNN out and SDPA's own selection picks among those (its checks decide;
// cuDNN's prefill, training and fixed-shape cross-attention are untouched).
#pragma once
#include <ATen/core/Tensor.h>

namespace tessera::nn {

/// A decoding step: a few new queries (at most 8 per sequence) after cached keys, on a CUDA device,
/// outside autograd, while the rule is on and the user has cuDNN's attention enabled.
bool step_avoids_cudnn_attention(const at::Tensor& q, const at::Tensor& k);

/// While alive, SDPA's cuDNN backend is off for the whole process (ATen's switch is global, as
/// torch.nn.attention.sdpa_kernel's is); counted, so overlapping steps on several threads restore
/// the user's setting once, when the last one ends. Another thread's SDPA call in that window may
/// pick a different backend (the same result within its tolerance), never a wrong one.
class NoCudnnAttention {
 public:
  NoCudnnAttention();
  ~NoCudnnAttention();
  NoCudnnAttention(const NoCudnnAttention&) = delete;
  NoCudnnAttention& operator=(const NoCudnnAttention&) = delete;
};

/// On by default; off lets decoding steps use cuDNN's attention (to measure the difference).
void set_step_attention_avoids_cudnn(bool on);
bool step_attention_avoids_cudnn();

}  // namespace tessera::nn
