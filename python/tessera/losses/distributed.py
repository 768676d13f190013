"""Feature gathering for contrastive losses across data-parallel ranks, after open_clip's
``gather_features`` (open_clip/loss.py), with our own all-gather autograd Function.

Why the backward *sums*. Rank ``q`` computes its loss ``L_q`` from its own copy ``G_q`` of the
gathered batch ``G = cat(x_0, ..., x_{W-1})``. The job as a whole minimises ``sum_q L_q``
(DistributedDataParallel averages parameter gradients, i.e. applies ``(1/W) sum_q dL_q/dtheta``).
Rank ``r``'s features ``x_r`` sit in every rank's copy, so

    d(sum_q L_q)/dx_r = sum_q (dL_q/dG_q)[rows of r]

which is an all-reduce (sum) of the per-rank gradients of ``G`` followed by taking rank ``r``'s
rows. Returning only the local ``(dL_r/dG_r)[rows of r]`` would drop every other rank's use of
``x_r`` as a negative: the gradient of a different objective.

The resulting equivalence with one process on the combined batch of ``N = W * B`` (checked in
tests/python/test_losses.py, float64, DDP over Gloo):

* ClipLoss, global (``local_loss=False``), ``gather_with_grad=True``: every rank's loss *equals*
  the single-process loss ``L``; ``sum_q L_q = W * L``; DDP's ``1/W`` cancels the ``W``, so the
  averaged gradients equal the single-process gradients. No rescaling of the loss is needed.
* ClipLoss, ``local_loss=True``, ``gather_with_grad=True``: rank ``q``'s loss is the mean over its
  ``B`` rows only, so ``sum_q L_q = (N / B) * L = W * L`` again: the same gradients; the *mean*
  of the per-rank losses (not each one) equals ``L``.
* SigLipLoss: each rank divides its sum by the local ``B``; ``sum_q L_q = W * L``: the same.
* ClipLoss with ``gather_with_grad=False`` (open_clip's default) is *not* the single-process
  gradient: in the global case every tower gradient comes out ``1/W`` of it (each rank sees only
  its own rows' path, then DDP averages) while ``logit_scale`` gets the full gradient; with
  ``local_loss=True`` open_clip splices nothing back, so the cross-rank terms are lost.

Every rank must run the same gathers and the same backward: the collectives in forward and
backward are matched across ranks, and all ranks must hold the same batch size.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable


def _check_initialized(what: str) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{what} needs torch.distributed initialised (init_process_group) when world_size > 1")


class AllGatherWithGrad(torch.autograd.Function):
    """``[B, ...]`` on each rank -> ``[W * B, ...]`` (ranks in order) on every rank.

    Backward all-reduces (sums) the gradient of the gathered tensor and returns this rank's
    ``B`` rows (see the module docstring for why the sum is the right gradient).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
        world_size = dist.get_world_size(group)
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor, memory_format=torch.contiguous_format) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        # A fresh contiguous buffer: the collective works in place and autograd may still own
        # the incoming gradient.
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.batch
        return total[start:start + ctx.batch], None


def all_gather_with_grad(tensor: torch.Tensor, group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """Concatenation of every rank's ``tensor`` along dim 0, differentiable (sum-reduced backward)."""
    _check_initialized("all_gather_with_grad")
    return AllGatherWithGrad.apply(tensor, group)


def _all_gather_no_grad(tensor: torch.Tensor, world_size: int) -> List[torch.Tensor]:
    parts = [torch.empty_like(tensor, memory_format=torch.contiguous_format) for _ in range(world_size)]
    with torch.no_grad():
        dist.all_gather(parts, tensor.contiguous())
    return parts


def gather_features(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    local_loss: bool = False,
    gather_with_grad: bool = False,
    rank: int = 0,
    world_size: int = 1,
    use_horovod: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every rank's features, ``[world_size * B, D]`` each, as open_clip's ``gather_features``.

    ``gather_with_grad``: through :class:`AllGatherWithGrad`, so gradients reach every rank's
    towers. Otherwise a plain all-gather (no graph), and, unless ``local_loss``, this rank's own
    block is replaced by the local tensors so at least the local rows keep their gradient
    (open_clip's trick; with ``local_loss`` the local tensors are used directly by the loss, and
    open_clip splices nothing, which we follow).
    """
    if use_horovod:
        raise NotImplementedError("tessera gathers with torch.distributed only (use_horovod=False)")
    _check_initialized("gather_features")
    if gather_with_grad:
        return all_gather_with_grad(image_features), all_gather_with_grad(text_features)
    images = _all_gather_no_grad(image_features, world_size)
    texts = _all_gather_no_grad(text_features, world_size)
    if not local_loss:
        images[rank] = image_features
        texts[rank] = text_features
    return torch.cat(images, dim=0), torch.cat(texts, dim=0)
