// Image features spliced into a prompt's embeddings (transformers' masked_scatter of LLaVA, BLIP-2).
#include "tessera/models/llama/image_splice.h"

#include <ATen/ATen.h>

namespace tessera::models {

at::Tensor splice_image_features(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, int64_t image_token_id,
                                 const at::Tensor& pixel_values, const std::function<at::Tensor()>& features) {
  TORCH_CHECK_VALUE(input_ids.defined() && input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong,
                    "input_ids must be int64 [B, L]");
  at::Tensor is_image = input_ids == image_token_id;
  const int64_t n_tokens = is_image.sum().item<int64_t>();
  // The image token may lie outside the vocabulary (LLaVA-1.5 uses 32000 of 32000): look up 0.
  at::Tensor embeds = lm.embed_tokens->forward(input_ids.masked_fill(is_image, 0));
  if (!pixel_values.defined()) {
    TORCH_CHECK_VALUE(n_tokens == 0, "input_ids hold ", n_tokens, " image tokens (id ", image_token_id,
                      ") but no pixel_values were given");
    return embeds;
  }
  at::Tensor feats = features();
  // masked_scatter takes elements in order from any source large enough: a projector of another
  // width was spliced in misaligned, without a word.
  const int64_t hidden = embeds.size(-1);
  TORCH_CHECK_VALUE(feats.dim() == 3 && feats.size(2) == hidden, "image features must be [images, tokens, ", hidden,
                    "] (the language model's hidden_size), got ", feats.sizes(), ": does the projector end at the ",
                    "language model's width?");
  TORCH_CHECK_VALUE(n_tokens == feats.size(0) * feats.size(1), "image features and image tokens do not match: ",
                    feats.size(0), " image(s) of ", feats.size(1), " tokens need ", feats.size(0) * feats.size(1),
                    " image tokens (id ", image_token_id, ") in input_ids, found ", n_tokens);
  return embeds.masked_scatter(is_image.unsqueeze(-1), feats.to(embeds.scalar_type()));
}

}  // namespace tessera::models
