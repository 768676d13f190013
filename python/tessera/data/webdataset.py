"""Webdataset tar shards (what img2dataset and webdataset write; plain or gzip-compressed
`.tar.gz`), streamed by tessera's C++ tar reader: members grouped into samples by key (`KEY.jpg`, `KEY.txt`, `KEY.json`, `KEY.cls`),
shards dealt to ranks and loader workers, a bounded shuffle buffer, an exactly resumable
position, and damaged shards skipped and reported instead of stopping an epoch.

    stream = ShardStream("data/{00000..01023}.tar", shuffle_buffer=1000, seed=0, rank=r, world_size=n)
    for sample in stream:             # {"__key__", "__url__", "jpg": bytes, "txt": bytes, ...}
        ...
    stream.state_dict()               # {"epoch", "position"}: resume with load_state_dict

Memory holds the shard list, one member being read and the shuffle buffer, whatever the number
of shards. A resume replays the samples before its position from the plain tars' headers alone
(their bytes are seeked past, and read only for the samples served); gzip shards are
decompressed through.
"""
from __future__ import annotations

import numbers
import os
import random
import re
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Union

import torch.utils.data

from .. import _C
from .._warn import warn

# webdataset's rule (tariterators.base_plus_ext): the key is the path up to the first dot of the
# file name, the extension everything after it (lower-cased).
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's meta members (`__index__`): at the top only


def expand_urls(pattern: Union[str, Sequence[str]]) -> List[str]:
    """Shard paths from brace patterns (`data/{00000..01023}.tar`, `{a,b}/x.tar`), several joined
    by '::' or given as a list. Every listed file must exist; a pattern that matches none is an
    error naming it."""
    from braceexpand import braceexpand

    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    if not patterns:
        raise ValueError("no shard pattern given (an empty list)")
    urls: List[str] = []
    for p in (part for item in patterns for part in item.split("::")):
        expanded = list(braceexpand(p))
        present = [u for u in expanded if os.path.isfile(u)]
        if not present:
            glob = " (shard patterns take braces, not globs: data-{000..009}.tar)" if re.search(r"[*?[]", p) else ""
            raise ValueError(f"shard pattern {p!r} matches no file (first expanded: {expanded[0]!r}){glob}")
        if len(present) < len(expanded):
            missing = next(u for u in expanded if not os.path.isfile(u))
            what = "not a regular file" if os.path.exists(missing) else "missing"  # a folder, a FIFO
            raise ValueError(f"shard pattern {p!r}: {len(expanded) - len(present)} of {len(expanded)} shards are "
                             f"missing or not regular files, first {missing!r} ({what})")
        urls += present
    from .shards import in_set, unfinished_replaces

    markers = {folder: unfinished_replaces(folder) for folder in dict.fromkeys(os.path.dirname(u) for u in urls)}
    for url in urls:  # a write_shards that crashed while moving its shards in, or one running now
        folder, name = os.path.split(url)
        marker = next((m for p, m in markers[folder].items() if in_set(name, p)), None)
        if marker:
            raise ValueError(f"{url}: {marker} says a write of this set did not finish (or is running): the set may "
                             "mix two writes; write it again (which removes the marker)")
    seen, twice = set(), []
    for u in urls:
        real = os.path.realpath(u)
        if real in seen:
            twice.append(u)
        seen.add(real)
    if twice:  # overlapping ranges ({0..1}::{1..2}) read a shard twice an epoch; a mixture's weights say it aloud
        warn(f"shard list {patterns if len(patterns) > 1 else patterns[0]!r}: {len(twice)} shard(s) listed more than "
             f"once, first {twice[0]!r}; each is read as often as it is listed (to weight a source, give ShardLoader "
             "several sources and weights=)")
    return urls


class MemberRef(NamedTuple):
    """A member's bytes not read yet: where they lie in a plain tar (`headers_only` samples), and
    the shard file's identity when its headers were read (inode, size, mtime)."""
    offset: int
    size: int
    stamp: tuple


def _stamp(st: os.stat_result) -> tuple:
    return st.st_ino, st.st_size, st.st_mtime_ns


def tar_samples(url: str, problems: Optional[List[str]] = None, max_member_bytes: int = 1 << 30,
                headers_only: bool = False) -> Iterator[Dict[str, Any]]:
    """Samples of one shard in file order: consecutive members with one key form one sample.
    Damaged members and shards end in `problems` (a warning each when none is given). With
    `headers_only`, a plain tar's members come as MemberRef (read them with `read_members`); a
    gzip shard's come as bytes, since its stream is decompressed anyway."""
    stamp = _stamp(os.stat(url)) if headers_only else ()
    reader = _C.data.TarReader(url, max_member_bytes, headers_only)
    if headers_only and reader.compressed:
        reader = _C.data.TarReader(url, max_member_bytes)
        headers_only = False
    sample: Optional[Dict[str, Any]] = None
    done, again = set(), []  # keys whose sample has ended; those that came back after another key
    for name, data, offset, size in reader:
        if headers_only:
            data = MemberRef(offset, size, stamp)
        m = _KEY.match(name)
        if m is None or _META.match(name):
            continue
        key, ext = m.group(1), m.group(2).lower()
        if sample is None or sample["__key__"] != key:
            if sample is not None:
                done.add(sample["__key__"])
                yield sample
            if key in done:
                again.append(key)
            sample = {"__key__": key, "__url__": url}
        if ext in sample:
            _report(problems, f"{url}: member '{name}': a second '{ext}' for key '{key}'; the sample keeps the first")
            continue
        sample[ext] = data
    if sample is not None:
        yield sample
    if again:  # webdataset groups the same way, without a word: each part became a sample of its own
        _report(problems, f"{url}: {len(again)} key(s) come back after other keys, first '{again[0]}': a sample's "
                          "members must be adjacent (was the shard written sorted by extension, or appended to?); "
                          "each run of members was served as a sample of its own")
    for p in reader.problems:
        _report(problems, p)


