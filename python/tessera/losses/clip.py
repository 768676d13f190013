"""CLIP's symmetric InfoNCE loss (Radford et al. 2021) as a ``torch.nn.Module`` with open_clip's
``ClipLoss`` constructor and forward; the math runs in C++ (csrc/tessera/losses/clip_loss.cpp)."""
from __future__ import annotations

from typing import Dict, Optional, Union

import torch
from torch import nn

from .. import _C
from .distributed import gather_features


def _as_scalar_tensor(value, like: torch.Tensor) -> torch.Tensor:
    # open_clip also accepts a Python float for the scale; the C++ side takes tensors only.
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def _opt_scalar_tensor(value, like: torch.Tensor) -> Optional[torch.Tensor]:
    return None if value is None else _as_scalar_tensor(value, like)


class ClipLoss(nn.Module):
    """Symmetric cross-entropy over ``logit_scale * img @ txt.T`` (open_clip semantics).

    ``logit_scale`` is the exponentiated temperature (``model.logit_scale.exp()``). With
    ``world_size > 1`` the features are gathered (:func:`gather_features`); ``local_loss`` scores
    this rank's rows against all gathered columns, otherwise every rank builds the full
    ``[N, N]`` logits. Use ``gather_with_grad=True`` for gradients equal to one process on the
    whole batch (see :mod:`tessera.losses.distributed`).

    Example::

        loss_fn = ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
    """

    def __init__(
        self,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        use_horovod: bool = False,
    ):
        super().__init__()
        if use_horovod:
            raise NotImplementedError("tessera gathers with torch.distributed only (use_horovod=False)")
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self.use_horovod = use_horovod
        # Label cache, as open_clip: one arange per device, rebuilt when the row count changes.
        self.prev_num_logits = 0
        self.labels: Dict[torch.device, torch.Tensor] = {}

    def get_ground_truth(self, device: torch.device, num_logits: int) -> torch.Tensor:
        """``arange(num_logits)``, offset by ``num_logits * rank`` under local_loss with several ranks."""
        if self.prev_num_logits != num_logits or device not in self.labels:
            local = self.world_size > 1 and self.local_loss
            labels = _C.losses.clip_loss_labels(num_logits, local, self.rank, device)
            if self.cache_labels:
                self.labels[device] = labels
                self.prev_num_logits = num_logits
            return labels
        return self.labels[device]

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: Union[torch.Tensor, float],
        logit_bias: Optional[Union[torch.Tensor, float]] = None,
        output_dict: bool = False,
    ):
        all_images = all_texts = None
        if self.world_size > 1:
            all_images, all_texts = gather_features(
                image_features, text_features, local_loss=self.local_loss,
                gather_with_grad=self.gather_with_grad, rank=self.rank, world_size=self.world_size,
            )
        # Rows of the logits: the local batch, or the whole gathered batch for the global loss.
        rows = image_features.shape[0] if all_images is None or self.local_loss else all_images.shape[0]
        labels = self.get_ground_truth(image_features.device, rows)
        out = _C.losses.clip_loss(
            image_features, text_features, _as_scalar_tensor(logit_scale, image_features),
            all_image_features=all_images, all_text_features=all_texts, local_loss=self.local_loss,
            rank=self.rank, logit_bias=_opt_scalar_tensor(logit_bias, image_features), labels=labels,
        )
        loss = out["contrastive_loss"]
        return {"contrastive_loss": loss} if output_dict else loss


def clamp_logit_scale(log_scale: torch.Tensor, max: float = 100.0) -> torch.Tensor:  # noqa: A002 (open_clip's word)
    """Clamp the *log* temperature parameter in place to ``[0, ln(max)]`` without autograd, as
    open_clip's training loop does after ``optimizer.step()``; returns ``log_scale``."""
    return _C.losses.clamp_logit_scale(log_scale, max)
