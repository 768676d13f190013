"""BLIP-2 (Li et al. 2023) over the C++ modules in csrc/tessera/models/blip2, with the interface of
transformers' Blip2VisionModel, Blip2QFormerModel, Blip2ForConditionalGeneration and
Blip2ForImageTextRetrieval.

    blip2 = tessera.from_pretrained("path/to/blip2")            # image tokens first in the prompt
    ids = blip2.generate(images, input_ids, max_new_tokens=20)   # transformers' order: pixels first
    itr = tessera.from_pretrained("path/to/blip2-itm")
    scores = itr(images, input_ids, attention_mask).logits_per_image       # ITC, [images, texts]
    match = itr(images, input_ids, attention_mask, use_image_text_matching_head=True).logits_per_image
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import torch

from .. import _C
from ..config_json import config_json
from ..cpp_module import node_class, node_methods
from ..opaque_to_compile import opaque_to_compile
from ..registry import register_model
from .family import FamilyModel
from .features import VisionFeatures
from .generation_output import generation_output
from .llama import (LlamaForCausalLM, _check, _prompt_length, drain, named_allocation, repeat_rows,
                    run_generation)
from .outputs import ModelOutput, make_output
from .timm_compat import BLIP2_DATA, CLIP_NO_DECAY
from ..schema import flag

#: Python classes of the mirrored C++ nodes (wrap policies: FSDP2, activation checkpointing).
Blip2EncoderLayer = node_class("Blip2EncoderLayer", layer=True)
Blip2QFormerLayer = node_class("Blip2QFormerLayer", layer=True)


# transformers' output classes of the family (ModelOutput registers each by name for make_output).
class Blip2ImageTextMatchingModelOutput(ModelOutput):
    """logits_per_image, logits_per_text, text_embeds, image_embeds (ITC; ITM logits when asked).
    transformers' text_model_output and vision_model_output are not computed, so not declared:
    they read as an AttributeError, not as None."""
    fields = ("itm_score", "logits_per_image", "logits_per_text", "text_embeds", "image_embeds")


class Blip2ForConditionalGenerationModelOutput(ModelOutput):
    """loss, logits (the last T positions for labels [B, T]), vision_outputs, qformer_outputs,
    language_model_outputs, as transformers returns them; then tessera's loss_sum and num_tokens
    (summed token loss and its count, which the trainer reduces exactly across batches)."""
    fields = ("loss", "logits", "vision_outputs", "qformer_outputs", "language_model_outputs", "loss_sum",
              "num_tokens")


def _require_pixels(pixel_values, call: str, input_ids=None) -> None:
    if pixel_values is None:  # the prompt is the image's query tokens; the binding said "incompatible arguments"
        raise ValueError(f"Blip2ForConditionalGeneration.{call}: pixel_values are required (BLIP-2 answers about an "
                         f"image)")
    if isinstance(pixel_values, torch.Tensor) and not pixel_values.is_floating_point() and (
            input_ids is None or input_ids.is_floating_point()):
        raise TypeError(f"Blip2ForConditionalGeneration.{call} takes (pixel_values, input_ids), transformers' order; "
                        f"its first argument is {pixel_values.dtype} ids")


class _Blip2Part(FamilyModel):
    _family = _C.blip2
    _resolve = "resolve_config"

    @classmethod
    def resolve_config(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        return json.loads(getattr(cls._family, cls._resolve)(config_json(config)))


@node_methods("Blip2VisionModel")
class Blip2VisionFeatures(VisionFeatures):
    """The forward and timm's feature API of BLIP-2's image tower: Blip2VisionModel and the `vision_model` of
    Blip2ForConditionalGeneration and Blip2ForImageTextRetrieval. The final norm is
    post_layernorm, over every token: forward_features equals transformers' last_hidden_state
    (what the Q-Former reads)."""

    _forward_intermediates = staticmethod(_C.blip2.vision_forward_intermediates)
    _forward_head = staticmethod(_C.blip2.vision_forward_head)
    _no_decay, _data_config = CLIP_NO_DECAY, BLIP2_DATA  # EVA-CLIP's names and stats; resized to the square

    @opaque_to_compile
    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False,
                interpolate_pos_encoding: bool = False):
        """transformers' Blip2VisionModel forward (and a parent's `vision_model`'s)."""
        _check(pixel_values=pixel_values)
        self._sync_parameters()
        return make_output(self._cpp.forward(pixel_values, flag(output_hidden_states, "output_hidden_states"),
                                             flag(interpolate_pos_encoding, "interpolate_pos_encoding")))