_OPEN_SHARDS = 8  # a shuffle buffer serves from a few recent shards; the rest are closed


def read_members(sample: Dict[str, Any], files: Dict[str, Any]) -> Dict[str, Any]:
    """`sample` with its MemberRef values read from its shard. `files` keeps the most recently
    used shards open (at most 8; the caller closes what is left). A shard replaced since its
    headers were read is refused: its offsets would cut another file's bytes."""
    refs = {k: v for k, v in sample.items() if isinstance(v, MemberRef)}
    if not refs:
        return sample
    url = sample["__url__"]
    f = files.pop(url, None)
    if f is None:
        f = open(url, "rb")
        if _stamp(os.fstat(f.fileno())) != next(iter(refs.values())).stamp:
            f.close()
            raise ValueError(f"{url}: the shard changed on disk after a resume read its headers (rewritten during "
                             "the run?); restore it or start the epoch again")
        while len(files) >= _OPEN_SHARDS:
            files.pop(next(iter(files))).close()  # the least recently used
    files[url] = f  # most recently used last
    out = dict(sample)
    for ext, ref in refs.items():
        f.seek(ref.offset)
        data = f.read(ref.size)
        if len(data) != ref.size:  # the shard changed on disk after its headers were read
            raise ValueError(f"{url}: member '{sample['__key__']}.{ext}' holds {len(data)} of its {ref.size} bytes "
                             "now (was the shard rewritten during the run?)")
        out[ext] = data
    return out


def _report(problems: Optional[List[str]], message: str) -> None:
    """Each problem once: a loop left and entered again in one epoch replays the shards before its
    position, and a damaged shard read in each epoch is one damaged shard."""
    if problems is None:
        warn(message)
    elif message not in problems:
        problems.append(message)


class ShardStream(torch.utils.data.IterableDataset):
    """An iterable over the samples of `urls` for one rank (and, inside a torch DataLoader, one of
    its workers, where a damaged shard is a warning: `problems` lives in this process). Each epoch
    deals the shards, in an order shuffled by (seed, epoch) when `shuffle_buffer` > 0, to the
    global workers in turn; a buffer of `shuffle_buffer` samples mixes them (seeded by seed, epoch,
    rank, worker). The stream is deterministic, so a position
    (samples yielded this epoch) resumes exactly: the samples before it are replayed from the
    plain tars' headers (gzip shards are read through), nothing decoded. The position is counted where the stream is iterated: in this process
    (as ShardLoader does), not inside DataLoader workers, which iterate copies of it; a resumed
    position is therefore refused there rather than applied to each worker. A new loop continues
    where the last one stopped; after a pass that reached the epoch's end it starts the epoch over
    (a second `for` over a finished stream yielded nothing, and persistent DataLoader workers failed
    their second epoch on their own leftover position)."""

    def __init__(self, urls: Union[str, Sequence[str]], shuffle_buffer: int = 0, seed: int = 0, rank: int = 0,
                 world_size: int = 1, max_member_bytes: int = 1 << 30):
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.urls = expand_urls(urls)
        self.shuffle_buffer, self.seed, self.rank, self.world_size = shuffle_buffer, seed, rank, world_size
        self.max_member_bytes = max_member_bytes
        self.epoch, self.position, self.finished = 0, 0, False
        self.problems: List[str] = []

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch, self.position, self.finished = int(state["epoch"]), int(state["position"]), False

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position, self.finished = epoch, 0, False

    def shards(self, worker: int = 0, num_workers: int = 1) -> List[str]:
        """This rank's and worker's shards for the current epoch."""
        order = list(self.urls)
        if self.shuffle_buffer:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        slot, slots = self.rank * num_workers + worker, self.world_size * num_workers
        if len(order) < slots:
            warn(f"{len(order)} shards for {slots} readers (ranks x workers): some read nothing")
        return order[slot::slots]

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.finished:  # the last loop read the epoch to its end: this one reads it again
            self.position, self.finished = 0, False
        if info is not None and self.position:
            raise ValueError(f"ShardStream: position {self.position} cannot be resumed inside DataLoader workers "
                             "(each iterates its own copy, so the main process never counts what they served); "
                             "iterate the stream in one process (ShardLoader does) to resume mid-epoch")
        skip = self.position
        # A worker appends to its own copy of `problems`, which nobody reads: it warns instead.
        problems = self.problems if info is None else None
        # Resuming: the samples before the position are replayed from headers alone, and each
        # served one reads its bytes (a resume near an epoch's end re-read every byte before it).
        files: Dict[str, Any] = {}
        try:
            for i, sample in enumerate(self._samples(worker, num_workers, problems, headers_only=skip > 0)):
                if i < skip:
                    continue
                self.position = i + 1
                yield read_members(sample, files)
            self.finished = True
        finally:
            for f in files.values():
                f.close()

    def _samples(self, worker: int, num_workers: int, problems: Optional[List[str]],
                 headers_only: bool = False) -> Iterator[Dict[str, Any]]:
        stream = (s for url in self.shards(worker, num_workers)
                  for s in tar_samples(url, problems, self.max_member_bytes, headers_only))
        if not self.shuffle_buffer:
            yield from stream
            return
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}")
        buffer: List[Dict[str, Any]] = []
        for sample in stream:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer


