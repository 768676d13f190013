"""BEiT (Bao et al. 2021) over the C++ modules in csrc/tessera/models/beit, with the interface of
transformers' BeitForMaskedImageModeling and BeitModel.

    beit = tessera.BeitForMaskedImageModeling({"vocab_size": 512, "use_mask_token": True, ...})
    mask = tessera.data.BlockMaskGenerator(14, num_masking_patches=75)(batch=8)
    out = beit(pixel_values, bool_masked_pos=mask, labels=visual_tokens)   # loss on masked patches
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .. import _C
from ..cpp_module import node_class, node_methods
from ..opaque_to_compile import opaque_to_compile
from ..registry import register_model
from .family import FamilyModel
from .features import VisionFeatures, mean_patch_tokens
from .timm_compat import BEIT_DATA, BEIT_NO_DECAY, BeitTimmInterface
from .outputs import ModelOutput, make_output
from ..schema import flag

#: Python classes of the mirrored C++ nodes (wrap policies: FSDP2, activation checkpointing).
BeitLayer = node_class("BeitLayer", layer=True)
BeitAttention = node_class("BeitAttention")


class BeitModelOutputWithPooling(ModelOutput):
    """last_hidden_state, pooler_output, hidden_states."""
    fields = ("last_hidden_state", "pooler_output", "hidden_states", "attentions")


class MaskedLMOutput(ModelOutput):
    """loss, logits, hidden_states."""
    fields = ("loss", "logits", "hidden_states", "attentions")


def _check(pixel_values, **optional) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    for name, value in optional.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(value).__name__}")


class _BeitBase(BeitTimmInterface, FamilyModel):
    model_type = "beit"
    main_input_name = "pixel_values"  # transformers'
    _family = _C.beit


@node_methods("BeitModel")
class BeitFeatures(VisionFeatures):
    """The forward and timm's feature API of the BEiT encoder: BeitModel and `BeitForMaskedImageModeling.beit`
    (no mask token; the relative position bias as in forward). The final norm is `layernorm`, as
    timm's `norm`: none with use_mean_pooling (timm's Identity), so forward_features is
    transformers' last_hidden_state. `interpolate_pos_encoding` is accepted and ignored: BEiT
    resizes for any multiple of the patch size."""

    _forward_intermediates = staticmethod(_C.beit.forward_intermediates)
    _forward_head = staticmethod(_C.beit.forward_head)
    _no_decay, _data_config = BEIT_NO_DECAY, BEIT_DATA

    @opaque_to_compile
    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False,
                interpolate_pos_encoding: bool = False) -> BeitModelOutputWithPooling:
        """transformers' BeitModel forward (and `BeitForMaskedImageModeling.beit`'s)."""
        _check(pixel_values, bool_masked_pos=bool_masked_pos)
        self._sync_parameters()
        return make_output(self._cpp.forward(pixel_values, bool_masked_pos, flag(output_hidden_states, "output_hidden_states")))


@register_model
class BeitModel(BeitFeatures, _BeitBase):
    """The BEiT encoder: embeddings (mask token where `bool_masked_pos`), layers with relative
    position bias and layer scale, final layernorm, pooler (layernormed patch mean with
    `use_mean_pooling`, else the CLS token). Any image size that is a multiple of the patch size
    works: position embeddings and bias tables are resized, as in transformers."""

    architecture = "BeitModel"
    input_embeddings = "embeddings.patch_embeddings"
    _cpp_class = "BeitModel"

    def __init__(self, config: Optional[Dict[str, Any]] = None, add_pooling_layer: bool = True):
        super().__init__(config, bool(add_pooling_layer))

    def probe_features(self):
        """`tessera eval --probe`'s feature function: the mean of the last layer's patch tokens."""
        return lambda px: mean_patch_tokens(self(px).last_hidden_state)


@register_model
class BeitForMaskedImageModeling(_BeitBase):
    """BEiT pretraining: predicts the visual token of every patch from an image whose masked
    patches were replaced by the mask token; `labels` (the tokens of the masked patches, [M] as
    transformers, or of every patch, [B, N]) give the cross-entropy over masked patches."""

    architecture = "BeitForMaskedImageModeling"
    input_embeddings = "beit.embeddings.patch_embeddings"
    default_for_model_type = True  # a config with only model_type builds the model the task trains
    _cpp_class = "BeitForMaskedImageModeling"

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, output_hidden_states: bool = False,
                interpolate_pos_encoding: bool = False) -> MaskedLMOutput:
        _check(pixel_values, bool_masked_pos=bool_masked_pos, labels=labels)
        self._sync_parameters()
        return make_output(self._cpp.forward(pixel_values, bool_masked_pos, labels, flag(output_hidden_states, "output_hidden_states")))

    def probe_features(self):
        """`tessera eval --probe`'s feature function: the mean of the last layer's patch tokens."""
        return lambda px: mean_patch_tokens(self(px, output_hidden_states=True).hidden_states[-1])
