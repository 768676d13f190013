"""Writes webdataset tar shards, as img2dataset lays them out (`KEY.png|jpg|webp`, `KEY.txt` caption,
`KEY.cls` label), from Fashion-MNIST, an image folder (class subfolders) or a caption file
(.jsonl / .csv). The set is written into a temporary folder and moved in whole: a crash leaves
the earlier set as it was. Prints the brace pattern that reads them back.

    python -m tessera.data.shards OUT --fashion-mnist /usr/share/datasets/fashion-mnist [--split train]
    python -m tessera.data.shards OUT --captions train.jsonl --maxcount 10000
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import tarfile
import tempfile
from typing import Iterable, Iterator, Optional, Sequence, Tuple

from .. import _C
from ..cli_types import non_negative_int, positive_int
from ..io import is_regular_file, write_atomic

Sample = Tuple[str, Sequence[Tuple[str, bytes]]]  # key, [(extension, bytes)]


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: same input, same bytes
    tar.addfile(info, io.BytesIO(data))


def write_shards(out: str, samples: Iterable[Sample], maxcount: int = 10000, prefix: str = "") -> str:
    """Writes OUT/{prefix}{00000..}.tar with `maxcount` samples each; returns the brace pattern.
    The set is written into a folder inside OUT and moved in once whole, shard by shard over the
    earlier set's of the same names; the earlier set's other shards are removed last. A crash while
    writing leaves the earlier set as it was. The move is marked by OUT/.replacing-{prefix}, removed
    when it is done: a crash while moving leaves it, and readers refuse that prefix's set
    (`expand_urls`), which mixes two writes, until a write of the same prefix makes it whole."""
    if maxcount < 1:
        raise ValueError(f"maxcount must be >= 1, got {maxcount}")
    os.makedirs(out, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".partial-", dir=out)
    try:
        shard, count, tar = 0, 0, None
        for key, fields in samples:
            if tar is None or count == maxcount:
                if tar is not None:
                    tar.close()
                    shard += 1
                path = os.path.join(stage, f"{prefix}{shard:05d}.tar")
                tar, count = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT), 0
            for ext, data in fields:
                _member(tar, f"{key}.{ext}", data)
            count += 1
        if tar is None:
            raise ValueError("write_shards: no samples to write")
        tar.close()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    # Each new shard replaces the old one of its name atomically; then the earlier set's shards
    # beyond the new count go. Between the first move and the last removal the set mixes two
    # writes: the marker says so (it names the staging folder a crash leaves behind).
    marker = os.path.join(out, REPLACING + prefix)
    stale = _marked_stage(marker)
    write_atomic(marker, os.path.basename(stage))
    written = sorted(os.listdir(stage))
    for name in written:
        os.replace(os.path.join(stage, name), os.path.join(out, name))
    earlier = re.compile(re.escape(prefix) + r"\d{5,}\.tar(\.partial)?")
    for name in os.listdir(out):
        if earlier.fullmatch(name) and name not in written:
            os.remove(os.path.join(out, name))
    os.rmdir(stage)
    if stale:  # the crashed replace's leftover shards: this write made the set whole
        shutil.rmtree(os.path.join(out, stale), ignore_errors=True)
    os.remove(marker)
    return os.path.join(out, f"{prefix}{{00000..{shard:05d}}}.tar")


REPLACING = ".replacing-"


def _marked_stage(marker: str) -> str:
    """The staging folder an earlier, crashed replace named in `marker` ("" without one)."""
    try:
        with open(marker, encoding="utf-8") as f:
            name = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return name if name.startswith(".partial-") and "/" not in name else ""


def unfinished_replaces(folder: str) -> dict:
    """{prefix: marker} of the write_shards into `folder` that began replacing a set and did not
    finish (crashed, or running now): that prefix's set may mix two writes."""
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return {}
    return {n[len(REPLACING):]: os.path.join(folder, n) for n in names if n.startswith(REPLACING)}


