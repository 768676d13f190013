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
from .generation_output import generation_output
from .llama import (LlamaForCausalLM, _check, _prompt_length, drain, named_allocation, prompt_mask, repeat_rows,
                    run_generation)
from .loss_kwargs import over_items
from .outputs import make_output
from ..schema import flag


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
    input_embeddings, output_embeddings = "language_model.model.embed_tokens", "language_model.lm_head"
    accepts_loss_kwargs = True  # transformers' Trainer passes num_items_in_batch (models/loss_kwargs.py)
    loss_type = "ForConditionalGeneration"  # transformers' name: Trainer counts num_items_in_batch over the shifted labels
    _family, _cpp_class = _C.llava, "LlavaForConditionalGeneration"

    def transformers_difference(self) -> Optional[str]:
        kind = self.config.get("projector_type", "mlp2x_gelu")
        if kind != "mlp2x_gelu":
            return (f"projector_type {kind!r} is tessera's: transformers' LlavaForConditionalGeneration builds "
                    "LLaVA's two-layer MLP projector and would not load this one's weights")
        return None
    #: Read by nothing, as in transformers: LLaVA takes hidden states, never the pooled output.
    unused_parameters = (r"^vision_tower\.post_layernorm\.",)

    def forward(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False, num_items_in_batch=None):
        _check(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, labels=labels)
        self._sync_parameters()
        out = make_output(self._cpp.forward(input_ids, pixel_values, attention_mask, labels,
                                            flag(output_hidden_states, "output_hidden_states")))
        return over_items(out, num_items_in_batch)

    def reads_normed_features(self) -> bool:
        """Whether the projector reads the tower's post-normed features (BLIP-2's Q-Former does;
        LLaVA's projectors read a layer's raw output, so the tower's post_layernorm is unused)."""
        return bool(self._cpp.reads_normed_features())

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                 **kwargs) -> torch.Tensor:
        """The prompt followed by the new ids; the generation arguments of LlamaForCausalLM.generate."""
        _check(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        o, n, (streamer, flags) = LlamaForCausalLM._generation(self, kwargs, "generate", generator,
                                                               _prompt_length(input_ids, None, "generate"))
        attention_mask = prompt_mask(self, input_ids, attention_mask, o)
        with named_allocation("generate", input_ids.shape[0] * n, o, input_ids.shape[1]):
            input_ids, pixel_values, attention_mask = self._repeat(n, input_ids, pixel_values, attention_mask)
            self._sync_all()  # generation runs every submodule in C++, past the Python forwards
            out = run_generation(lambda: self._cpp.generate(input_ids, pixel_values, attention_mask, o, generator),
                                 lambda: self._cpp.stream(input_ids, pixel_values, attention_mask, o, generator),
                                 streamer, input_ids, o)
        return generation_output(out, o, flags)

    compute_transition_scores = LlamaForCausalLM.compute_transition_scores

    def _repeat(self, n: int, input_ids, pixel_values, attention_mask):
        """Each prompt n times (num_return_sequences), its images with it: a prompt holds
        image_seq_length image tokens per image."""
        if n == 1:
            return input_ids, pixel_values, attention_mask
        if pixel_values is not None:
            per_row = (input_ids == self.config["image_token_index"]).sum(1) // int(self.config["image_seq_length"])
            owner = torch.repeat_interleave(torch.arange(len(per_row), device=per_row.device), per_row)
            pixel_values = torch.cat([pixel_values[owner == r] for r in range(len(per_row)) for _ in range(n)])
        return repeat_rows(input_ids, n), pixel_values, repeat_rows(attention_mask, n)

    def stream(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None,
               attention_mask: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
               **kwargs):
        """Like generate, one step at a time: yields each step's new ids [B] as they are made."""
        _check(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        o, n, _ = LlamaForCausalLM._generation(self, kwargs, "stream", generator,
                                            _prompt_length(input_ids, None, "stream"))
        attention_mask = prompt_mask(self, input_ids, attention_mask, o)
        with named_allocation("stream", input_ids.shape[0] * n, o, input_ids.shape[1]):
            input_ids, pixel_values, attention_mask = self._repeat(n, input_ids, pixel_values, attention_mask)
            self._sync_all()
            yield from drain(self._cpp.stream(input_ids, pixel_values, attention_mask, o, generator))
