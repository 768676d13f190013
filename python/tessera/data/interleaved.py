"""Embedded interleaved image-text data for Sugar (arXiv 2411.00304): sequences of 2-4
Fashion-MNIST items, each with a short sentence, and Winoground-style minimal pairs of shape
scenes whose two shapes swap colours ("A red circle and a blue square." / "A blue circle and a
red square."), drawn with instruct's OpenCV scene code. Deterministic from a seed; held-out
sequences use Fashion-MNIST's test split, and no held-out scene is drawn for training pixel for
pixel. Its captions are not new: they name kinds and colours only (72 captions in all), and every
one of them also captions training scenes, so the pairs test binding on unseen images, not on
unseen combinations of words.

    OUT/images/fashion/{train,test}/NNNNN.png   one image per item, in one sequence only
    OUT/images/scenes/train/NNNNN-{a,b}.png     training scenes, drawn in swapped pairs too
    OUT/images/pairs/NNNNN-{a,b}.png            held-out minimal pairs
    OUT/train.jsonl     {"id", "kind", "segments": [{"image": path} | {"text": str}, ...]}; the first
                        `single_modality` sequences also as their images alone and their sentences
                        alone (kinds fashion_images, fashion_texts), the layouts that sequence
                        retrieval compares: a model trained on interleaved layouts only never
                        relates an image run to a sentence run (docs/results.md)
    OUT/heldout.jsonl   the same format, Fashion-MNIST test items only
    OUT/pairs.jsonl     {"id", "kind", "swapped", "images": [a, b], "captions": [a, b]};
                        caption i describes image i, the other image differs only in the swap
    OUT/manifest.json

No tokenizer is written: every sentence uses the words of the instruction data's corpus (item
names, colours, shape names, "A photo of", "The item is", "and"), so the data is read with that
set's tokenizer.model, the vocabulary of the LLaVA runs a Sugar run continues.

    python -m tessera.data.interleaved OUT [--sequences 4000] [--single-modality 1000] [--pairs 200] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from typing import Dict, List, Tuple

from ..cli_types import non_negative_int
from .manifest import ensure_generated, staged
from ..io import write_atomic, write_json
from ..schema import require
from .datasets import FASHION_MNIST_ROOT, FashionMNIST
from .instruct import COLOURS, FASHION_NAMES, KINDS, cell_centre, draw_scene, with_article, write_png

VERSION = 2  # 2: single-modality renderings of training sequences
SENTENCES = ["A photo of {a}.", "{A}.", "The item is {a}."]
MAX_REDRAWS = 1000  # a held-out scene redrawn more often than this: the scene space is exhausted

Shape = Tuple[str, str, int, int, int]  # kind, colour name, cx, cy, size


def two_shape_scene(rng: random.Random) -> List[Shape]:
    """Two shapes of different kinds and different colours in two quadrants, in reading order."""
    cells = sorted(rng.sample(range(4), 2))
    kinds = rng.sample(KINDS, 2)
    colours = rng.sample(list(COLOURS), 2)
    return [(kind, colour, *cell_centre(cell, rng), rng.randint(4, 5))
            for cell, kind, colour in zip(cells, kinds, colours)]


def swap_colours(shapes: List[Shape]) -> List[Shape]:
    """The same shapes in the same places, their colours exchanged: the scene's minimal pair."""
    (k0, c0, *rest0), (k1, c1, *rest1) = shapes
    return [(k0, c1, *rest0), (k1, c0, *rest1)]


def scene_caption(shapes: List[Shape]) -> str:
    return " and ".join(f"a {colour} {kind}" for kind, colour, *_ in shapes).capitalize() + "."


def item_sentence(label: int, rng: random.Random) -> str:
    a = with_article(FASHION_NAMES[label])
    return rng.choice(SENTENCES).format(a=a, A=a.capitalize())


def single_modality_renderings(samples: List[Dict], count: int) -> List[Dict]:
    """The first `count` sequences of `samples` rendered twice more: their images alone, in order,
    and their sentences alone."""
    out = []
    for s in samples[:count]:
        for kind in ("image", "text"):
            out.append({"id": f"{s['id']}-{kind}s", "kind": f"fashion_{kind}s",
                        "segments": [seg for seg in s["segments"] if kind in seg]})
    return out


def fashion_sequences(ds: FashionMNIST, count: int, split: str, rng: random.Random, out: str) -> List[Dict]:
    """`count` sequences of 2-4 distinct items of `ds`; each item an image and its sentence, the
    image first or the sentence first (one order per sequence)."""
    lengths = [rng.randint(2, 4) for _ in range(count)]
    if sum(lengths) > len(ds):
        raise ValueError(f"{count} {split} sequences need {sum(lengths)} Fashion-MNIST images; the split has {len(ds)}")
    picks = rng.sample(range(len(ds)), sum(lengths))  # each image in one sequence only
    os.makedirs(os.path.join(out, "images", "fashion", split), exist_ok=True)
    samples, used = [], 0
    for s, n in enumerate(lengths):
        image_first = rng.random() < 0.5
        segments = []
        for index in picks[used:used + n]:
            rel = f"images/fashion/{split}/{used:05d}.png"
            write_png(os.path.join(out, rel), ds.data[index])
            used += 1
            pair = [{"image": rel}, {"text": item_sentence(int(ds.targets[index]), rng)}]
            segments += pair if image_first else pair[::-1]
        samples.append({"id": f"fashion-{split}-{s:05d}", "kind": "fashion_sequence", "segments": segments})
    return samples


