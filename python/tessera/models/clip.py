"""CLIP (Radford et al. 2021) over the C++ modules in csrc/tessera/models/clip, with the
interface of transformers' CLIPModel, CLIPVisionModel and CLIPTextModel."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import torch
from torch import nn

from .. import _C
from ..cpp_module import CppModule, node_class
from .outputs import BaseModelOutputWithPooling, CLIPOutput, IntermediatesOutput, make_output
from ..registry import register_model
from .pretrained import PreTrainedModel, merge_config

#: Python classes of the mirrored C++ nodes, for wrap policies (FSDP2, activation checkpointing).
CLIPEncoderLayer = node_class("CLIPEncoderLayer", layer=True)
CLIPAttention = node_class("CLIPAttention")
CLIPMLP = node_class("CLIPMLP")


def _check_tensor(name: str, value, ndim: int) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")


@register_model
class CLIPModel(CppModule, PreTrainedModel):
    """CLIP two-tower model; parameter names equal transformers' CLIPModel.

    Example::

        model = tessera.from_pretrained("openai-clip-dir")
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
        out.logits_per_image, out.loss
    """

    model_type = "clip"
    architecture = "CLIPModel"

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        config = dict(config or {})
        cpp = _C.clip.ClipModel(json.dumps(config))
        super().__init__(cpp)
        self.config = merge_config(config, json.loads(cpp.config_json()))  # C++'s values, HF's extra keys

    @classmethod
    def resolve_config(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        """The full config (C++ fills in the defaults and checks it) without building the model."""
        return json.loads(_C.clip.resolve_config(json.dumps(config)))

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        return_loss: bool = False,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> CLIPOutput:
        if input_ids is None or pixel_values is None:
            raise ValueError("CLIPModel.forward needs both input_ids and pixel_values")
        _check_tensor("input_ids", input_ids, 2)
        _check_tensor("pixel_values", pixel_values, 4)
        self._sync_parameters()
        return make_output(self._cpp.forward(
            pixel_values, input_ids, attention_mask, bool(return_loss), bool(output_hidden_states),
            bool(interpolate_pos_encoding),
        ))

    def get_image_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Projected (not normalised) image features [B, projection_dim]."""
        _check_tensor("pixel_values", pixel_values, 4)
        self._sync_parameters()
        return self._cpp.get_image_features(pixel_values, interpolate_pos_encoding)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Projected (not normalised) text features [B, projection_dim]."""
        _check_tensor("input_ids", input_ids, 2)
        self._sync_parameters()
        return self._cpp.get_text_features(input_ids, attention_mask)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's name for get_image_features (optionally L2-normalised)."""
        f = self.get_image_features(pixel_values)
        return nn.functional.normalize(f, dim=-1) if normalize else f

    def encode_text(self, input_ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's name for get_text_features (optionally L2-normalised)."""
        f = self.get_text_features(input_ids)
        return nn.functional.normalize(f, dim=-1) if normalize else f

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
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
        super().__init__(getattr(_C.clip, self._cpp_class)(json.dumps(config)))
        self.config = merge_config(config, json.loads(self._cpp.config_json()))

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        self._cpp.set_gradient_checkpointing(enable)

    def _intermediates(self, indices, run) -> IntermediatesOutput:
        n = int(self.config.get("num_hidden_layers", 12))
        if indices is None:
            indices = n
        if isinstance(indices, int):  # timm: an int takes the last n layers
            if not 0 < indices <= n:
                raise ValueError(f"forward_intermediates: cannot take the last {indices} of {n} layers")
            indices = list(range(n - indices, n))
        self._sync_parameters()
        return make_output(run([int(i) for i in indices]))


@register_model
class CLIPVisionModel(_TowerModel):
    model_type = "clip_vision_model"
    architecture = "CLIPVisionModel"
    key_aliases = [(r"^vision_model\.", "")]  # transformers 4.x layout
    base_config_key = "vision_config"
    _cpp_class = "VisionTransformer"

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False,
                interpolate_pos_encoding: bool = False) -> BaseModelOutputWithPooling:
        _check_tensor("pixel_values", pixel_values, 4)
        self._sync_parameters()
        return make_output(self._cpp.forward(pixel_values, output_hidden_states, interpolate_pos_encoding))

    def forward_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """timm's forward_features: the encoder's token outputs [B, 1 + patches, D]."""
        return self.forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state

    def forward_intermediates(self, pixel_values: torch.Tensor, indices=None, norm: bool = False,
                              stop_early: bool = False, intermediates_only: bool = False,
                              interpolate_pos_encoding: bool = False):
        """timm's forward_intermediates: the outputs of the layers in `indices` (an int n takes the
        last n; negative indices count from the end, -2 equals transformers' hidden_states[-2]);
        `norm` applies post_layernorm; `stop_early` runs no layer past the last index.
        Returns (last_hidden_state, intermediates), or the list alone with intermediates_only."""
        _check_tensor("pixel_values", pixel_values, 4)
        out = self._intermediates(indices, lambda idx: self._cpp.forward_intermediates(
            pixel_values, idx, bool(norm), bool(stop_early), bool(interpolate_pos_encoding)))
        return out.intermediates if intermediates_only else (out.last_hidden_state, out.intermediates)


@register_model
class CLIPTextModel(_TowerModel):
    model_type = "clip_text_model"
    architecture = "CLIPTextModel"
    key_aliases = [(r"^text_model\.", "")]  # transformers 4.x layout
    base_config_key = "text_config"
    _cpp_class = "ClipTextTransformer"

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        _check_tensor("input_ids", input_ids, 2)
        self._sync_parameters()
        return make_output(self._cpp.forward(input_ids, attention_mask, output_hidden_states))

    def forward_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """timm's forward_features: the token outputs after final_layer_norm [B, L, D]."""
        return self.forward(input_ids, attention_mask).last_hidden_state

    def forward_intermediates(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                              indices=None, norm: bool = False, stop_early: bool = False,
                              intermediates_only: bool = False):
        """timm's forward_intermediates over the text layers (`norm` applies final_layer_norm)."""
        _check_tensor("input_ids", input_ids, 2)
        out = self._intermediates(indices, lambda idx: self._cpp.forward_intermediates(
            input_ids, attention_mask, idx, bool(norm), bool(stop_early)))
        return out.intermediates if intermediates_only else (out.last_hidden_state, out.intermediates)