def in_set(name: str, prefix: str) -> bool:
    """Whether shard file `name` belongs to the set write_shards writes under `prefix`."""
    return re.fullmatch(re.escape(prefix) + r"\d{5,}\.tar", name) is not None


def fashion_mnist_samples(root: str, split: str = "train", template: str = "a photo of a {}.",
                          limit: int = 0) -> Iterator[Sample]:
    from .datasets import FashionMNIST

    ds = FashionMNIST(root, split)
    n = min(len(ds), limit) if limit else len(ds)
    images, labels = ds.data, ds.targets
    for i in range(n):
        label = int(labels[i])
        png = _C.data.encode_png(images[i].unsqueeze(-1).expand(-1, -1, 3).contiguous())
        yield f"{split}-{i:05d}", [("png", png), ("txt", template.format(ds.classes[label].lower()).encode()),
                                   ("cls", str(label).encode())]


def file_samples(entries: Iterable[Tuple[str, Optional[str], Optional[int]]]) -> Iterator[Sample]:
    """(image path, caption or None, label or None) -> samples keyed by their order. Each file must
    be a JPEG, PNG or WebP by its header (a shard is data that travels: a listed file that is not an
    image, e.g. a path to a system file, is refused, not packed), stored under its kind's
    extension."""
    for i, (path, caption, label) in enumerate(entries):
        if not is_regular_file(path, f"entry {i}'s image"):  # a FIFO blocked the read, /dev/zero never ended
            raise FileNotFoundError(f"entry {i}: {path!r} not found")
        with open(path, "rb") as f:
            head = f.read(4096)  # the kind before the whole file
            kind = _C.data.image_info(head)[0]
            if kind not in ("jpeg", "png", "webp"):
                raise ValueError(f"entry {i}: {path!r} is not a JPEG, PNG or WebP image (it starts with "
                                 f"{head[:8].hex(' ')}); refusing to pack it into a shard")
            data = head + f.read()
        fields = [({"jpeg": "jpg"}.get(kind, kind), data)]
        if caption is not None:
            fields.append(("txt", caption.encode()))
        if label is not None:
            fields.append(("cls", str(label).encode()))
        yield f"{i:09d}", fields


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tessera.data.shards", description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--fashion-mnist", metavar="ROOT")
    src.add_argument("--image-folder", metavar="DIR")
    src.add_argument("--captions", metavar="FILE", help=".jsonl or .csv with image and caption")
    p.add_argument("--split", default="train", choices=["train", "test"], help="--fashion-mnist split")
    p.add_argument("--template", default="a photo of a {}.", help="caption of a class")
    p.add_argument("--limit", type=non_negative_int, default=0, help="at most this many samples (0: all)")
    p.add_argument("--maxcount", type=positive_int, default=10000, help="samples per shard")
    a = p.parse_args(argv)
    if a.fashion_mnist:
        samples = fashion_mnist_samples(a.fashion_mnist, a.split, a.template, a.limit)
    elif a.image_folder:
        from .datasets import ImageFolder

        ds = ImageFolder(a.image_folder)
        for name in ds.classes:  # listed as os lists it: bytes that are not UTF-8 as surrogates
            if any("\udc80" <= ch <= "\udcff" for ch in name):
                raise ValueError(f"{a.image_folder}: class folder {name!r} is not named in UTF-8; its caption "
                                 f"({a.template!r}) would not be text: rename the folder")
        rows = [(path, a.template.format(ds.classes[label]), label) for path, label in ds.samples]
        samples = file_samples(rows[: a.limit or None])
    else:
        from .datasets import CaptionDataset

        rows = [(path, caption, None) for path, caption in CaptionDataset(a.captions).entries]
        samples = file_samples(rows[: a.limit or None])
    print(write_shards(a.out, samples, a.maxcount, prefix=a.split + "-" if a.fashion_mnist else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
