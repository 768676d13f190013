// Pooling of an image tower's token features [B, prefix + patches, D] into one vector per image:
// what timm's forward_head does before its head (`global_pool` 'token' or 'avg').
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace tessera::nn {

/// `features` checked as [B, T >= min_tokens, width] tokens of `what`; a ValueError names the shape.
void check_token_features(const at::Tensor& features, int64_t width, int64_t min_tokens, const char* what);

/// The class token [B, D] (timm's global_pool='token').
at::Tensor class_token(const at::Tensor& features, int64_t width, const char* what);

/// The mean over the tokens after the `prefix` tokens [B, D] (timm's global_pool='avg').
at::Tensor patch_mean(const at::Tensor& features, int64_t width, int64_t prefix, const char* what);

}  // namespace tessera::nn