def mix_weights(weights: Sequence[float], streams: int) -> List[float]:
    """One finite weight >= 0 per stream, with a positive finite sum (any real type: numpy's too)."""
    if len(weights) != streams or not streams:
        raise ValueError(f"a mix needs one weight per stream, got {streams} streams and {len(weights)} weights")
    if any(not isinstance(w, numbers.Real) or isinstance(w, bool) or not 0 <= w < float("inf") for w in weights) \
            or not 0 < sum(float(w) for w in weights) < float("inf"):
        raise ValueError(f"source weights must be finite numbers >= 0 with a positive sum, got {list(weights)}")
    return [float(w) for w in weights]


class MixedStream(torch.utils.data.IterableDataset):
    """Several sources' ShardStreams drawn sample by sample with `weights` (webdataset's
    RandomMix, open_clip's upsampling factors), an epoch ending when the first source runs out.
    The draws are seeded by (seed, epoch, rank), so a position (samples drawn this epoch) resumes
    exactly: the draws up to it are replayed without reading, and each source resumes at its own
    count. Like ShardStream, a loop after a finished epoch reads it again."""

    def __init__(self, sources: Sequence[Union[str, Sequence[str]]], weights: Sequence[float],
                 shuffle_buffer: int = 0, seed: int = 0, rank: int = 0, world_size: int = 1):
        if len(sources) < 2:
            raise ValueError(f"a mix needs two or more sources, one weight each: got {len(sources)} source(s)")
        self.weights = mix_weights(weights, len(sources))
        self.streams = [ShardStream(s, shuffle_buffer, seed, rank, world_size) for s in sources]
        self.problems: List[str] = []  # every source's, in the order they were met
        for stream in self.streams:
            stream.problems = self.problems
        self.seed, self.rank = seed, rank
        self.position, self.finished = 0, False

    @property
    def epoch(self) -> int:
        return self.streams[0].epoch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        for s in self.streams:
            s.set_epoch(int(state["epoch"]))
        self.position, self.finished = int(state["position"]), False

    def set_epoch(self, epoch: int) -> None:
        for s in self.streams:
            s.set_epoch(epoch)
        self.position, self.finished = 0, False

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        if self.finished:
            self.position, self.finished = 0, False
        rng = random.Random(f"mix:{self.seed}:{self.epoch}:{self.rank}")
        picks = range(len(self.streams))
        counts = [0] * len(self.streams)
        for _ in range(self.position):  # the draws already served: replayed, nothing read
            counts[rng.choices(picks, self.weights)[0]] += 1
        for s, n in zip(self.streams, counts):
            s.load_state_dict({"epoch": self.epoch, "position": n})
        its = [iter(s) for s in self.streams]
        while True:
            i = rng.choices(picks, self.weights)[0]
            try:
                sample = next(its[i])
            except StopIteration:
                if counts[i] == 0 and self.weights[i] > 0:  # the mix would end before it began
                    raise ValueError(f"source {i} of the mix ({', '.join(self.streams[i].urls[:2])}"
                                     f"{', ...' if len(self.streams[i].urls) > 2 else ''}) serves rank {self.rank} no "
                                     f"sample in epoch {self.epoch}: it needs at least one shard per rank holding "
                                     "samples") from None
                self.finished = True
                return
            counts[i] += 1
            self.position += 1
            yield sample


def mix(streams: Sequence[Any], weights: Sequence[float], seed: int = 0) -> Iterator[Dict[str, Any]]:
    """Samples drawn from several streams with the given weights until the first runs out
    (webdataset's RandomMix). It keeps no position: a resumed mix draws again from the streams'
    resumed positions with a fresh sequence of choices. MixedStream (what ShardLoader's `weights`
    and a recipe's `data.source_weights` use) resumes exactly."""
    weights = mix_weights(weights, len(streams))
    rng = random.Random(seed)
    its = [iter(s) for s in streams]
    while True:
        i = rng.choices(range(len(its)), weights)[0]
        try:
            yield next(its[i])
        except StopIteration:
            return
