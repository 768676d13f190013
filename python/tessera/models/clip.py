"""CLIP (Radford et al. 2021) over the C++ modules in csrc/tessera/models/clip, with the
interface of transformers' CLIPModel, CLIPVisionModel and CLIPTextModel."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import torch
from torch import nn

from .. import _C
from ..config_json import config_json
from ..cpp_build import build_cpp
from ..cpp_module import CppModule, node_class, node_methods
from ..opaque_to_compile import opaque_to_compile
from .features import FeatureResult, VisionFeatures, indices_arg, intermediates_result
from .outputs import BaseModelOutputWithPooling, CLIPOutput, make_output
from ..registry import register_model
from .pretrained import PreTrainedModel, merge_config
from .open_clip_compat import OpenClipInterface, open_clip_arguments
from .timm_compat import CLIP_DATA, CLIP_NO_DECAY, ClipTimmInterface
from .._warn import warn
from ..schema import flag

#: Python classes of the mirrored C++ nodes, for wrap policies (FSDP2, activation checkpointing).
CLIPEncoderLayer = node_class("CLIPEncoderLayer", layer=True)
CLIPAttention = node_class("CLIPAttention")
CLIPMLP = node_class("CLIPMLP")


def _check_tensor(name: str, value, ndim: int) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")


@node_methods("CLIPVisionTransformer")
class CLIPVisionFeatures(VisionFeatures):
    """The forward and timm's feature API of CLIP's image tower: CLIPVisionModel, and the tower
    inside a parent (`CLIPModel.vision_model`, `LlavaForConditionalGeneration.vision_tower`). The
    final norm is post_layernorm, over every token: timm's CLIP ViTs load it as `norm`, so forward_features is
    post_layernorm(tokens), where transformers' last_hidden_state is the tokens before it."""

    _forward_intermediates = staticmethod(_C.clip.vision_forward_intermediates)
    _forward_head = staticmethod(_C.clip.vision_forward_head)
    _no_decay, _data_config = CLIP_NO_DECAY, CLIP_DATA

    @opaque_to_compile
    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False,
                interpolate_pos_encoding: bool = False) -> BaseModelOutputWithPooling:
        """transformers' CLIPVisionModel forward (and its vision_model's, inside a parent)."""
        _check_tensor("pixel_values", pixel_values, 4)
        self._sync_parameters()
        return make_output(self._cpp.forward(pixel_values, flag(output_hidden_states, "output_hidden_states"),
                                             flag(interpolate_pos_encoding, "interpolate_pos_encoding")))


@node_methods("CLIPTextTransformer")
class CLIPTextFeatures:
    """The forward and timm's feature API of CLIP's text tower: CLIPTextModel and
    `CLIPModel.text_model`. The final norm is final_layer_norm: forward_features equals
    transformers' last_hidden_state."""

    @opaque_to_compile
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        """transformers' CLIPTextModel forward (and its text_model's, inside a parent)."""
        _check_tensor("input_ids", input_ids, 2)
        self._sync_parameters()
        return make_output(self._cpp.forward(input_ids, attention_mask, flag(output_hidden_states, "output_hidden_states")))

    def forward_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Every token after the last layer and final_layer_norm [B, L, D]."""
        return self.forward_intermediates(input_ids, attention_mask, indices=[])[0]

    def forward_intermediates(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                              indices=None, norm: bool = False, stop_early: bool = False,
                              intermediates_only: bool = False) -> FeatureResult:
        """timm's forward_intermediates over the text layers (see tessera.models.features)."""
        _check_tensor("input_ids", input_ids, 2)
        out = _C.clip.text_forward_intermediates(self._cpp_address(), input_ids, attention_mask, indices_arg(indices),
                                                 flag(norm, "norm"), flag(stop_early, "stop_early"))
        return intermediates_result(out, intermediates_only)


