"""Images per second of tessera.data.DataLoader vs torchvision ImageFolder + torch DataLoader.

Same files, same transforms, same worker count, same batch size; rates and the ratio printed.

    python benchmarks/data_pipeline.py [--n 2000] [--workers 2] [--batch 64] [--epochs 3]

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


def torchvision_loader(root: Path, train: bool, workers: int, batch: int):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    from tessera.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    bicubic = T.InterpolationMode.BICUBIC
    geometry = ([T.RandomResizedCrop(224, interpolation=bicubic), T.RandomHorizontalFlip()] if train
                else [T.Resize(224, interpolation=bicubic), T.CenterCrop(224)])
    transform = T.Compose(geometry + [T.ToTensor(), T.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])
    return torch.utils.data.DataLoader(
        ImageFolder(str(root), transform=transform), batch_size=batch, shuffle=True,
        num_workers=workers, drop_last=True, persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def tessera_loader(root: Path, train: bool, workers: int, batch: int):
    import tessera.data as td

    return td.DataLoader(td.ImageFolder(root), batch_size=batch, shuffle=True, num_workers=workers,
                         drop_last=True, transform=td.clip_transform(224, train=train))


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