@register_model
class Blip2VisionModel(Blip2VisionFeatures, _Blip2Part):
    """The image tower: `embeddings`, `encoder.layers.N` (fused `qkv`), `post_layernorm` on every
    token. last_hidden_state is what the Q-Former reads; pooler_output the class token normed again."""

    model_type = "blip_2_vision_model"
    architecture = "Blip2VisionModel"
    main_input_name = "pixel_values"  # transformers'
    input_embeddings = "embeddings"  # transformers answers the whole embedding module
    _cpp_class = "Blip2VisionModel"
    _resolve = "resolve_vision_config"



@node_methods("Blip2QFormerModel")
class Blip2QFormerCall:
    """The Q-Former's forward: Blip2QFormerModel's, and a parent's `qformer`'s."""

    @opaque_to_compile
    def forward(self, query_embeds: torch.Tensor, query_length: Optional[int] = None,
                attention_mask: Optional[torch.Tensor] = None, encoder_hidden_states: Optional[torch.Tensor] = None,
                encoder_attention_mask: Optional[torch.Tensor] = None, output_hidden_states: bool = False):
        _check(query_embeds=query_embeds, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states,
               encoder_attention_mask=encoder_attention_mask)
        self._sync_parameters()
        n = -1 if query_length is None else int(query_length)
        return make_output(self._cpp.forward(query_embeds, n, attention_mask, encoder_hidden_states,
                                             encoder_attention_mask, flag(output_hidden_states, "output_hidden_states")))


@register_model
class Blip2QFormerModel(Blip2QFormerCall, _Blip2Part):
    """The Querying Transformer. `query_embeds` [B, L, H] are `query_length` learned queries (all
    L by default) followed by text embeddings (use_qformer_text_input); the queries cross-attend to
    `encoder_hidden_states` every `cross_attention_frequency` layers. `attention_mask` is [B, L]
    padding or [B, L, L] (row i: the tokens token i may see: BLIP-2's ITM and ITG masks)."""

    model_type = "blip_2_qformer"
    architecture = "Blip2QFormerModel"
    input_embeddings = None  # queries come in as embeddings
    _cpp_class = "Blip2QFormerModel"
    _resolve = "resolve_qformer_config"



