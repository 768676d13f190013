"""Metrics are computed from finite scores only. topk and argmax rank NaN arbitrarily, so an
evaluation of a diverged model (or of non-finite inputs) would still report an accuracy or a
recall; instead it names what held NaN or inf, and in how many rows. A metric over no items is
refused the same way."""
from __future__ import annotations

import torch


def require_finite(t: torch.Tensor, what: str) -> torch.Tensor:
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = int(bad.reshape(t.shape[0], -1).any(1).sum()) if t.dim() else 1
        total = t.shape[0] if t.dim() else 1
        raise ValueError(f"{what}: {rows} of {total} rows hold NaN or inf (diverged weights or non-finite "
                         "inputs?); no metric is computed from them")
    return t


def require_items(count: int, what: str) -> int:
    """`count` items to average over; none is an error naming `what`: a mean over nothing is no
    number (open_clip's zero-shot divides by zero), and reporting 0 or NaN would pass for a score."""
    if count <= 0:
        raise ValueError(f"{what}: no items to score (empty evaluation data, or every sample filtered out); the "
                         "metric is undefined")
    return count
