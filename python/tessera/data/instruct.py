"""Embedded instruction data for LLaVA recipes: Fashion-MNIST images with captions and questions
("What is this item?", "Is this something you wear on your feet?") and procedural scenes of
coloured shapes drawn with OpenCV (captions, counts, colours). Deterministic from a seed; the
held-out split uses images never seen in training (Fashion-MNIST's test split, other scenes).

Written in LLaVA's layout, so the same loader reads LLaVA's own data:

    OUT/images/{fashion,scenes}/{train,test}/NNNNN.png
    OUT/captions.json   stage 1: [{"id", "image", "conversations": [human "<image>", gpt caption]}]
    OUT/instruct.json   stage 2: questions and answers about the training images
    OUT/heldout.json    questions about held-out images, one per sample, with a "kind"
    OUT/text.txt        the captions and answers as plain text (a tiny LM's pretraining corpus), and
                        each training caption once more after what it names ("coat. A photo of a coat.")
    OUT/tokenizer.model SentencePiece trained on text.txt, with the "<image>" token

    python -m tessera.data.instruct OUT [--fashion 12000] [--scenes 4000]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from typing import Dict, List, Tuple

from .. import _C
from ..chat import load_template, render_text
from ..cli_types import non_negative_int
from .manifest import ensure_generated, staged
from ..io import write_json
from ..schema import require
from .datasets import FASHION_MNIST_ROOT, FashionMNIST

FASHION_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FOOTWEAR = {"sandal", "sneaker", "ankle boot"}
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 100, 240), "yellow": (240, 220, 40)}
KINDS = ["circle", "square", "triangle"]
NUMBERS = ["zero", "one", "two", "three", "four"]
WHAT_IS = "What is this item?"
FEET = "Is this something you wear on your feet?"
WHAT_IS_PARAPHRASES = [WHAT_IS, "What item is shown in the picture?", "What is in the image?"]
SIZE = 28
VERSION = 4


def with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def _turns(*pairs: Tuple[str, str]) -> List[Dict[str, str]]:
    out = []
    for q, a in pairs:
        out += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return out


def fashion_samples(label: int, image: str, rng: random.Random, split: str, sid: str) -> List[Dict]:
    """(caption sample, instruction or held-out samples) for one Fashion-MNIST image."""
    name = FASHION_NAMES[label]
    what = with_article(name).capitalize() + "."
    feet = "Yes." if name in FOOTWEAR else "No."
    caption = {"id": f"{sid}-caption", "image": image, "kind": "fashion_caption",
               "conversations": _turns(("<image>", f"A photo of {with_article(name)}."))}
    if split == "test":
        return [caption, {"id": f"{sid}-what", "image": image, "kind": "fashion_what",
                          "conversations": _turns((f"<image>\n{WHAT_IS}", what))},
                {"id": f"{sid}-feet", "image": image, "kind": "fashion_feet",
                 "conversations": _turns((f"<image>\n{FEET}", feet))}]
    pairs = [(rng.choice(WHAT_IS_PARAPHRASES), what), (FEET, feet)]
    rng.shuffle(pairs)
    pairs[0] = ("<image>\n" + pairs[0][0], pairs[0][1])
    return [caption, {"id": f"{sid}-qa", "image": image, "kind": "fashion_qa", "conversations": _turns(*pairs)}]


def random_scene(rng: random.Random) -> List[Tuple[str, str, int, int, int]]:
    """1-4 shapes, one per quadrant (no overlap), read left to right, top to bottom."""
    cells = sorted(rng.sample(range(4), rng.randint(1, 4)))
    shapes = []
    for cell in cells:
        cx, cy = cell_centre(cell, rng)
        shapes.append((rng.choice(KINDS), rng.choice(list(COLOURS)), cx, cy, rng.randint(4, 5)))
    return shapes


def cell_centre(cell: int, rng: random.Random) -> Tuple[int, int]:
    """The centre of quadrant `cell` (0-3, left to right, top to bottom), jittered by a pixel."""
    cx = 7 + 14 * (cell % 2) + rng.randint(-1, 1)
    cy = 7 + 14 * (cell // 2) + rng.randint(-1, 1)
    return cx, cy


def draw_scene(shapes):
    """The [SIZE, SIZE, 3] uint8 image of (kind, colour name, cx, cy, size) shapes on black."""
    return _C.data.draw_shapes(SIZE, SIZE, [(k, COLOURS[c], x, y, s) for k, c, x, y, s in shapes])


def scene_listing(shapes) -> str:
    """"a red circle, a blue square and a green triangle": the shapes in reading order."""
    described = [f"a {colour} {kind}" for kind, colour, *_ in shapes]
    return described[0] if len(described) == 1 else ", ".join(described[:-1]) + " and " + described[-1]


def scene_samples(shapes, image: str, rng: random.Random, split: str, sid: str) -> List[Dict]:
    n = len(shapes)
    listing = scene_listing(shapes)
    noun = "shape" if n == 1 else "shapes"
    caption = {"id": f"{sid}-caption", "image": image, "kind": "scene_caption",
               "conversations": _turns(("<image>", f"{NUMBERS[n].capitalize()} {noun}: {listing}."))}
    count = ("How many shapes are there?", NUMBERS[n].capitalize() + ".")
    kinds = [k for k, *_ in shapes]
    unique = [s for s in shapes if kinds.count(s[0]) == 1]
    qa = [("count", count)]
    if unique:
        kind, colour = rng.choice(unique)[:2]
        qa.append(("colour", (f"What colour is the {kind}?", colour.capitalize() + ".")))
    if split == "test":
        return [caption] + [{"id": f"{sid}-{k}", "image": image, "kind": f"scene_{k}",
                             "conversations": _turns(("<image>\n" + q, a))} for k, (q, a) in qa]
    pairs = [p for _, p in qa]
    rng.shuffle(pairs)
    pairs[0] = ("<image>\n" + pairs[0][0], pairs[0][1])
    return [caption, {"id": f"{sid}-qa", "image": image, "kind": "scene_qa", "conversations": _turns(*pairs)}]


def write_png(path: str, image) -> None:
    with open(path, "wb") as f:
        f.write(_C.data.encode_png(image))


def generate(out: str, fashion: int = 12000, scenes: int = 4000, heldout_fashion: int = 1000,
             heldout_scenes: int = 500, seed: int = 0, root: str = FASHION_MNIST_ROOT,
             vocab_size: int = 1024) -> Dict:
    """Writes the data set to `out` (into a temporary folder renamed at the end: a crash leaves no
    half-written set). Returns the manifest. Same arguments, same bytes."""
    from ..text import train_sentencepiece

    for name, value in (("fashion", fashion), ("scenes", scenes), ("heldout_fashion", heldout_fashion),
                        ("heldout_scenes", heldout_scenes), ("seed", seed), ("vocab_size", vocab_size)):
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"instruction data: {name} must be an integer >= 0, got {value!r}")
    require(fashion + scenes > 0, "instruction data: fashion + scenes must be > 0 (no training sample otherwise)")
    args = dict(generator="tessera.data.instruct", version=VERSION, fashion=fashion, scenes=scenes, heldout_fashion=heldout_fashion,
                heldout_scenes=heldout_scenes, seed=seed, vocab_size=vocab_size, root=os.path.abspath(root))
    with staged(out, "tessera.data.instruct") as tmp:
        rng = random.Random(seed)
        files: Dict[str, List[Dict]] = {"captions.json": [], "instruct.json": [], "heldout.json": []}
        seen: set = set()  # training scenes
        echoes: List[str] = []  # each training caption after what it names (the LM's corpus, below)
        for split, n_fashion, n_scenes in (("train", fashion, scenes), ("test", heldout_fashion, heldout_scenes)):
            ds = FashionMNIST(root, split)
            if n_fashion > len(ds):
                raise ValueError(f"asked for {n_fashion} Fashion-MNIST {split} images; the split has {len(ds)}")
            picks = sorted(rng.sample(range(len(ds)), n_fashion))
            for kind, count in (("fashion", n_fashion), ("scenes", n_scenes)):
                os.makedirs(os.path.join(tmp, "images", kind, split), exist_ok=True)
            for i, index in enumerate(picks):
                rel = f"images/fashion/{split}/{i:05d}.png"
                write_png(os.path.join(tmp, rel), ds.data[index])
                samples = fashion_samples(int(ds.targets[index]), rel, rng, split, f"fashion-{split}-{i:05d}")
                _route(files, samples, split)
                if split == "train":
                    echoes.append(_echo(FASHION_NAMES[int(ds.targets[index])], samples[0]))
            for i in range(n_scenes):
                rel = f"images/scenes/{split}/{i:05d}.png"
                shapes = random_scene(rng)
                while split == "test" and tuple(shapes) in seen:  # held out means never drawn for training
                    shapes = random_scene(rng)
                seen.add(tuple(shapes))
                write_png(os.path.join(tmp, rel), draw_scene(shapes))
                samples = scene_samples(shapes, rel, rng, split, f"scene-{split}-{i:05d}")
                _route(files, samples, split)
                if split == "train":
                    echoes.append(_echo(scene_listing(shapes), samples[0]))
        for name, samples in files.items():
            write_json(os.path.join(tmp, name), samples)
        # The LM's corpus: captions as plain text, conversations as the `llava_v1` template lays them
        # out (the template the demo recipes train with), and the echoes. In the rest a caption's
        # object is never predictable from what precedes it, so the LM learned never to look back
        # for it, and no prefix in the image's place (BLIP-2's caption stage, LM frozen) could make
        # it name the image: each caption once more after its object, as natural text repeats its
        # subjects, teaches it to (docs/results.md, "BLIP-2").
        chat_format = load_template("llava_v1")
        lines = ([_plain_text(s) for s in files["captions.json"]]
                 + [render_text(chat_format, s["conversations"]) for s in files["instruct.json"]] + echoes)
        lines = [line.replace("\n", " ") for line in lines]
        with open(os.path.join(tmp, "text.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        train_sentencepiece(lines, os.path.join(tmp, "tokenizer.model"), vocab_size=vocab_size, hard_vocab_limit=False)
        manifest = {**args, **{k: len(v) for k, v in files.items()}, "text_lines": len(lines)}
        write_json(os.path.join(tmp, "manifest.json"), manifest)
    return manifest


def _route(files, samples, split) -> None:
    for s in samples:
        if s["kind"].endswith("caption"):
            if split == "train":
                files["captions.json"].append(s)
        else:
            files["instruct.json" if split == "train" else "heldout.json"].append(s)


def _plain_text(sample: Dict) -> str:
    return " ".join(t["value"].replace("<image>", "").strip() for t in sample["conversations"]).strip()


def _echo(subject: str, caption: Dict) -> str:
    """"coat. A photo of a coat.": a caption after what it names."""
    return f"{subject}. {_plain_text(caption)}"


def ensure(out: str, **kwargs) -> Dict:
    """The data set at `out`, generated unless a manifest with the same arguments is there."""
    return ensure_generated(out, VERSION, generate, **kwargs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tessera.data.instruct", description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--fashion", type=non_negative_int, default=12000)
    p.add_argument("--scenes", type=non_negative_int, default=4000)
    p.add_argument("--heldout-fashion", type=non_negative_int, default=1000)
    p.add_argument("--heldout-scenes", type=non_negative_int, default=500)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--root", default=FASHION_MNIST_ROOT)
    a = p.parse_args(argv)
    m = ensure(a.out, fashion=a.fashion, scenes=a.scenes, heldout_fashion=a.heldout_fashion,
               heldout_scenes=a.heldout_scenes, seed=a.seed, root=a.root)
    print(json.dumps(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
