"""Freezing by parameter-name pattern from the recipe (`model.freeze`, `model.trainable`):
regular expressions searched in each name. `trainable` freezes everything it does not match
(LLaVA stage 1: only the projector); `freeze` then freezes what it matches. A pattern that
matches no parameter is an error, never a silent no-op."""
from __future__ import annotations

import re
from typing import List, Tuple

from torch import nn


def apply_freezing(model: nn.Module, freeze: List[str], trainable: List[str]) -> Tuple[int, int]:
    """Sets requires_grad; returns (trainable, total) parameter counts."""
    names = [n for n, _ in model.named_parameters()]
    for where, patterns in (("model.trainable", trainable), ("model.freeze", freeze)):
        for pattern in patterns:
            try:
                rx = re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{where}: {pattern!r} is not a regular expression ({e})") from None
            if not any(rx.search(n) for n in names):
                raise ValueError(f"{where}: {pattern!r} matches no parameter (names look like {names[0]!r})")
    keep = [re.compile(p) for p in trainable]
    drop = [re.compile(p) for p in freeze]
    for name, p in model.named_parameters():
        if keep and not any(rx.search(name) for rx in keep):
            p.requires_grad_(False)
        if any(rx.search(name) for rx in drop):
            p.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
