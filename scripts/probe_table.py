"""The table of docs/results.md: linear-probe and k-NN accuracy on Fashion-MNIST of raw pixels and
of each pretrained encoder next to the same encoder at random init (`make results`, after
`make demo mim`). Prints Markdown.

    .venv/bin/python scripts/probe_table.py [--train 10000] [--test 10000]
"""
import argparse
import os
import sys

from tessera.eval.probe import run_probe

RUNS = [  # (encoder, pretraining, run folder)
    ("ViT 4x128 (MAE)", "MAE, pixels", "runs/demo-mae"),
    ("BEiT 4x128", "BEiT, VQ-KD tokens", "runs/demo-beit"),
    ("BEiT 4x128", "feature MIM, CLIP teacher", "runs/demo-mimf"),
    ("BEiT 3x128 (VQ-KD encoder)", "VQ-KD, CLIP teacher", "runs/demo-vqkd"),
    ("CLIP ViT 4x128 (teacher)", "CLIP, captions", "runs/demo"),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=10000)
    args = ap.parse_args()
    missing = [run for _, _, run in RUNS if not os.path.isdir(run)]
    if missing:
        print(f"missing runs {missing}: run `make demo mim` first", file=sys.stderr)
        return 2
    pix = run_probe("pixels", train_images=args.train, test_images=args.test)
    print(f"Fashion-MNIST, {args.train} training and {args.test} test images; accuracy in %.\n")
    print("| encoder | pretraining | linear probe | k-NN (k=20) | linear gain over random init | k-NN gain |")
    print("|---|---|---|---|---|---|")
    print(f"| raw pixels (784) | none (the floor) | {100 * pix['linear_probe']:.1f} | {100 * pix['knn']:.1f} | | |")
    for encoder, how, run in RUNS:
        r = {init: run_probe(run, init, train_images=args.train, test_images=args.test) for init in (True, False)}
        print(f"| {encoder} | random init | {100 * r[True]['linear_probe']:.1f} | {100 * r[True]['knn']:.1f} | | |")
        gain = [100 * (r[False][k] - r[True][k]) for k in ("linear_probe", "knn")]
        print(f"| {encoder} | {how} | {100 * r[False]['linear_probe']:.1f} | {100 * r[False]['knn']:.1f} | "
              f"{gain[0]:+.1f} | {gain[1]:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
