"""LLaVA (Liu et al. 2023) over the C++ modules in csrc/tessera/models/llava, with the interface
of transformers' LlavaForConditionalGeneration.

    llava = tessera.from_pretrained("path/to/llava")
    out = llava(input_ids, pixel_values=images, labels=labels)      # image tokens in input_ids
    ids = llava.generate(input_ids, pixel_values=images, max_new_tokens=32)
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _C
from ..registry import register_model
from .family import FamilyModel
from .llama import LlamaForCausalLM, _check, drain
from .outputs import make_output


def list_projectors():
    """The registered projector names (`projector_type` in the config)."""
    return list(_C.llava.list_projectors())


@register_model
class LlavaForConditionalGeneration(FamilyModel):
    """A CLIP vision tower (run up to `vision_feature_layer`), a projector and a LLaMA. Each image
    becomes `image_seq_length` embeddings that replace the image tokens (`image_token_index`) of
    the prompt, in order; a prompt whose image tokens do not match the images is refused.
    Checkpoints: transformers' files (`language_model.model.*`, `vision_tower.*`,
    `multi_modal_projector.*`) and its in-memory layout (`model.language_model.*`, ...)."""

    model_type = "llava"
    architecture = "LlavaForConditionalGeneration"
    _family, _cpp_class = _C.llava, "LlavaForConditionalGeneration"
    #: Read by nothing, as in transformers: LLaVA takes hidden states, never the pooled output.
    unused_parameters = (r"^vision_tower\.post_layernorm\.",)
    key_aliases = [(r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head."),
                   (r"^model\.vision_tower\.", "vision_tower."),
                   (r"^model\.multi_modal_projector\.", "multi_modal_projector.")]

    def forward(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False):
        _check(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, labels=labels)
        self._sync_parameters()
        return make_output(self._cpp.forward(input_ids, pixel_values, attention_mask, labels,
                                             bool(output_hidden_states)))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                 **kwargs) -> torch.Tensor:
        """The prompt followed by the new ids; the generation arguments of LlamaForCausalLM.generate."""
        _check(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        o = LlamaForCausalLM._generation(self, kwargs, "generate", generator)
        self._sync_all()  # generation runs every submodule in C++, past the Python forwards
        return self._cpp.generate(input_ids, pixel_values, attention_mask, o, generator)

    def stream(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None,
               attention_mask: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
               **kwargs):
        """Like generate, one step at a time: yields each step's new ids [B] as they are made."""
        _check(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        o = LlamaForCausalLM._generation(self, kwargs, "stream", generator)
        self._sync_all()
        yield from drain(self._cpp.stream(input_ids, pixel_values, attention_mask, o, generator))
