"""Sugar's discriminative loss (arXiv 2411.00304): L_d = (1/n) sum_ij (M_r[i, j] - M_l[i, j])^2 over
the n points of a (global) batch, M_r the cosines of the retrieval vectors, M_l the targets (no
gradient). Divided by n, not n^2, as the paper writes it.

Across ranks each rank owns the rows of its own points: M_r's rows are its points against every
rank's (gathered with gradient, `all_gather_with_grad`), M_l's rows come from the task. A rank
returns world_size * (its rows' sum) / n, so the *mean* over ranks (what DDP's gradient average
and the trainer's logging compute) is the single-process L_d, and the summed all-gather backward
(see losses/distributed.py) gives the single-process gradient."""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .distributed import all_gather_with_grad


def retrieval_similarity(r_local: torch.Tensor, r_all: torch.Tensor) -> torch.Tensor:
    """M_r rows [n_local, n]: the cosine of each local point's vector with every point's."""
    return F.normalize(r_local, dim=-1) @ F.normalize(r_all, dim=-1).T


def discriminative_loss(r_local: torch.Tensor, target_rows: torch.Tensor, world_size: int = 1,
                        valid_local: Optional[torch.Tensor] = None, valid_all: Optional[torch.Tensor] = None
                        ) -> torch.Tensor:
    """L_d for this rank's points `r_local` [n_local, E] against the targets `target_rows`
    [n_local, n] (n: every rank's points, in rank order; every rank holds n_local points).
    world_size > 1 gathers the other ranks' vectors with gradient. `valid_local` [n_local] and
    `valid_all` [n] (bool) mark padding points (a sample with fewer slices than points per
    sample): they take no part, and n counts the valid points only."""
    if r_local.ndim != 2 or target_rows.ndim != 2 or target_rows.shape[0] != r_local.shape[0]:
        raise ValueError(f"discriminative_loss: r_local [n_local, E] and target_rows [n_local, n] expected, got "
                         f"{tuple(r_local.shape)} and {tuple(target_rows.shape)}")
    r_all = all_gather_with_grad(r_local) if world_size > 1 else r_local
    if target_rows.shape[1] != r_all.shape[0]:
        raise ValueError(f"discriminative_loss: target rows have {target_rows.shape[1]} columns, the batch has "
                         f"{r_all.shape[0]} points over {world_size} rank(s)")
    m_r = retrieval_similarity(r_local, r_all)
    squared = (m_r - target_rows.to(m_r.dtype)).pow(2)
    if valid_all is None:
        if r_all.shape[0] == 0:  # as the masked path below: a mean over no point is no loss
            raise ValueError("discriminative_loss: no point in the batch")
        return world_size * squared.sum() / r_all.shape[0]
    pairs = valid_local[:, None] & valid_all[None, :]
    n = int(valid_all.sum())
    if n == 0:
        raise ValueError("discriminative_loss: no valid point in the batch")
    return world_size * torch.where(pairs, squared, torch.zeros_like(squared)).sum() / n


def gather_rows(t: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every rank's `t` [B, ...] concatenated in rank order, without gradient (indices, targets)."""
    if world_size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
