"""How long a training step waits for shard data while the device is busy, tessera's ShardLoader
(read ahead on a thread, or each batch read when asked for) against the webdataset package in a
torch DataLoader (its worker processes prefetch), in one run.

    python benchmarks/shard_overlap.py [--n 1280] [--batch 64] [--step-ms 60] [--steps 15]

The step is a sleep (a GPU busy with the step, the host idle): what a loader costs is the time
spent waiting in next(). Fashion-MNIST test images in shards of 320, CLIP's 224 px eval pipeline,
2 workers for the reference (ShardLoader decodes on torch's intra-op threads).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

FMNIST = "/usr/share/datasets/fashion-mnist"


def waited(loader, steps: int, step_s: float) -> float:
    """Fraction of the steps' wall time spent waiting for the next batch (after one warm batch)."""
    it = iter(loader)
    next(it)
    start, wait = time.perf_counter(), 0.0
    for _ in range(steps):
        t = time.perf_counter()
        next(it)
        wait += time.perf_counter() - t
        time.sleep(step_s)
    return wait / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1280)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--step-ms", type=float, default=60)
    p.add_argument("--steps", type=int, default=15)
    a = p.parse_args()
    import torchvision.transforms as T
    import webdataset as wds

    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader
    from tessera.data.shards import fashion_mnist_samples, write_shards

    torch.set_num_threads(2)
    print(f"cpu: {os.cpu_count()} cores; batch {a.batch}, step {a.step_ms:.0f} ms, {a.steps} steps")
    with tempfile.TemporaryDirectory() as d:
        pattern = write_shards(d, fashion_mnist_samples(FMNIST, "test", limit=a.n), maxcount=320)
        step = a.step_ms / 1000
        rows = []
        for name, prefetch in (("ShardLoader, read ahead (prefetch 2)", 2), ("ShardLoader, read when asked", 0)):
            loader = ShardLoader(pattern, a.batch, clip_transform(224), prefetch=prefetch)
            rows.append((name, waited(loader, a.steps, step)))
            loader.stop()
        mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        pipeline = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                              T.ToTensor(), T.Normalize(mean, std)])
        urls = wds.shardlists.expand_urls(pattern)
        ds = (wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node)
              .decode("pil").to_tuple("png", "cls").map_tuple(lambda im: pipeline(im.convert("RGB")), int)
              .batched(a.batch))
        ref = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, prefetch_factor=2)
        rows.append(("webdataset + DataLoader (2 workers)", waited(ref, a.steps, step)))
    ref_wait = rows[-1][1]
    for name, w in rows:
        print(f"{name:38s} waits {100 * w:5.1f} % of the time"
              + ("" if name.startswith("webdataset") else f"  (reference {100 * ref_wait:.1f} %)"))


if __name__ == "__main__":
    main()
