"""Images per second of tessera's loaders vs torchvision and webdataset.

Same files, same transforms, same worker count, same batch size; rates and the ratio printed.

    python benchmarks/data_pipeline.py [--n 2000] [--workers 2] [--batch 64] [--epochs 3]

Two comparisons: an image folder (tessera.data.DataLoader vs torchvision ImageFolder in a torch
DataLoader), and webdataset tar shards of the same JPEGs, 500 samples per shard (tessera's
ShardLoader, C++ tar reader and decoder on a thread pool, vs the `webdataset` package's
WebDataset -> decode("pil") -> torchvision transform in a torch DataLoader with the same workers,
each worker reading its own shards); the same shards gzip-compressed (.tar.gz) once more, eval only.

The images are Fashion-MNIST test images upscaled (bicubic) to 256 x 256 RGB and written as
JPEG (quality 90) in an ImageFolder layout (one folder per class) in a temporary folder. Both
loaders run CLIP's 224 px pipelines at batch size 64:

* eval:  Resize(224, bicubic) -> CenterCrop(224) -> ToTensor -> Normalize(CLIP mean/std)
* train: RandomResizedCrop(224, bicubic) -> RandomHorizontalFlip -> ToTensor -> Normalize

torchvision decodes with PIL in `workers` processes (persistent_workers=True, so worker start-up
is paid once, in the warm-up epoch); tessera decodes with OpenCV in `workers` C++ threads.
Each loader runs one untimed warm-up epoch, then the best of `epochs` timed epochs counts.
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def write_images(root: Path, n: int, size: int = 256) -> None:
    from PIL import Image

    with gzip.open(FMNIST / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)
    with gzip.open(FMNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read()[8:], np.uint8)
    for i in range(n):
        k = i % len(images)
        folder = root / f"class{labels[k]}"
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(images[k]).resize((size, size), Image.BICUBIC).convert("RGB")
        img.save(folder / f"{i:06d}.jpg", quality=90)


def epoch_rate(loader, epochs: int) -> float:
    """Best images/s over `epochs` full epochs, after one untimed warm-up epoch."""
    best = float("inf")
    n = 0
    for epoch in range(epochs + 1):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        start = time.perf_counter()
        n = 0
        for batch in loader:
            pixels = batch["pixel_values"] if isinstance(batch, dict) else batch[0]
            n += pixels.shape[0]
        if epoch > 0:
            best = min(best, time.perf_counter() - start)
    return n / best


def torchvision_transform(train: bool):
    import torchvision.transforms as T

    from tessera.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    bicubic = T.InterpolationMode.BICUBIC
    geometry = ([T.RandomResizedCrop(224, interpolation=bicubic), T.RandomHorizontalFlip()] if train
                else [T.Resize(224, interpolation=bicubic), T.CenterCrop(224)])
    return T.Compose(geometry + [T.ToTensor(), T.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])


def torchvision_loader(root: Path, train: bool, workers: int, batch: int):
    from torchvision.datasets import ImageFolder

    return torch.utils.data.DataLoader(
        ImageFolder(str(root), transform=torchvision_transform(train)), batch_size=batch, shuffle=True,
        num_workers=workers, drop_last=True, persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def tessera_loader(root: Path, train: bool, workers: int, batch: int):
    import tessera.data as td

    return td.DataLoader(td.ImageFolder(root), batch_size=batch, shuffle=True, num_workers=workers,
                         drop_last=True, transform=td.clip_transform(224, train=train))


def write_shards(root: Path, out: Path) -> str:
    from tessera.data.shards import file_samples, write_shards as write

    files = sorted(root.glob("class*/*.jpg"))
    entries = [(str(f), None, int(f.parent.name[len("class"):])) for f in files]
    return write(str(out), file_samples(entries), maxcount=500)


def gzip_copies(folder: Path) -> list:
    """Each shard of `folder` compressed beside it (.tar.gz, as some datasets ship them)."""
    import gzip

    out = []
    for shard in sorted(folder.glob("*.tar")):
        out.append(str(shard) + ".gz")
        Path(out[-1]).write_bytes(gzip.compress(shard.read_bytes(), compresslevel=6))
    return out


def webdataset_loader(urls, train: bool, workers: int, batch: int):
    import webdataset as wds

    tv = torchvision_transform(train)
    dataset = (wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
               .to_tuple("jpg", "cls").map_tuple(tv, lambda c: c))
    return torch.utils.data.DataLoader(dataset.batched(batch, partial=False), batch_size=None,
                                       num_workers=workers, persistent_workers=workers > 0)


def shard_loader(urls, train: bool, workers: int, batch: int):
    import tessera.data as td
    from tessera.data.shard_loader import ShardLoader

    return ShardLoader(urls, batch, td.clip_transform(224, train=train), num_workers=workers)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="JPEG files to write")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (best counts)")
    args = p.parse_args()
    if not (FMNIST / "t10k-images-idx3-ubyte.gz").exists():
        print(f"needs Fashion-MNIST in {FMNIST}", file=sys.stderr)
        return 1
    import tessera.data as td

    if not td.image_decode_available():
        print("tessera was built without OpenCV: nothing to compare", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; "
          f"{args.n} JPEGs 256x256, batch {args.batch}, {args.workers} workers")
    with tempfile.TemporaryDirectory(prefix="tessera_bench_") as tmp:
        root = Path(tmp)
        write_images(root, args.n)
        for train in (False, True):
            name = "train" if train else "eval"
            tv = epoch_rate(torchvision_loader(root, train, args.workers, args.batch), args.epochs)
            ts = epoch_rate(tessera_loader(root, train, args.workers, args.batch), args.epochs)
            print(f"{name:5s}  torchvision+PIL {tv:8.0f} img/s   tessera {ts:8.0f} img/s   ratio {ts / tv:5.2f}x")
        urls = write_shards(root, root / "shards")
        for train in (False, True):
            name = "train" if train else "eval"
            wd = epoch_rate(webdataset_loader(urls, train, args.workers, args.batch), args.epochs)
            ts = epoch_rate(shard_loader(urls, train, args.workers, args.batch), args.epochs)
            print(f"{name:5s}  shards: webdataset+PIL {wd:8.0f} img/s   tessera {ts:8.0f} img/s   "
                  f"ratio {ts / wd:5.2f}x")
        packed = gzip_copies(root / "shards")
        wd = epoch_rate(webdataset_loader(packed, False, args.workers, args.batch), args.epochs)
        ts = epoch_rate(shard_loader(packed, False, args.workers, args.batch), args.epochs)
        print(f"eval   .tar.gz shards: webdataset+PIL {wd:8.0f} img/s   tessera {ts:8.0f} img/s   "
              f"ratio {ts / wd:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
