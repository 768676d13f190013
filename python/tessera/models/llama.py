"""LLaMA (Touvron et al. 2023) over the C++ modules in csrc/tessera/models/llama, with the
interface of transformers' LlamaForCausalLM.

    lm = tessera.from_pretrained("path/to/llama")            # config.json + model.safetensors
    out = lm(input_ids, labels=input_ids)                     # out.loss, out.logits
    out.loss_sum, out.num_tokens                              # the same loss as (sum, count)
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _C
from ..cpp_module import node_class
from ..registry import register_model
from .family import FamilyModel
from .outputs import ModelOutput, make_output

#: Python classes of the mirrored C++ nodes (wrap policies: FSDP2, activation checkpointing).
LlamaDecoderLayer = node_class("LlamaDecoderLayer", layer=True)
LlamaAttention = node_class("LlamaAttention")


class CausalLMOutputWithPast(ModelOutput):
    """loss, logits, hidden_states, loss_sum, num_tokens."""


def _check(**tensors) -> None:
    for name, value in tensors.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(value).__name__}")


@register_model
class LlamaForCausalLM(FamilyModel):
    """A LLaMA language model. `labels` (usually the input ids, -100 where nothing is to be
    learned) give the next-token loss: `loss` (mean), and `loss_sum` / `num_tokens` for
    token-weighted accumulation. With `tie_word_embeddings` the head reads the embedding matrix
    and checkpoints hold it once."""

    model_type = "llama"
    architecture = "LlamaForCausalLM"
    _family, _cpp_class = _C.llama, "LlamaForCausalLM"

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if self.config.get("tie_word_embeddings") and "lm_head.weight" in state_dict:
            state_dict = dict(state_dict)
            head, emb = state_dict.pop("lm_head.weight"), state_dict.get("model.embed_tokens.weight")
            if emb is not None and not torch.equal(head, emb):
                raise ValueError("tie_word_embeddings is true but the checkpoint's lm_head.weight differs from "
                                 "model.embed_tokens.weight; set tie_word_embeddings to false to load both")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, inputs_embeds: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, output_hidden_states: bool = False,
                logits_to_keep: int = 0) -> CausalLMOutputWithPast:
        _check(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
               inputs_embeds=inputs_embeds, labels=labels)
        self._sync_parameters()
        return make_output(self._cpp.forward(input_ids, attention_mask, position_ids, inputs_embeds, labels,
                                             bool(output_hidden_states), int(logits_to_keep)))

    # ---- generation -----------------------------------------------------------------------------
    def _generation(self, max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty, eos_token_id,
                    pad_token_id, use_cache):
        o = _C.llama.GenerationOptions()
        o.max_new_tokens, o.do_sample, o.use_cache = int(max_new_tokens), bool(do_sample), bool(use_cache)
        o.temperature, o.top_k, o.top_p = float(temperature), int(top_k or 0), float(top_p)
        o.repetition_penalty = float(repetition_penalty)
        if eos_token_id is not None:
            o.eos_token_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if pad_token_id is not None:
            o.pad_token_id = int(pad_token_id)
        # Layers run straight from C++ unless Python must see them (hooks, wrappers such as FSDP).
        layers = [m for m in self.modules() if type(m).__name__ == "LlamaDecoderLayer"]
        o.direct_layer_calls = all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in layers)
        self._sync_all()
        return o

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 max_new_tokens: int = 20, do_sample: bool = False, temperature: float = 1.0, top_k: int = 50,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, eos_token_id=None, pad_token_id=None,
                 generator: Optional[torch.Generator] = None, use_cache: bool = True,
                 inputs_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """transformers' generate for decoder-only models: the prompt followed by the new ids
        [B, P + n]. Prompts of different lengths are left-padded with `attention_mask` marking
        the real tokens; sampling draws from `generator` (reproducible with a seeded one); rows
        that produced a stop id are filled with the pad id until every row has stopped."""
        _check(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        o = self._generation(max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty, eos_token_id,
                             pad_token_id, use_cache)
        self._sync_all()  # generation runs every submodule in C++, past the Python forwards
        return self._cpp.generate(input_ids, attention_mask, o, generator, inputs_embeds)

    def stream(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **kwargs):
        """Like generate, one step at a time: yields each step's new ids [B] as they are made."""
        _check(input_ids=input_ids, attention_mask=attention_mask)
        generator, embeds = kwargs.pop("generator", None), kwargs.pop("inputs_embeds", None)
        o = self._generation(**generation_arguments(kwargs, "stream"))
        self._sync_all()
        yield from drain(self._cpp.stream(input_ids, attention_mask, o, generator, embeds))


GENERATION_DEFAULTS = dict(max_new_tokens=20, do_sample=False, temperature=1.0, top_k=50, top_p=1.0,
                           repetition_penalty=1.0, eos_token_id=None, pad_token_id=None, use_cache=True)


def generation_arguments(kwargs, caller: str):
    """transformers' generation keywords with their defaults; an unknown one is a TypeError."""
    unknown = set(kwargs) - set(GENERATION_DEFAULTS)
    if unknown:
        raise TypeError(f"{caller}() got unexpected arguments {sorted(unknown)}")
    return {**GENERATION_DEFAULTS, **kwargs}


def drain(run):
    """Yields each step's new ids [B] of a C++ TextGeneration until every row has stopped."""
    with torch.no_grad():
        while not run.done():
            yield run.next()