@register_model
class CLIPModel(ClipTimmInterface, OpenClipInterface, CppModule, PreTrainedModel):
    """CLIP two-tower model; parameter names equal transformers' CLIPModel. With
    `logit_bias_init_value` in the config it has SigLIP's learned `logit_bias` (open_clip's
    `init_logit_bias`): the logits gain it and `return_loss` is SiglipModel's sigmoid loss.

    Example::

        model = tessera.from_pretrained("openai-clip-dir")
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
        out.logits_per_image, out.loss
    """

    model_type = "clip"
    architecture = "CLIPModel"
    _family = _C.clip  # its named variants (ViT-B-32, ...) and add_model_config's strict check

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        config = dict(config or {})
        cpp = build_cpp(_C.clip.ClipModel, config_json(config))
        super().__init__(cpp)
        self.config = merge_config(config, json.loads(cpp.config_json()))  # C++'s values, HF's extra keys

    @classmethod
    def resolve_config(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        """The full config (C++ fills in the defaults and checks it) without building the model."""
        return json.loads(_C.clip.resolve_config(config_json(config)))

    def probe_features(self):
        """`tessera eval --probe`'s feature function: the image embedding."""
        return self.get_image_features

    def transformers_difference(self) -> Optional[str]:
        if getattr(self, "logit_bias", None) is not None:
            return ("transformers' CLIPModel has no logit_bias (SigLIP's loss, logit_bias_init_value): it would "
                    "drop it and give softmax logits and loss")
        return None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """A CLIP checkpoint loaded into a model with SigLIP's bias (training SigLIP from CLIP, as
        `logit_bias_init_value` in `config_overrides` or a recipe does) has no `logit_bias`: it
        starts at logit_bias_init_value, said in a warning, as transformers starts a new head."""
        bias = self.config.get("logit_bias_init_value")
        if bias is not None and "logit_bias" not in state_dict:
            warn(f"the weights hold no logit_bias: it starts at logit_bias_init_value {bias}")
            state_dict = {**state_dict, "logit_bias": torch.full((), float(bias), dtype=self.logit_scale.dtype)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @classmethod
    def _cpp_type(cls) -> Any:
        return _C.clip.ClipModel

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        return_loss: bool = False,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
        *,
        image: Optional[torch.Tensor] = None,
        text: Optional[torch.Tensor] = None,
    ) -> CLIPOutput:
        """transformers' CLIPModel forward; called as open_clip calls its model (`image=`, `text=`,
        or an image batch first: model(image, text)), open_clip's output (open_clip_forward)."""
        open_clip = open_clip_arguments(input_ids, pixel_values, image, text, dict(
            attention_mask=attention_mask, return_loss=return_loss, output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding))
        if open_clip is not None:
            return self.open_clip_forward(*open_clip)
        if input_ids is None or pixel_values is None:
            raise ValueError("CLIPModel.forward needs both input_ids and pixel_values")
        _check_tensor("input_ids", input_ids, 2)
        _check_tensor("pixel_values", pixel_values, 4)
        self._sync_parameters()
        return make_output(self._cpp.forward(
            pixel_values, input_ids, attention_mask, flag(return_loss, "return_loss"), flag(output_hidden_states, "output_hidden_states"),
            flag(interpolate_pos_encoding, "interpolate_pos_encoding"),
        ))

    def get_image_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Projected (not normalised) image features [B, projection_dim]."""
        _check_tensor("pixel_values", pixel_values, 4)
        self._sync_parameters()
        return self._cpp.get_image_features(pixel_values, flag(interpolate_pos_encoding, "interpolate_pos_encoding"))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Projected (not normalised) text features [B, projection_dim]."""
        _check_tensor("input_ids", input_ids, 2)
        self._sync_parameters()
        return self._cpp.get_text_features(input_ids, attention_mask)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's name for get_image_features (optionally L2-normalised)."""
        f = self.get_image_features(pixel_values)
        return nn.functional.normalize(f, dim=-1) if flag(normalize, "normalize") else f

    def encode_text(self, input_ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's name for get_text_features (optionally L2-normalised)."""
        f = self.get_text_features(input_ids)
        return nn.functional.normalize(f, dim=-1) if flag(normalize, "normalize") else f

    def _set_checkpointing(self, enable: bool) -> None:
        self._cpp.set_gradient_checkpointing(enable)

    @property
    def image_size(self) -> int:
        return int(self.config.get("vision_config", {}).get("image_size", 224))


class _TowerModel(CppModule, PreTrainedModel):
    """HF's CLIPVisionModel / CLIPTextModel: one tower whose parameters sit at the top level
    (`embeddings.patch_embedding.weight`), as transformers 5 names them. Checkpoints in the
    transformers 4.x layout, where every key starts with `vision_model.` / `text_model.`, load too,
    and so does a CLIPModel folder (its `vision_config` / `text_config` and that tower's weights).
    """

    _cpp_class = ""

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        config = dict(config or {})
        super().__init__(build_cpp(getattr(_C.clip, self._cpp_class), config_json(config)))
        self.config = merge_config(config, json.loads(self._cpp.config_json()))

    def _set_checkpointing(self, enable: bool) -> None:
        self._cpp.set_gradient_checkpointing(enable)

    @classmethod
    def _cpp_type(cls) -> Any:
        return getattr(_C.clip, cls._cpp_class)

    #: Config keys are checked by CLIP's validator, inside the parent's `base_config_key`.
    key_family = "clip"

    @classmethod
    def resolve_config(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        """The full tower config: resolved as the CLIP config's sub-config it is."""
        return json.loads(_C.clip.resolve_config(config_json({cls.base_config_key: config})))[cls.base_config_key]


@register_model
class CLIPVisionModel(CLIPVisionFeatures, _TowerModel):
    def probe_features(self):
        """`tessera eval --probe`'s feature function: the pooled output."""
        return lambda px: self(px).pooler_output

    model_type = "clip_vision_model"
    architecture = "CLIPVisionModel"
    main_input_name = "pixel_values"  # transformers'
    input_embeddings = "embeddings.patch_embedding"
    _cpp_module_name = "CLIPVisionTransformer"  # its weight-loading rules: clip_family.cpp
    _cpp_class = "VisionTransformer"



@register_model
class CLIPTextModel(CLIPTextFeatures, _TowerModel):
    model_type = "clip_text_model"
    architecture = "CLIPTextModel"
    input_embeddings = "embeddings.token_embedding"
    _cpp_module_name = "CLIPTextTransformer"
    _cpp_class = "ClipTextTransformer"

