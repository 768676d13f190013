"""Batches from webdataset shards for the trainer, with the native loader's interface (epochs,
an exact mid-epoch position, skipped samples reported): the shards stream through ShardStream,
each batch's images decode and transform in one C++ call on torch's intra-op threads
(`_C.data.BatchDecoder`, reusing its batch buffers), and a sample whose image is missing or undecodable is skipped, counted
and reported.

    loader = ShardLoader("shards/train-{00000..00059}.tar", batch_size=256, transform=clip_transform(28),
                         shuffle_buffer=2000, seed=0, rank=rank, world_size=world)
    for batch in loader: ...          # {"pixel_values", "labels", "captions", "keys"}

A thread reads and decodes up to `prefetch` batches ahead while the step runs (pinned when CUDA
is present, so the copy to the GPU can overlap); the position saved is the last batch handed out,
never one still waiting in the queue, so a resume is as exact as without read-ahead.
"""
from __future__ import annotations

import atexit
import json
import queue
import threading
import time
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .. import _C
from .._warn import warn
from .transforms import TransformOptions
from .loader_checks import check_loader_args, check_resume
from .webdataset import MixedStream, ShardStream

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")

STOP_WAIT_S = 30  # a batch decodes in well under that; a hung file system is not waited out

# Read-ahead threads still running: (stop event, thread). A daemon thread inside BatchDecoder
# (GIL released) that asks for the GIL back once the interpreter finalizes is ended mid-C++ and
# aborts the process ("terminate called without an active exception"), so a loop left by an
# exception (Ctrl-C, a failing step) is stopped before that, at exit.
_READERS: set = set()


