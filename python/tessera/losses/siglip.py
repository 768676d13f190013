"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023) as a ``torch.nn.Module`` with open_clip's
``SigLipLoss`` constructor and forward; the math runs in C++ (csrc/tessera/losses/siglip_loss.cpp)."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .. import _C
from .clip import _as_scalar_tensor, _opt_scalar_tensor
from .distributed import all_gather_with_grad

_DIST_IMPLS = ("bidir", "shift", "reduce", "gather")


class SigLipLoss(nn.Module):
    """``-sum log sigmoid(z * (scale * img @ txt.T + bias)) / B``, ``z`` = +1 for pairs, -1 otherwise.

    With ``world_size > 1`` this rank's images are scored against every rank's texts, gathered
    with gradient (open_clip's "gather" scheme). open_clip's other ``dist_impl`` values move the
    same text blocks by neighbour exchange instead; loss and gradients are identical, so every
    value is accepted and all run the all-gather.

    Example::

        loss_fn = SigLipLoss(rank=rank, world_size=world)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp(), model.logit_bias)
    """

    def __init__(
        self,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        dist_impl: Optional[str] = None,
    ):
        super().__init__()
        self.cache_labels = cache_labels  # accepted for open_clip compatibility; labels are built in C++
        self.rank = rank
        self.world_size = world_size
        self.dist_impl = dist_impl or "bidir"
        if self.dist_impl not in _DIST_IMPLS:
            raise ValueError(f"dist_impl must be one of {_DIST_IMPLS}, got {dist_impl!r}")

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: Union[torch.Tensor, float],
        logit_bias: Optional[Union[torch.Tensor, float]] = None,
        output_dict: bool = False,
    ):
        all_texts = all_gather_with_grad(text_features) if self.world_size > 1 else None
        out = _C.losses.siglip_loss(
            image_features, text_features, _as_scalar_tensor(logit_scale, image_features),
            logit_bias=_opt_scalar_tensor(logit_bias, image_features), all_text_features=all_texts,
            rank=self.rank,
        )
        loss = out["contrastive_loss"]
        return {"contrastive_loss": loss} if output_dict else loss
