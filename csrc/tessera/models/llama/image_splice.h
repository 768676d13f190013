// Image features in a language model's prompt (LLaVA, BLIP-2): the prompt holds one image token per
// feature, and the LM's input embeddings get the features in their place, in order.
#pragma once
#include "tessera/models/llama/llama_model.h"

#include <functional>

namespace tessera::models {

/// `input_ids` [B, L] -> embeddings [B, L, D] whose image tokens (`image_token_id`, which may lie
/// outside the vocabulary) hold `features()` [images, tokens per image, D], called only when
/// `pixel_values` are given. A prompt whose image-token count differs from images x tokens is
/// refused, naming both.
at::Tensor splice_image_features(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, int64_t image_token_id,
                                 const at::Tensor& pixel_values, const std::function<at::Tensor()>& features);

}  // namespace tessera::models
