"""Freezing by parameter-name pattern from the recipe (`model.freeze`, `model.trainable`):
regular expressions searched in each name. `trainable` freezes everything it does not match
(LLaVA stage 1: only the projector); `freeze` then freezes what it matches. A pattern that
matches no parameter is an error, never a silent no-op."""
from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from torch import nn


def compile_patterns(names: Optional[Sequence[str]], freeze: Sequence[str],
                     trainable: Sequence[str]) -> Tuple[List[re.Pattern], List[re.Pattern]]:
    """(keep, drop) compiled, each pattern checked to be a regular expression that matches one of
    `names` (None: not known, only compiled; the trainer and `tessera plan` refuse the same recipes)."""
    compiled = {}
    for where, patterns in (("model.trainable", trainable), ("model.freeze", freeze)):
        for pattern in patterns:
            try:
                rx = re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{where}: {pattern!r} is not a regular expression ({e})") from None
            if names is not None and not any(rx.search(n) for n in names):
                raise ValueError(f"{where}: {pattern!r} matches no parameter (names look like {names[0]!r})")
            compiled[pattern] = rx
    return [compiled[p] for p in trainable], [compiled[p] for p in freeze]


def apply_freezing(model: nn.Module, freeze: List[str], trainable: List[str]) -> Tuple[int, int]:
    """Sets requires_grad; returns (trainable, total) parameter counts."""
    keep, drop = compile_patterns([n for n, _ in model.named_parameters()], freeze, trainable)
    for name, p in model.named_parameters():
        if keep and not any(rx.search(name) for rx in keep):
            p.requires_grad_(False)
        if any(rx.search(name) for rx in drop):
            p.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