@register_model
class Blip2ForConditionalGeneration(_Blip2Part):
    """Tower -> queries -> Q-Former -> `language_projection` -> a LLaMA whose prompt holds
    `num_query_tokens` image tokens (`image_token_index`) per image, replaced in order by the
    projected queries; a prompt whose image tokens do not match is refused. forward returns
    transformers' Blip2ForConditionalGenerationModelOutput: loss and logits, then
    `vision_outputs`, `qformer_outputs` and `language_model_outputs`; labels may cover only the
    prompt's last T positions, as in transformers."""

    model_type = "blip-2"
    architecture = "Blip2ForConditionalGeneration"
    main_input_name = "pixel_values"  # transformers'
    input_embeddings, output_embeddings = "language_model.model.embed_tokens", "language_model.lm_head"
    default_for_model_type = True
    _cpp_class = "Blip2ForConditionalGeneration"
    _keep_in_fp32_modules = ("query_tokens", "qformer")  # loaded in fp16, as transformers keeps them
    # transformers' generate runs its language model's, whose defaults come from text_config: the
    # folder's generation_config.json is not read (a stop id there differing from text_config's
    # ended captions where transformers ran on).
    reads_generation_file = False

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False, interpolate_pos_encoding: bool = False):
        _check(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, labels=labels)
        _require_pixels(pixel_values, "forward", input_ids)
        if input_ids is None:  # the binding would print its signature
            raise ValueError("Blip2ForConditionalGeneration.forward: input_ids are required (the prompt with its "
                             "image tokens); generate() without them writes a caption")
        self._sync_parameters()
        return make_output(self._cpp.forward(input_ids, pixel_values, attention_mask, labels,
                                             flag(output_hidden_states, "output_hidden_states"), flag(interpolate_pos_encoding, "interpolate_pos_encoding")))

    def get_image_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """The projected queries [B, num_query_tokens, text hidden] that replace the image tokens."""
        _check(pixel_values=pixel_values)
        self._sync_parameters()
        return self._cpp.image_features(pixel_values, flag(interpolate_pos_encoding, "interpolate_pos_encoding"))

    def _prompt(self, pixel_values, input_ids, attention_mask, call: str):
        """Checked arguments; without input_ids, transformers' captioning prompt: the image tokens,
        then the text model's bos, for every image."""
        _check(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        _require_pixels(pixel_values, call, input_ids)
        if input_ids is None:
            image, bos = self.config.get("image_token_index"), self.config["text_config"].get("bos_token_id")
            if image is None or bos is None:
                raise ValueError(f"Blip2ForConditionalGeneration.{call} without input_ids needs the config's "
                                 f"image_token_index and text_config.bos_token_id (got {image}, {bos})")
            row = [image] * self.config["num_query_tokens"] + [bos]
            input_ids = torch.tensor(row, device=pixel_values.device).repeat(pixel_values.shape[0], 1)
        return input_ids

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, input_ids: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                 interpolate_pos_encoding: bool = False, **kwargs) -> torch.Tensor:
        """The prompt followed by the new ids; the generation arguments of LlamaForCausalLM.generate.
        Without input_ids, a caption: the image tokens and bos, as transformers prompts."""
        input_ids = self._prompt(pixel_values, input_ids, attention_mask, "generate")
        o, n, (streamer, flags) = LlamaForCausalLM._generation(self, kwargs, "generate", generator,
                                                               _prompt_length(input_ids, None, "generate"))
        with named_allocation("generate", input_ids.shape[0] * n, o, input_ids.shape[1]):
            input_ids, pixel_values, attention_mask = (repeat_rows(t, n) for t in (input_ids, pixel_values,
                                                                                    attention_mask))
            position = flag(interpolate_pos_encoding, "interpolate_pos_encoding")
            out = run_generation(
                lambda: self._cpp.generate(input_ids, pixel_values, attention_mask, o, generator, position),
                lambda: self._cpp.stream(input_ids, pixel_values, attention_mask, o, generator, position),
                streamer, input_ids, o)
        return generation_output(out, o, flags)

    compute_transition_scores = LlamaForCausalLM.compute_transition_scores

    def stream(self, pixel_values: torch.Tensor, input_ids: Optional[torch.Tensor] = None,
               attention_mask: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
               interpolate_pos_encoding: bool = False, **kwargs):
        """Like generate, one step at a time: yields each step's new ids [B]."""
        input_ids = self._prompt(pixel_values, input_ids, attention_mask, "stream")
        o, n, _ = LlamaForCausalLM._generation(self, kwargs, "stream", generator,
                                            _prompt_length(input_ids, None, "stream"))
        with named_allocation("stream", input_ids.shape[0] * n, o, input_ids.shape[1]):
            input_ids, pixel_values, attention_mask = (repeat_rows(t, n) for t in (input_ids, pixel_values,
                                                                                    attention_mask))
            yield from drain(self._cpp.stream(input_ids, pixel_values, attention_mask, o, generator,
                                              flag(interpolate_pos_encoding, "interpolate_pos_encoding")))


@register_model
class Blip2ForImageTextRetrieval(_Blip2Part):
    """Image-text retrieval with the Q-Former's text input: ITC (default) scores every image
    against every text by the best of its queries' similarities to the text's first token;
    `use_image_text_matching_head` scores image i against text i with `itm_head` ([B, 2]:
    no match, match)."""

    model_type = "blip-2"
    architecture = "Blip2ForImageTextRetrieval"
    main_input_name = "pixel_values"  # transformers'
    input_embeddings = "embeddings.word_embeddings"
    _cpp_class = "Blip2ForImageTextRetrieval"
    _keep_in_fp32_modules = ("query_tokens", "qformer")  # loaded in fp16, as transformers keeps them

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None, use_image_text_matching_head: bool = False):
        _check(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
        self._sync_parameters()
        return make_output(self._cpp.forward(pixel_values, input_ids, attention_mask,
                                             flag(use_image_text_matching_head, "use_image_text_matching_head")))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ITC image embeddings: normalised, one per query [B, Q, image_text_hidden_size]."""
        _check(pixel_values=pixel_values)
        self._sync_parameters()
        return self._cpp.image_embeds_for_itc(pixel_values)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ITC text embeddings: normalised [B, image_text_hidden_size]."""
        _check(input_ids=input_ids, attention_mask=attention_mask)
        self._sync_parameters()
        return self._cpp.text_embeds_for_itc(input_ids, attention_mask)
