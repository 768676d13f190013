"""Batches from webdataset shards for the trainer, with the native loader's interface (epochs,
an exact mid-epoch position, skipped samples reported): the shards stream through ShardStream,
each batch's images decode and transform in one C++ call on torch's intra-op threads
(`_C.data.BatchDecoder`, reusing its batch buffers), and a sample whose image is missing or undecodable is skipped, counted
and reported.

    loader = ShardLoader("shards/train-{00000..00059}.tar", batch_size=256, transform=clip_transform(28),
                         shuffle_buffer=2000, seed=0, rank=rank, world_size=world)
    for batch in loader: ...          # {"pixel_values", "labels", "captions", "keys"}
"""
from __future__ import annotations

import json
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from .. import _C
from .transforms import TransformOptions
from .loader_checks import check_loader_args, check_resume
from .webdataset import ShardStream

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def sample_fields(sample: Dict[str, Any]):
    """(image bytes, caption, label, problems) of a webdataset sample: caption from .txt (UTF-8) or
    a .json object's "caption" string ("" without), label from .cls, an integer in [0, 2^31) (-1
    without, or for -1, a common "unknown"). A field that does not parse is left out and named in
    `problems`, so the sample still serves what is usable (an image-only shard serves MAE; a
    labelled one with a Latin-1 caption serves its label). Without an image it is a ValueError."""
    image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if image is None:
        raise ValueError(f"no image member ({', '.join(IMAGE_KEYS)}); it has {', '.join(k for k in sample if k[:2] != '__')}")
    problems: List[str] = []
    caption = ""
    if "txt" in sample:
        try:
            caption = sample["txt"].decode("utf-8").strip()
        except UnicodeDecodeError as e:
            problems.append(f".txt is not UTF-8 ({e})")
    if not caption and "json" in sample:
        caption = _json_caption(sample["json"], problems)
    label = -1
    if "cls" in sample:
        text = sample["cls"].decode("ascii", "replace").strip()
        if text.isdigit() and int(text) < 2 ** 31:
            label = int(text)
        elif text != "-1":
            problems.append(f".cls must be an integer in [0, 2^31) (or -1: unknown), got {text[:40]!r}")
    return image, caption, label, problems


def _json_caption(raw: bytes, problems: List[str]) -> str:
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:  # syntax, encoding, a huge number, deep nesting
        problems.append(f".json does not parse ({type(e).__name__}: {str(e)[:120]})")
        return ""
    value = meta.get("caption", "") if isinstance(meta, dict) else None
    if not isinstance(value, str):
        problems.append(f'.json must be an object whose "caption" is a string, got {str(meta)[:60]!r}')
        return ""
    return value.strip()


class ShardLoader:
    def __init__(self, urls, batch_size: int, transform: TransformOptions, shuffle_buffer: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 2, drop_last: bool = True,
                 max_errors: int = 20, select: Optional[Callable[[str, int], Optional[str]]] = None):
        """`select(caption, label)` says why a sample cannot serve the task (None: it can), as
        webdataset's `select` filters: such a sample is skipped and reported where it is read,
        rather than failing the step that meets it hours into a run."""
        check_loader_args("ShardLoader", batch_size, rank, world_size)
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"ShardLoader: num_workers must be an integer >= 0, got {num_workers!r}")
        self.stream = ShardStream(urls, shuffle_buffer, seed, rank, world_size)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle = shuffle_buffer > 0
        self.drop_last, self.max_errors, self.select = drop_last, max_errors, select
        self.decode = _C.data.BatchDecoder(transform)
        self.num_workers = num_workers  # decoding runs on torch's intra-op threads (torch.set_num_threads)
        self.batches = 0  # consumed this epoch
        self.skipped, self.noted, self.errors = 0, 0, []

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
        check_resume("ShardLoader", state)
        for key in ("seed", "world_size", "batch_size", "shuffle"):
            if key in state and int(state[key]) != int(self.state_dict()[key]):
                raise ValueError(f"cannot resume: the saved loader had {key}={state[key]}, this one has "
                                 f"{self.state_dict()[key]}")
        self.stream.load_state_dict({"epoch": int(state["epoch"]), "position": int(state.get("position", 0))})
        self.batches = int(state["batches"])

    def counts(self) -> Dict[str, int]:
        """What the report says, as numbers (the trainer's summary.json sums them over ranks)."""
        return {"skipped_samples": self.skipped, "fields_left_out": self.noted - self.skipped,
                "shard_problems": len(self.stream.problems)}

    def report(self) -> str:
        if not self.noted and not self.stream.problems:
            return ""
        c = self.counts()
        lines = [f"{c['skipped_samples']} sample(s) skipped, {c['fields_left_out']} field(s) left out, "
                 f"{c['shard_problems']} shard problem(s):"]
        lines += [f"  {e}" for e in self.errors + self.stream.problems[: self.max_errors]]
        return "\n".join(lines)

    def _skip(self, message: str) -> None:
        self.skipped += 1
        self._note(message)

    def _note(self, message: str) -> None:
        """A problem for the report (a skipped sample, or a field left out of one)."""
        self.noted += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(message)

    def _load(self, chunk: List[Dict[str, Any]]):
        """(pixels [k, C, S, S], [(caption, label, key)] * k) of the samples that load: decoded
        and transformed in one C++ call on the intra-op threads; the others skipped, reported."""
        images, sources, seeds, meta = [], [], [], []
        for sample in chunk:
            where = f"{sample['__url__']}: {sample['__key__']}"
            try:
                image, caption, label, problems = sample_fields(sample)
            except ValueError as e:
                self._skip(f"{where}: {e}")
                continue
            for p in problems:
                self._note(f"{where}: {p}; the field is left out")
            reason = self.select(caption, label) if self.select else None
            if reason:
                self._skip(f"{where}: {reason}")
                continue
            images.append(image)
            sources.append(f"{sample['__url__']}:{sample['__key__']}")
            # augmentation draws seeded by (seed, epoch, key): the same sample, the same crop
            seeds.append(_C.data.sample_seed(self.seed, self.epoch, zlib.crc32(sample["__key__"].encode())))
            meta.append((caption, label, sample["__key__"]))
        if not images:
            return None, []
        pixels, rows, errors = self.decode(images, sources, seeds)
        for e in errors:
            self._skip(e)
        return pixels, [meta[r] for r in rows]

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        parts: List[torch.Tensor] = []
        metas: List[Any] = []
        it = iter(self.stream)
        while True:
            chunk = [s for _, s in zip(range(self.batch_size - len(metas)), it)]
            if not chunk:
                break
            pixels, meta = self._load(chunk)
            if meta:
                parts.append(pixels)
                metas += meta
            if len(metas) == self.batch_size:
                yield self._batch(parts, metas)
                parts, metas = [], []
        if metas and not self.drop_last:
            yield self._batch(parts, metas)

    def _batch(self, parts: List[torch.Tensor], metas: List[Any]) -> Dict[str, Any]:
        self.batches += 1
        captions, labels, keys = zip(*metas)
        # shards without captions (only .cls) leave them to the task (class-name templates)
        return {"pixel_values": parts[0] if len(parts) == 1 else torch.cat(parts),
                "captions": list(captions) if any(captions) else [],
                "labels": torch.tensor(labels, dtype=torch.long), "keys": list(keys)}
