"""A DataLoader whose workers are C++ threads, after ``torch.utils.data.DataLoader`` with a
``DistributedSampler``: same epoch order for a seed and rank, batches as dicts with Hugging
Face names, and a resumable position.

    >>> from tessera.data import DataLoader, FashionMNIST, clip_transform
    >>> loader = DataLoader(FashionMNIST(), batch_size=256, transform=clip_transform(224, train=True))
    >>> for epoch in range(10):
    ...     loader.set_epoch(epoch)
    ...     for batch in loader:           # {"pixel_values", "labels", "indices"}
    ...         step(batch["pixel_values"].cuda(non_blocking=True), batch["labels"])
    >>> loader.skipped, loader.errors        # samples that failed to load, and why

Decoding and transforms run in ``num_workers`` C++ threads without the GIL, writing straight
into (pinned, when CUDA is present) batch tensors; nothing is pickled between processes.
A sample that fails to load is skipped, counted and reported, and its row is refilled from
later samples of the same shard, so batches keep their size (see ``csrc/tessera/data/loader.h``).
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import torch

from tessera import _C

from .loader_checks import check_loader_args, check_resume
from .transforms import ImageTransform, TransformOptions, clip_transform

__all__ = ["DataLoader"]

_data = _C.data


def _distributed_defaults(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    return (0 if rank is None else int(rank)), (1 if world_size is None else int(world_size))


class DataLoader:
    """Batches of transformed images from a tessera dataset.

    Args:
        dataset: :class:`FashionMNIST`, :class:`ImageFolder` or :class:`CaptionDataset`.
        batch_size: samples per batch.
        shuffle: a new order every epoch (``torch.randperm`` seeded ``seed + epoch``).
        seed: shuffling and augmentation seed (>= 0), shared by all ranks.
        rank, world_size: this process's shard; default from ``torch.distributed`` when it is
            initialised, else 0 and 1. Every rank gets ``ceil(len(dataset) / world_size)``
            samples, exactly ``DistributedSampler``'s indices.
        num_workers: C++ threads that decode and transform (0: on the calling thread).
        prefetch: batches loaded ahead of the consumer, at most.
        drop_last: leave out a last, smaller batch.
        transform: :class:`TransformOptions` (e.g. :func:`clip_transform`) or an
            :class:`ImageTransform`; default ``clip_transform(224)``.
        pin_memory: page-locked ``pixel_values`` when CUDA is available.
        max_errors: error messages of skipped samples kept in :attr:`errors`.

    Each batch is ``{"pixel_values": float [B, 3, S, S], "labels": int64 [B], "indices": int64
    [B]}`` plus ``"captions": list[str]`` for caption datasets. Iterating continues from the
    current position (see :meth:`state_dict`); a finished epoch is iterated again from its start.
    """

    def __init__(
        self,
        dataset,
        batch_size: int = 64,
        shuffle: bool = True,
        seed: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        num_workers: int = 2,
        prefetch: int = 4,
        drop_last: bool = True,
        transform=None,
        pin_memory: bool = True,
        max_errors: int = 20,
    ):
        cpp_dataset = getattr(dataset, "_cpp", dataset)
        if not isinstance(cpp_dataset, _data.Dataset):
            raise TypeError(
                f"tessera.data.DataLoader loads tessera datasets (FashionMNIST, ImageFolder, "
                f"CaptionDataset) in C++ threads; got {type(dataset).__name__}. For a Python "
                f"dataset use torch.utils.data.DataLoader."
            )
        if transform is None:
            transform = clip_transform(224)
        if isinstance(transform, ImageTransform):
            transform = transform.options
        if not isinstance(transform, TransformOptions):
            raise TypeError(f"transform must be TransformOptions or ImageTransform, got {type(transform).__name__}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.rank, self.world_size = _distributed_defaults(rank, world_size)
        check_loader_args("DataLoader", batch_size, self.rank, self.world_size)  # True is not a batch size
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform
        self._cpp = _data.Loader(
            cpp_dataset, transform, batch_size, shuffle, seed, self.rank, self.world_size,
            num_workers, prefetch, drop_last, pin_memory, max_errors,
        )

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self._cpp)

    def __iter__(self) -> Iterator[Dict[str, object]]:
        return iter(self._cpp)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's order (as ``DistributedSampler.set_epoch``). Setting the current
        epoch again keeps the position, so it is safe right after :meth:`load_state_dict`."""
        self._cpp.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._cpp.epoch

    def stop(self) -> None:
        """Lets the worker threads go idle after an early ``break``; the position stays."""
        self._cpp.stop()

    def state_dict(self) -> Dict[str, int]:
        """Epoch and batches consumed, with the settings a resume must share."""
        epoch, batches = self._cpp.state()
        return {
            "epoch": epoch, "batches": batches, "seed": self.seed, "rank": self.rank,
            "world_size": self.world_size, "batch_size": self.batch_size,
            "shuffle": int(self.shuffle), "dataset_size": len(self.dataset),
        }

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Resumes mid-epoch: the next batch is the one that followed when ``state`` was saved.
        Raises ``ValueError`` if the seed, sharding, batch size or dataset size changed, since
        the batches would then differ."""
        if not isinstance(state, dict):
            raise TypeError(f"DataLoader.load_state_dict: a state dict (from state_dict()) expected, got "
                            f"{type(state).__name__}")
        check_resume("DataLoader", state, len(self))
        mine = self.state_dict()
        for key in ("seed", "rank", "world_size", "batch_size", "shuffle", "dataset_size"):
            if key in state and int(state[key]) != int(mine[key]):
                raise ValueError(
                    f"cannot resume: the saved loader had {key}={state[key]}, this one has {mine[key]}"
                )
        self._cpp.load_state(int(state["epoch"]), int(state["batches"]))

    @property
    def skipped(self) -> int:
        """Samples skipped because they failed to load (each counted once per epoch)."""
        return self._cpp.skipped

    @property
    def errors(self) -> List[str]:
        """Why the first ``max_errors`` skipped samples failed: ``"index i (path): message"``."""
        return list(self._cpp.errors)

    def counts(self) -> Dict[str, int]:
        """What the report says, as numbers (the trainer's summary.json sums them over ranks)."""
        return {"skipped_samples": self.skipped}

    def report(self) -> str:
        """One line per kept error, after a count; empty when nothing was skipped."""
        if not self.skipped:
            return ""
        lines = [f"{self.skipped} sample(s) skipped:"] + [f"  {e}" for e in self.errors]
        if self.skipped > len(self.errors):
            lines.append(f"  ... and {self.skipped - len(self.errors)} more")
        return "\n".join(lines)
