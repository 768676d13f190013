"""timm's feature API (`forward_features`, `forward_intermediates`, `forward_head`) of tessera's
encoders.

A family binds one `forward_intermediates(node, inputs..., indices, norm, stop_early)` that runs on
a node's C++ address, and a mixin here calls it on `self._cpp_address()`. The mixin is both a base
of the model class (CLIPVisionModel) and, through `cpp_module.node_methods`, of the mirrored node of
the same C++ class inside a parent (CLIPModel.vision_model, LLaVA's vision_tower): one code path.

timm's semantics: `indices` None takes every layer, an int n the last n, a list picks layers
(negative from the end; index k is transformers' hidden_states[k + 1]); `norm` applies the
encoder's final norm to the picked outputs; `stop_early` runs no layer past the last picked one;
the result is (final, intermediates), or the list alone with `intermediates_only`. "final" is
the last layer run, after the final norm, which is what timm's forward_features returns. Outputs
stay [B, tokens, D] with the prefix tokens (timm's output_fmt="NLC", return_prefix_tokens
folded in); an index out of range is a ValueError naming it. `forward_head(forward_features(x))`
is transformers' pooler_output: each tower pools as timm's port of it does ('token' for CLIP, MAE
and BLIP-2, 'avg' + fc_norm for BEiT with use_mean_pooling).
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ..cpp_module import CppNode
from .timm_compat import TimmNames
from ..schema import flag

FeatureResult = Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]


def _int(i) -> int:
    if isinstance(i, bool):
        raise TypeError("a bool is not a layer index")
    return operator.index(i)


def indices_arg(indices):
    """`indices` as the bound functions take it: None, an int (timm's "last n") or a list of ints."""
    if indices is None:
        return None
    try:
        return _int(indices)
    except TypeError:
        pass
    try:
        return [_int(i) for i in indices]
    except TypeError:
        raise TypeError(f"indices must be None, an int (the last n layers) or a list of ints, got {indices!r}") from None


def intermediates_result(out: Dict[str, Any], intermediates_only: bool) -> FeatureResult:
    """timm's return value from the bound function's dict."""
    picked = list(out.get("intermediates", ()))
    return picked if flag(intermediates_only, "intermediates_only") else (out["last_hidden_state"], picked)


def mean_patch_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """[B, 1 + N, D] -> [B, D]: the mean of the patch tokens (the class token left out), the probe
    feature MAE and BEiT report."""
    return hidden[:, 1:].mean(1)


def check_pixels(pixel_values) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.dim() != 4:
        raise ValueError(f"pixel_values must be [B, C, H, W], got shape {tuple(pixel_values.shape)}")


class VisionFeatures(TimmNames):
    """timm's feature API of an image encoder; a family subclass names its bound function and says
    in its docstring what the final norm is."""

    #: The family's bound forward_intermediates(node, pixel_values, indices, norm, stop_early,
    #: interpolate_pos_encoding).
    _forward_intermediates: Callable[..., Dict[str, Any]]
    #: The family's bound forward_head(node, features): the tower's pooling of forward_features.
    _forward_head: Callable[..., torch.Tensor]

    #: timm's: these towers carry no classifier, as a timm model made with num_classes=0.
    num_classes = 0
    #: `_no_decay` (TimmNames): the family's position tables and class tokens, which timm's port of
    #: it keeps out of weight decay besides vectors.
    #: The input pipeline of timm's port of the family (mean, std, interpolation, crop_pct).
    _data_config: Dict[str, Any] = {}

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """timm's: the embeddings (and BEiT's shared relative position table) first, then layer
        by layer with the final norm in the last layer's group, and a pooler's norm (BEiT's mean
        pooling: timm's fc_norm) above them, so that `create_optimizer_v2(..., layer_decay=...)`
        scales each layer's learning rate as timm's ports do (it had no effect: one group)."""
        return {"stem": r"^embeddings|^pre_layrnorm|^encoder\.relative_position_bias",
                "blocks": r"^encoder\.layers?\.(\d+)" if coarse else
                [(r"^encoder\.layers?\.(\d+)", None), (r"^post_layernorm|^layernorm", (99999,))]}

    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        """timm's: what `timm.data.resolve_data_config` builds the input pipeline from, at the
        tower's own image size (a part reads its parent's config)."""
        owner = self._owning_model() if isinstance(self, CppNode) else self
        size = int(owner.config.get("vision_config", owner.config)["image_size"])
        # the folder's preprocessor_config.json where the model was loaded from one (`preprocessing`, image_processor.py)
        return {"input_size": (3, size, size), "num_classes": 0, "crop_mode": "center", **self._data_config,
                **(getattr(owner, "preprocessing", None) or {})}

    @property
    def num_features(self) -> int:
        """timm's: the width D of forward_head's output, the tower's hidden size (its patch
        projection's output channels)."""
        return next(m.out_channels for m in self.modules() if isinstance(m, nn.Conv2d))

    embed_dim = num_features  # timm's ViT name for the same width

    def get_classifier(self) -> nn.Module:
        """timm's: the head after forward_head, an Identity (no classifier)."""
        return nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """timm's `reset_classifier(0)` (features only) holds already. A classifier is refused:
        forward is transformers' (a ModelOutput), which a head would not change; put one on the
        pooled features: `nn.Linear(m.num_features, n)(m.forward_head(m.forward_features(x)))`."""
        if num_classes == 0 and global_pool is None:
            return
        raise NotImplementedError(
            f"reset_classifier({num_classes!r}, global_pool={global_pool!r}): {type(self).__name__} carries no "
            "classifier and pools as its checkpoint does; its forward is transformers' (a ModelOutput). Put a head "
            f"on the pooled features: nn.Linear(model.num_features, n) applied to "
            "model.forward_head(model.forward_features(pixel_values))")

    def forward_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Every token after the last layer and the final norm [B, tokens, D] (timm's forward_features)."""
        return self.forward_intermediates(pixel_values, indices=[],
                                          interpolate_pos_encoding=interpolate_pos_encoding)[0]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """One vector per image [B, D] from forward_features' tokens: the tower's pooling and its
        norm, as transformers' pooler_output (timm's forward_head). These towers carry no
        classifier (timm's num_classes=0), so `pre_logits` changes nothing; a projection, where
        there is one, is the parent's (CLIPModel.visual_projection)."""
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        weight = next(self.parameters(), None)
        if weight is not None and features.dtype != weight.dtype and not torch.is_autocast_enabled():
            raise TypeError(f"features must be {weight.dtype} like the tower's weights (forward_features' output), "
                            f"got {features.dtype}")
        del pre_logits  # timm's flag; no classifier to skip
        return type(self)._forward_head(self._cpp_address(), features)

    def forward_intermediates(self, pixel_values: torch.Tensor, indices=None, norm: bool = False,
                              stop_early: bool = False, intermediates_only: bool = False,
                              interpolate_pos_encoding: bool = False) -> FeatureResult:
        """The outputs of the layers in `indices` and the final tokens (timm's semantics: see
        tessera.models.features)."""
        check_pixels(pixel_values)
        out = type(self)._forward_intermediates(self._cpp_address(), pixel_values, indices_arg(indices), flag(norm, "norm"),
                                                flag(stop_early, "stop_early"), flag(interpolate_pos_encoding, "interpolate_pos_encoding"))
        return intermediates_result(out, intermediates_only)

