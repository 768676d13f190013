// Mask construction shared by every family (CLIP text causal+padding, BLIP-2 multimodal masks).
#include "tessera/nn/attention_mask.h"

#include <ATen/ATen.h>

#include <limits>

namespace tessera::nn {
namespace {
at::Scalar lowest_value(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return std::numeric_limits<double>::lowest();
    case at::kHalf: return static_cast<float>(std::numeric_limits<c10::Half>::lowest());
    case at::kBFloat16: return static_cast<float>(std::numeric_limits<c10::BFloat16>::lowest());
    default: return std::numeric_limits<float>::lowest();
  }
}
}  // namespace

at::Tensor additive_mask(const at::Tensor& keep, at::ScalarType dtype) {
  at::Tensor allowed = keep.scalar_type() == at::kBool ? keep : keep.ne(0);
  auto opts = at::TensorOptions().dtype(dtype).device(keep.device());
  at::Tensor zero = at::zeros({}, opts);
  at::Tensor lowest = at::full({}, lowest_value(dtype), opts);
  return at::where(allowed, zero, lowest);
}

void check_padding_mask(const at::Tensor& attention_mask) {
  TORCH_CHECK_VALUE(attention_mask.dim() == 2, "attention_mask must be [batch, seq_len], got shape ",
                    attention_mask.sizes());
  if (attention_mask.numel() == 0) return;
  at::Tensor keep = attention_mask.scalar_type() == at::kBool ? attention_mask : attention_mask.ne(0);
  TORCH_CHECK_VALUE(attention_mask.scalar_type() == at::kBool || attention_mask.eq(0).logical_or(attention_mask.eq(1)).all().item<bool>(),
                    "attention_mask must hold only 0 and 1 (1: a real token), got values from ",
                    attention_mask.min().item<double>(), " to ", attention_mask.max().item<double>());
  // A row with no real token has nothing to attend to: its output would be an average of padding.
  at::Tensor empty = keep.any(1).logical_not().nonzero();
  TORCH_CHECK_VALUE(empty.numel() == 0, "attention_mask row ", empty.numel() ? empty[0].item<int64_t>() : -1,
                    " has no real token (all zeros): every sequence needs at least one token marked 1");
}

at::Tensor padding_mask(const at::Tensor& attention_mask, at::ScalarType dtype) {
  check_padding_mask(attention_mask);
  return additive_mask(attention_mask.unsqueeze(1).unsqueeze(2), dtype);
}

at::Tensor causal_mask(int64_t q_len, int64_t k_len, at::ScalarType dtype, const at::Device& device) {
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor q_pos = at::arange(k_len - q_len, k_len, opts).unsqueeze(1);
  at::Tensor k_pos = at::arange(k_len, opts).unsqueeze(0);
  return additive_mask(k_pos.le(q_pos), dtype).unsqueeze(0).unsqueeze(0);
}

}  // namespace tessera::nn