@atexit.register
def _stop_readers() -> None:
    for stop, thread in list(_READERS):
        stop.set()
        thread.join(timeout=STOP_WAIT_S)


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
                 max_errors: int = 20, select: Optional[Callable[[str, int], Optional[str]]] = None,
                 prefetch: int = 2, pin_memory: bool = True, weights: Optional[Sequence[float]] = None):
        """`select(caption, label)` says why a sample cannot serve the task (None: it can), as
        webdataset's `select` filters: such a sample is skipped and reported where it is read,
        rather than failing the step that meets it hours into a run. `prefetch`: batches read
        ahead on a thread (0: each batch read when asked for). `weights`: one per source of `urls`
        (a list of patterns, or patterns joined by '::'), drawn sample by sample as webdataset's
        RandomMix draws them (an epoch ends when a source runs out); without, the sources' shards
        are one set. `num_workers`: at most this many of torch's intra-op threads decode and
        transform each batch (0: the reading thread alone); tar bytes are read by one thread per
        rank, ahead of the step (`prefetch`)."""
        check_loader_args("ShardLoader", batch_size, rank, world_size)
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"ShardLoader: num_workers must be an integer >= 0, got {num_workers!r}")
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise ValueError(f"ShardLoader: prefetch must be an integer >= 0, got {prefetch!r}")
        self.prefetch, self.pin = prefetch, pin_memory and torch.cuda.is_available()
        if weights is None:
            self.stream = ShardStream(urls, shuffle_buffer, seed, rank, world_size)
        else:
            sources = urls.split("::") if isinstance(urls, str) else list(urls)
            self.stream = MixedStream(sources, weights, shuffle_buffer, seed, rank, world_size)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle = shuffle_buffer > 0
        self.drop_last, self.max_errors, self.select = drop_last, max_errors, select
        # At most num_workers of torch's intra-op threads decode a batch (0: the reading thread
        # alone): C++ threads without the GIL, as the native loader's num_workers.
        self.decode = _C.data.BatchDecoder(transform, 4, num_workers)
        self.num_workers = num_workers
        self.batches = 0  # consumed this epoch
        self.skipped, self.noted, self.errors = 0, 0, []
        self.handed = self._state()  # the position and counts as of the last batch handed out
        self._finished = False  # the epoch was read to its end: the next loop reads it again
        self._loop: Optional[object] = None  # the open loop without read-ahead (a later one ends it)
        self._reader: Optional[Tuple[threading.Event, "queue.Queue", threading.Thread]] = None

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.stream.epoch:
            self.stop()
            self.stream.set_epoch(epoch)
            self.batches = 0
            self.handed = self._state()
        self._finished = False

    def _restart_finished_epoch(self) -> None:
        """A loop over a finished epoch reads it again from its start, as torch's DataLoader and
        tessera's own do (it yielded nothing before: a notebook's second epoch trained on nothing)."""
        if self._finished:
            self.stop()
            self.stream.load_state_dict({"epoch": self.epoch, "position": 0})
            self.batches, self._finished = 0, False
            self.handed = self._state()

    def stop(self) -> None:
        """Ends the read-ahead thread, if one runs, and puts the stream back where the last batch
        handed out left it: what was read ahead is read again by the next loop (one left early
        lost it), and its problems no longer count. A loop still open on the loader ends."""
        reader, self._reader = self._reader, None
        if reader is None:
            return
        stop, ready, thread = reader
        stop.set()
        _READERS.discard((stop, thread))
        deadline = time.monotonic() + STOP_WAIT_S
        while thread.is_alive():
            if time.monotonic() > deadline:  # a read that hangs (a stalled file system) is not waited out
                warn(f"the shard loader's read-ahead thread did not stop within {STOP_WAIT_S} s (a read that "
                     "hangs?); it is left behind, and the loader's position is not restored")
                return
            try:
                ready.get(timeout=0.05)  # unblock a put() waiting on a full queue
            except queue.Empty:
                pass
        self._rewind()

    def _rewind(self) -> None:
        """The stream back where the last batch handed out left it (what was read past it is read
        again by the next loop, and its problems no longer count)."""
        h = self.handed
        self.stream.load_state_dict({"epoch": self.epoch, "position": h["position"]})
        self.skipped, self.noted = h["skipped"], h["noted"]
        del self.errors[h["errors"]:]
        del self.stream.problems[h["problems"]:]

    def state_dict(self) -> Dict[str, int]:
        state = {"epoch": self.epoch, "batches": self.batches, "seed": self.seed, "rank": self.rank,
                 "world_size": self.world_size, "batch_size": self.batch_size, "shuffle": int(self.shuffle),
                 "position": self.handed["position"]}
        if isinstance(self.stream, MixedStream):  # the draws replayed on resume depend on them
            state["weights"] = list(self.stream.weights)
        return state

    def load_state_dict(self, state: Dict[str, int]) -> None:
        check_resume("ShardLoader", state)
        for key in ("seed", "world_size", "batch_size", "shuffle"):
            if key in state and int(state[key]) != int(self.state_dict()[key]):
                raise ValueError(f"cannot resume: the saved loader had {key}={state[key]}, this one has "
                                 f"{self.state_dict()[key]}")
        mine = self.state_dict().get("weights")
        if state.get("weights") != mine and (mine is not None or state.get("weights") is not None):
            raise ValueError(f"cannot resume: the saved loader drew its sources with weights {state.get('weights')}, "
                             f"this one with {mine}: the replayed draws would serve other samples")
        self.stop()
        self.stream.load_state_dict({"epoch": int(state["epoch"]), "position": int(state.get("position", 0))})
        self.batches = int(state["batches"])
        self.handed, self._finished = self._state(), False

    def counts(self) -> Dict[str, int]:
        """What the report says, as numbers (the trainer's summary.json sums them over ranks): up
        to the last batch handed out, not the ones read ahead."""
        h = self.handed
        return {"skipped_samples": h["skipped"], "fields_left_out": h["noted"] - h["skipped"],
                "shard_problems": h["problems"]}

    def report(self) -> str:
        c = self.counts()
        if not any(c.values()):
            return ""
        lines = [f"{c['skipped_samples']} sample(s) skipped, {c['fields_left_out']} field(s) left out, "
                 f"{c['shard_problems']} shard problem(s):"]
        h = self.handed
        lines += [f"  {e}" for e in self.errors[:h["errors"]] + self.stream.problems[:h["problems"]][: self.max_errors]]
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
        self._restart_finished_epoch()
        if not self.prefetch:
            # A new loop ends an earlier one still open (as with read-ahead) and serves the batch
            # that one read ahead: each batch is handed out once.
            self._rewind()
            self._loop = loop = object()
            done = False
            try:
                for batch, state in self._produce():
                    if self._loop is not loop:  # a later loop took over the stream
                        return
                    yield self._hand(batch, state)
                done = True
            finally:  # left early: the batch read ahead is read again by the next loop
                if not done and self._loop is loop:
                    self._rewind()
            self.handed, self._finished = self._state(), True
            return
        self.stop()
        stop, ready = threading.Event(), queue.Queue(self.prefetch)
        thread = threading.Thread(target=self._read_ahead, args=(stop, ready), daemon=True,
                                  name="tessera-shard-loader")
        self._reader = reader = (stop, ready, thread)
        _READERS.add((stop, thread))
        thread.start()
        try:
            while True:
                try:
                    batch, state = ready.get(timeout=0.1)
                except queue.Empty:
                    if self._reader is not reader:  # stopped: load_state_dict, stop() or another loop
                        return
                    continue
                if isinstance(batch, BaseException):
                    raise batch
                if batch is None:  # the epoch's end: its last counts
                    self.handed, self._finished = state, True
                    return
                yield self._hand(batch, state)
        finally:  # the epoch ended, or the consumer stopped early (the run's last step)
            if self._reader is reader:
                self.stop()

    def _read_ahead(self, stop: threading.Event, ready: "queue.Queue") -> None:
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False
        try:
            for item in self._produce():
                if not put(item):
                    return
            put((None, self._state()))
        except BaseException as e:  # noqa: BLE001 - raised again where the batch was asked for
            put((e, None))

    def _produce(self) -> Iterator[Tuple[Dict[str, Any], Dict[str, int]]]:
        """(batch, the stream's position and counts once it is read) for this epoch's batches, the
        last one's marked `end`: one batch is read ahead to know, so that a consumer that stops at
        the last batch (`zip(range(n), loader)`) still finishes the epoch."""
        held = None
        for item in self._batches():
            if held is not None:
                yield held
            held = item
        if held is not None:
            yield held[0], {**held[1], "end": True}

    def _batches(self) -> Iterator[Tuple[Dict[str, Any], Dict[str, int]]]:
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
                yield self._batch(parts, metas), self._state()
                parts, metas = [], []
        if metas and not self.drop_last:
            yield self._batch(parts, metas), self._state()

    def _state(self) -> Dict[str, int]:
        return {"position": self.stream.position, "skipped": self.skipped, "noted": self.noted,
                "errors": len(self.errors), "problems": len(self.stream.problems)}

    def _hand(self, batch: Dict[str, Any], state: Dict[str, int]) -> Dict[str, Any]:
        self.batches += 1
        self.handed = state
        self._finished = bool(state.get("end"))
        return batch

    def _batch(self, parts: List[torch.Tensor], metas: List[Any]) -> Dict[str, Any]:
        captions, labels, keys = zip(*metas)
        pixels = parts[0] if len(parts) == 1 else torch.cat(parts)
        # shards without captions (only .cls) leave them to the task (class-name templates)
        return {"pixel_values": pixels.pin_memory() if self.pin else pixels,
                "captions": list(captions) if any(captions) else [],
                "labels": torch.tensor(labels, dtype=torch.long), "keys": list(keys)}
