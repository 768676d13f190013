"""The arguments and resume states that Python loaders (ShardLoader, IndexLoader) share with the
C++ DataLoader, checked the same way: a value out of range is an error naming it, never an empty
epoch, a batch from another rank, or a resume that silently starts elsewhere."""
from __future__ import annotations

from typing import Any, Dict, Optional


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_loader_args(who: str, batch_size: Any, rank: Any, world_size: Any) -> None:
    if not _int(batch_size) or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be an integer >= 1, got {batch_size!r}")
    if not _int(world_size) or world_size < 1:
        raise ValueError(f"{who}: world_size must be an integer >= 1, got {world_size!r}")
    if not _int(rank) or not 0 <= rank < world_size:
        raise ValueError(f"{who}: rank must be an integer in [0, {world_size}), got {rank!r}")


def check_resume(who: str, state: Dict[str, Any], batches_per_epoch: Optional[int] = None) -> None:
    """`epoch` and `batches` (and `position` where present) are integers >= 0; `batches` at most
    an epoch's batches when that is known."""
    for key in ("epoch", "batches", "position"):
        if key in state and (not _int(state[key]) or not 0 <= state[key] < 2 ** 62):
            raise ValueError(f"{who}: cannot resume: {key} must be an integer in [0, 2^62), got {state[key]!r}")
    for key in ("epoch", "batches"):
        if key not in state:
            raise ValueError(f"{who}: cannot resume: the saved state has no {key!r} (keys: {sorted(state)})")
    if batches_per_epoch is not None and state["batches"] > batches_per_epoch:
        raise ValueError(f"{who}: cannot resume at batch {state['batches']}: an epoch here has {batches_per_epoch}")
