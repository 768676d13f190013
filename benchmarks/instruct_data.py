"""LLaVA-size instruction data: time to the first batch and memory of the data side, against the
number of samples, and against tokenizing everything up front.

    python benchmarks/instruct_data.py [--samples 558128] [--small 10000] [--out /tmp/instruct-bench]

Writes two files in LLaVA-Pretrain's schema (blip_laion_cc_sbu_558k.json: a JSON list of
{"id", "image": "00453/004539375.jpg", "conversations": [human "<image>\\n<instruction>", gpt
"<caption>"]}), with LLaVA's pretraining instructions and generated captions; the images are a
pool of 1000 PNG files the samples share (the index checks each path, so what is measured is the
index, not the disk). Each measurement runs in a fresh process: the index built cold, then warm
(the cache beside the data), each to the first batch of 16 samples rendered with 576 image
tokens (LLaVA-1.5's 336 px / 14) and max_length 2048, pixels loaded. The data side's memory is
the process's peak RSS above its RSS after imports and the tokenizer. For the small file the
up-front way (`encode_samples`: every sample tokenized into padded int64 rows) is measured too.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = [ROOT.parent / "shared/assets/llama2c_tokenizer.model", ROOT / "runs/data/llava/tokenizer.model"]
INSTRUCTIONS = ["Describe the image concisely.", "Provide a brief description of the given image.",
                "Offer a succinct explanation of the picture presented.", "Summarize the visual content of the image.",
                "Give a short and clear explanation of the subsequent image.", "Share a concise interpretation of "
                "the image provided.", "Present a compact description of the photo's key features.",
                "Relay a brief, clear account of the picture shown.", "Render a clear and concise summary of the photo.",
                "Write a terse but informative summary of the picture.", "Create a compact narrative representing "
                "the image presented."]
WORDS = ("a photo of the red blue green black white small large old new wooden metal leather cotton shirt dress "
         "coat bag shoe boot sandal sneaker trouser pullover on sale for men women kids with pocket strap").split()


def write_data(folder: Path, samples: int, seed: int = 0) -> Path:
    path = folder / f"pretrain_{samples}.json"
    if path.exists():
        return path
    images = folder / "images"
    if not images.exists():
        import torch
        from tessera import _C

        for k in range(1000):
            (images / f"{k // 100:05d}").mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 255, (32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
            (images / f"{k // 100:05d}/{k:09d}.png").write_bytes(bytes(_C.data.encode_png(pixels)))
    rng = random.Random(seed)
    with open(path.with_suffix(".tmp"), "w") as f:
        f.write("[")
        for i in range(samples):
            k = rng.randrange(1000)
            question = rng.choice(INSTRUCTIONS)
            question = f"<image>\n{question}" if rng.random() < 0.5 else f"{question}\n<image>"
            caption = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 24)))
            sample = {"id": f"{i:09d}", "image": f"{k // 100:05d}/{k:09d}.png",
                      "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": caption}]}
            f.write(("," if i else "") + json.dumps(sample))
        f.write("]\n")
    os.replace(path.with_suffix(".tmp"), path)
    return path


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(data: str, tokenizer: str, upfront: bool) -> dict:
    """In this process: seconds and peak bytes above the post-import RSS, to the first batch."""
    from tessera import data as tdata
    from tessera.text import SentencePieceTokenizer
    from tessera.train.conversation_data import encode_samples, load_pixels, read_samples
    from tessera.train.conversation_index import ConversationSet, load_index
    from tessera.train.loaders import IndexLoader

    tok = SentencePieceTokenizer(tokenizer, special_tokens=["<image>"])
    image_id, image_tokens, max_length = tok.special_tokens["<image>"], 576, 2048
    transform = tdata.ImageTransform(tdata.clip_transform(336, train=False))
    images = os.path.join(os.path.dirname(os.path.abspath(data)), "images")
    base, start = rss(), time.perf_counter()
    if upfront:
        enc = encode_samples(read_samples(data), data, tok, "plain", image_id, image_tokens, max_length, images)
        rows = list(range(16))
        batch = {"input_ids": enc.input_ids[rows], "paths": [p for r in rows for p in enc.images[r]]}
    else:
        index = load_index(data, tok, "plain", image_id, image_tokens, max_length, images, log=lambda m: None)
        s = ConversationSet(index, tok, "plain", image_id, image_tokens, max_length, images)

        def fetch(rows):
            e = s.encoded(rows.tolist())
            return {"input_ids": e.input_ids, "paths": [p for paths in e.images for p in paths]}

        loader = IndexLoader(len(s), fetch, 16, group_lengths=index.modality_lengths)
        batch = next(iter(loader))
    pixels = load_pixels(batch["paths"], transform)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "data_bytes": max(0, peak - base), "batch": list(pixels.shape)}


def child(data: Path, tokenizer: str, upfront: bool = False) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", str(data), "--tokenizer", tokenizer]
                         + (["--upfront"] if upfront else []), capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    return json.loads(run.stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=558128)
    p.add_argument("--small", type=int, default=10000)
    p.add_argument("--out", default="/tmp/tessera-instruct-bench")
    p.add_argument("--tokenizer", default=next((str(t) for t in TOKENIZERS if t.exists()), ""))
    p.add_argument("--child")
    p.add_argument("--upfront", action="store_true")
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a.child, a.tokenizer, a.upfront)))
        return
    if not a.tokenizer:
        raise SystemExit("no SentencePiece tokenizer found: pass --tokenizer (or run make llava-stages)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"tokenizer {a.tokenizer}; {os.cpu_count()} CPUs")
    rows = {}
    for n in (a.small, a.samples):
        data = write_data(out, n)
        for stale in out.glob(f"{data.name}.tessera-index"):
            stale.unlink()
        rows[n] = {"bytes": data.stat().st_size, "cold": child(data, a.tokenizer), "warm": child(data, a.tokenizer)}
        if n == a.small:
            rows[n]["upfront"] = child(data, a.tokenizer, upfront=True)
    mib = 2 ** 20
    print(f"{'samples':>8} {'file MiB':>9} {'cold s':>8} {'warm s':>8} {'warm data MiB':>14} {'up-front s':>11} "
          f"{'up-front MiB':>13}")
    for n, r in rows.items():
        up = r.get("upfront")
        print(f"{n:>8} {r['bytes'] / mib:>9.1f} {r['cold']['seconds']:>8.1f} {r['warm']['seconds']:>8.2f} "
              f"{r['warm']['data_bytes'] / mib:>14.1f} " + (f"{up['seconds']:>11.1f} {up['data_bytes'] / mib:>13.1f}"
                                                             if up else f"{'-':>11} {'-':>13}"))
    small, big = rows[a.small]["warm"]["data_bytes"], rows[a.samples]["warm"]["data_bytes"]
    print(f"warm data-side memory, {a.samples} vs {a.small} samples: {big / max(small, 1):.2f}x "
          f"(goal <= 1.2x); time to the first batch with a warm index: {rows[a.samples]['warm']['seconds']:.1f} s "
          "(goal <= 60 s)")


if __name__ == "__main__":
    main()
