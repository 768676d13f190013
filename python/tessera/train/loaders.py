"""A resumable loader over in-memory tensors, for tasks whose samples are already tensors (token
ids, features). Same contract as `tessera.data.DataLoader`: DistributedSampler's shard of a
`randperm(seed + epoch)` order, `drop_last` batches, and a position that `state_dict` saves."""
from __future__ import annotations

import math
from typing import Dict, Iterator

import torch


class TensorLoader:
    def __init__(self, tensors: Dict[str, torch.Tensor], batch_size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True):
        sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"TensorLoader: tensors must share their first dimension, got {sizes}")
        if batch_size < 1:
            raise ValueError(f"TensorLoader: batch_size must be >= 1, got {batch_size}")
        self.tensors, self.batch_size = tensors, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.n = next(iter(sizes.values()))
        self._epoch, self._batch = 0, 0

    def _indices(self) -> torch.Tensor:
        order = (torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self._epoch))
                 if self.shuffle else torch.arange(self.n))
        per_rank = math.ceil(self.n / self.world_size)
        order = torch.cat([order, order[: per_rank * self.world_size - self.n]])  # pad as DistributedSampler
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        per_rank = math.ceil(self.n / self.world_size)
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        idx = self._indices()
        while self._batch < len(self):
            rows = idx[self._batch * self.batch_size:(self._batch + 1) * self.batch_size]
            self._batch += 1
            yield {k: v[rows] for k, v in self.tensors.items()}
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
