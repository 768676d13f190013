"""Resumable loaders over samples addressed by number: `IndexLoader` calls the task's
`fetch(rows)` for each batch (samples read and rendered when loaded), `TensorLoader` indexes
tensors already in memory. Same contract as `tessera.data.DataLoader`: DistributedSampler's shard
of a `randperm(seed + epoch)` order, `drop_last` batches, and a position that `state_dict` saves.
With `group_lengths` the order is LLaVA's length-grouped one instead, whose global batches are
dealt to the ranks as LLaVA's trainer deals them (rank r takes every world_size-th chunk)."""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterator, Sequence, Union

import torch

from ..data.loader_checks import check_loader_args, check_resume
from .length_grouping import modality_length_grouped_indices


class IndexLoader:
    def __init__(self, size: int, fetch: Callable[[torch.Tensor], Dict[str, torch.Tensor]], batch_size: int,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 group_lengths: Union[torch.Tensor, Sequence[int], None] = None, accumulation_steps: int = 1):
        check_loader_args(type(self).__name__, batch_size, rank, world_size)
        if group_lengths is not None and len(group_lengths) != size:
            raise ValueError(f"{type(self).__name__}: {len(group_lengths)} group lengths for {size} samples")
        self.n, self.fetch, self.batch_size = int(size), fetch, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.group_lengths, self.accumulation_steps = group_lengths, max(1, accumulation_steps)
        self._epoch, self._batch = 0, 0

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self._epoch)

    def _batches(self) -> Iterator[torch.Tensor]:
        """This rank's batches of sample numbers, made as they are asked for."""
        bs, world, n = self.batch_size, self.world_size, len(self)
        if self.group_lengths is not None:  # global chunks of batch_size, rank r takes every world-th
            order = modality_length_grouped_indices(self.group_lengths, bs, world * self.accumulation_steps,
                                                    self._generator())
            return (order[(k * world + self.rank) * bs:(k * world + self.rank + 1) * bs] for k in range(n))
        order = torch.randperm(self.n, generator=self._generator()) if self.shuffle else torch.arange(self.n)
        per_rank = math.ceil(self.n / world)
        order = torch.cat([order, order[: per_rank * world - self.n]])[self.rank::world]  # as DistributedSampler
        return (order[k * bs:(k + 1) * bs] for k in range(n))

    def __len__(self) -> int:
        if self.group_lengths is not None:  # whole chunks, the same count on every rank
            chunks = self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)
            return chunks // self.world_size
        per_rank = math.ceil(self.n / self.world_size)
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        batches = self._batches()
        for _ in range(self._batch):  # resume mid-epoch
            next(batches)
        for rows in batches:
            self._batch += 1
            yield self.fetch(rows)
        self._batch = 0  # a finished epoch is iterated again from its start

    def set_epoch(self, epoch: int) -> None:
        self._epoch, self._batch = int(epoch), 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batch, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size, "dataset_size": self.n}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        check_resume(type(self).__name__, state, len(self))
        mine = self.state_dict()
        for key in ("seed", "world_size", "batch_size", "dataset_size"):
            if key in state and int(state[key]) != int(mine[key]):
                raise ValueError(f"cannot resume: the saved loader had {key}={state[key]}, this one has {mine[key]}")
        self._epoch, self._batch = int(state["epoch"]), int(state["batches"])

    # tessera.data.DataLoader's reporting interface: tensors in memory never fail to load.
    skipped = 0

    def stop(self) -> None:
        pass

    def report(self) -> str:
        return ""


class TensorLoader(IndexLoader):
    """Batches of rows of in-memory tensors (token ids, features)."""

    def __init__(self, tensors: Dict[str, torch.Tensor], batch_size: int, **kwargs):
        sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"TensorLoader: tensors must share their first dimension, got {sizes}")
        self.tensors = tensors
        super().__init__(next(iter(sizes.values())), lambda rows: {k: v[rows] for k, v in tensors.items()},
                         batch_size, **kwargs)
