"""AdamW with CLIP's parameter groups and a warmup + cosine learning-rate schedule."""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn

from .config import OptimConfig


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights, biases, embeddings, the class token and logit_scale/bias take no weight decay
    (as open_clip excludes gains, biases, embeddings and logit_scale)."""
    return (
        param.ndim < 2
        or "norm" in name
        or "embedding" in name
        or name.endswith(".bias")
        or "logit_scale" in name
        or "logit_bias" in name
    )


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    decay: List[torch.Tensor] = []
    keep: List[torch.Tensor] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (keep if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                  min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from lr/warmup to lr, then cosine decay to lr * min_lr_ratio."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return min_lr_ratio + (1.0 - min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