def _draw_new(rng: random.Random, taken: set) -> List[Shape]:
    """A scene whose pair (it and its swap) is not in `taken`; both are added to it."""
    for _ in range(MAX_REDRAWS):
        shapes = two_shape_scene(rng)
        if tuple(shapes) not in taken and tuple(swap_colours(shapes)) not in taken:
            taken.update({tuple(shapes), tuple(swap_colours(shapes))})
            return shapes
    raise ValueError(f"no new two-shape scene in {MAX_REDRAWS} draws: ask for fewer scenes or pairs")


def scene_pairs(count: int, rng: random.Random, taken: set, out: str, folder: str, prefix: str) -> List[Tuple]:
    """`count` minimal pairs drawn to `out/folder`: (id, [path a, path b], [caption a, caption b])."""
    os.makedirs(os.path.join(out, folder), exist_ok=True)
    pairs = []
    for i in range(count):
        a = _draw_new(rng, taken)
        paths, captions = [], []
        for side, shapes in (("a", a), ("b", swap_colours(a))):
            rel = f"{folder}/{i:05d}-{side}.png"
            write_png(os.path.join(out, rel), draw_scene(shapes))
            paths.append(rel)
            captions.append(scene_caption(shapes))
        pairs.append((f"{prefix}-{i:05d}", paths, captions))
    return pairs


def _jsonl(path: str, records: List[Dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def generate(out: str, sequences: int = 4000, scenes: int = 1000, heldout_sequences: int = 500, pairs: int = 200,
             seed: int = 0, root: str = FASHION_MNIST_ROOT, single_modality: int = 1000) -> Dict:
    """Writes the data set to `out` (through a temporary folder renamed at the end). `scenes`
    training scene pairs give 2 * scenes one-image samples; the first min(single_modality,
    sequences) training sequences give two single-modality samples each. Returns the manifest;
    same arguments, same bytes."""
    for name, value in (("sequences", sequences), ("scenes", scenes), ("heldout_sequences", heldout_sequences),
                        ("pairs", pairs), ("seed", seed), ("single_modality", single_modality)):
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"interleaved data: {name} must be an integer >= 0, got {value!r}")
    require(sequences + scenes > 0, "interleaved data: sequences + scenes must be > 0 (no training sample otherwise)")
    args = dict(generator="tessera.data.interleaved", version=VERSION, sequences=sequences, scenes=scenes, heldout_sequences=heldout_sequences,
                pairs=pairs, seed=seed, root=os.path.abspath(root), single_modality=single_modality)
    with staged(out, "tessera.data.interleaved") as tmp:
        rng = random.Random(seed)
        train = fashion_sequences(FashionMNIST(root, "train"), sequences, "train", rng, tmp)
        heldout = fashion_sequences(FashionMNIST(root, "test"), heldout_sequences, "test", rng, tmp)
        train += single_modality_renderings(train, single_modality)
        taken: set = set()  # training scenes first: a held-out pair never repeats one
        for sid, paths, captions in scene_pairs(scenes, rng, taken, tmp, "images/scenes/train", "scene-train"):
            for side, path, caption in zip("ab", paths, captions):
                train.append({"id": f"{sid}-{side}", "kind": "scene", "segments": [{"image": path}, {"text": caption}]})
        held_pairs = [{"id": sid, "kind": "minimal_pair", "swapped": "colour", "images": paths, "captions": captions}
                      for sid, paths, captions in scene_pairs(pairs, rng, taken, tmp, "images/pairs", "pair")]
        for name, records in (("train.jsonl", train), ("heldout.jsonl", heldout), ("pairs.jsonl", held_pairs)):
            _jsonl(os.path.join(tmp, name), records)
        manifest = {**args, "train.jsonl": len(train), "heldout.jsonl": len(heldout), "pairs.jsonl": len(held_pairs)}
        write_json(os.path.join(tmp, "manifest.json"), manifest)
    return manifest


def ensure(out: str, **kwargs) -> Dict:
    """The data set at `out`, generated unless a manifest with the same arguments is there."""
    return ensure_generated(out, VERSION, generate, **kwargs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tessera.data.interleaved", description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--sequences", type=non_negative_int, default=4000, help="training Fashion-MNIST sequences")
    p.add_argument("--single-modality", type=non_negative_int, default=1000,
                   help="training sequences also written as their images alone and their sentences alone")
    p.add_argument("--scenes", type=non_negative_int, default=1000, help="training scene pairs (2 samples each)")
    p.add_argument("--heldout-sequences", type=non_negative_int, default=500)
    p.add_argument("--pairs", type=non_negative_int, default=200, help="held-out minimal pairs")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--root", default=FASHION_MNIST_ROOT)
    a = p.parse_args(argv)
    m = ensure(a.out, sequences=a.sequences, scenes=a.scenes, heldout_sequences=a.heldout_sequences, pairs=a.pairs,
               seed=a.seed, root=a.root, single_modality=a.single_modality)
    print(json.dumps(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
