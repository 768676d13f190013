"""Batches from webdataset shards for the trainer, with the native loader's interface (epochs,
an exact mid-epoch position, skipped samples reported): the shards stream through ShardStream,
images decode and transform on a thread pool (tessera's C++ decode releases the GIL), and a
sample whose image is missing or undecodable is skipped, counted and reported.

    loader = ShardLoader("shards/train-{00000..00059}.tar", batch_size=256, transform=clip_transform(28),
                         shuffle_buffer=2000, seed=0, rank=rank, world_size=world)
    for batch in loader: ...          # {"pixel_values", "labels", "captions", "keys"}
"""
from __future__ import annotations

import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional

import torch

from .. import _C
from .transforms import ImageTransform, TransformOptions, decode_image
from .webdataset import ShardStream

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def sample_fields(sample: Dict[str, Any]):
    """(image bytes, caption, label) of a webdataset sample; caption from .txt (or a json
    "caption"), label from .cls (-1 without)."""
    image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if image is None:
        raise ValueError(f"no image member ({', '.join(IMAGE_KEYS)}); it has {', '.join(k for k in sample if k[:2] != '__')}")
    caption = sample["txt"].decode("utf-8", "replace").strip() if "txt" in sample else ""
    if not caption and "json" in sample:
        caption = str(json.loads(sample["json"]).get("caption", ""))
    label = int(sample["cls"].decode().strip()) if "cls" in sample else -1
    return image, caption, label


class ShardLoader:
    def __init__(self, urls, batch_size: int, transform: TransformOptions, shuffle_buffer: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 2, drop_last: bool = True,
                 max_errors: int = 20):
        self.stream = ShardStream(urls, shuffle_buffer, seed, rank, world_size)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle = shuffle_buffer > 0
        self.drop_last, self.max_errors = drop_last, max_errors
        self.transform = ImageTransform(transform)
        self.pool = ThreadPoolExecutor(max(1, num_workers))
        self.batches = 0  # consumed this epoch
        self.skipped, self.errors = 0, []

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.stream.epoch:
            self.stream.set_epoch(epoch)
            self.batches = 0

    def stop(self) -> None:
        """Nothing runs between batches; the position stays."""

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size, "shuffle": int(self.shuffle),
                "position": self.stream.position}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        for key in ("seed", "world_size", "batch_size", "shuffle"):
            if key in state and int(state[key]) != int(self.state_dict()[key]):
                raise ValueError(f"cannot resume: the saved loader had {key}={state[key]}, this one has "
                                 f"{self.state_dict()[key]}")
        self.stream.load_state_dict({"epoch": int(state["epoch"]), "position": int(state.get("position", 0))})
        self.batches = int(state["batches"])

    def report(self) -> str:
        if not self.skipped and not self.stream.problems:
            return ""
        lines = [f"{self.skipped} sample(s) skipped, {len(self.stream.problems)} shard problem(s):"]
        lines += [f"  {e}" for e in self.errors + self.stream.problems[: self.max_errors]]
        return "\n".join(lines)

    def _load(self, sample: Dict[str, Any]):
        try:
            image, caption, label = sample_fields(sample)
            # augmentation draws seeded by (seed, epoch, key): the same sample, the same crop
            g = torch.Generator().manual_seed(_C.data.sample_seed(self.seed, self.epoch,
                                                                  zlib.crc32(sample["__key__"].encode())))
            pixels = self.transform(decode_image(image, f"{sample['__url__']}:{sample['__key__']}"), g)
            return pixels, caption, label, sample["__key__"]
        except (ValueError, RuntimeError) as e:
            return f"{sample['__url__']}: {sample['__key__']}: {e}"

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        rows: List[Any] = []
        it = iter(self.stream)
        while True:
            chunk = [s for _, s in zip(range(self.batch_size - len(rows)), it)]
            if not chunk:
                break
            for loaded in self.pool.map(self._load, chunk):
                if isinstance(loaded, str):
                    self.skipped += 1
                    if len(self.errors) < self.max_errors:
                        self.errors.append(loaded)
                else:
                    rows.append(loaded)
            if len(rows) == self.batch_size:
                yield self._batch(rows)
                rows = []
        if rows and not self.drop_last:
            yield self._batch(rows)

    def _batch(self, rows) -> Dict[str, Any]:
        self.batches += 1
        pixels, captions, labels, keys = zip(*rows)
        # shards without captions (only .cls) leave them to the task (class-name templates)
        return {"pixel_values": torch.stack(pixels), "captions": list(captions) if any(captions) else [],
                "labels": torch.tensor(labels, dtype=torch.long), "keys": list(keys)}
