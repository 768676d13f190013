"""Greedy captions of a LLaVA-family run on held-out images (the image alone, as its caption
stage learned them, optionally continuing a prefix such as BLIP-2's "a photo of"), counted as
right when they name the image's class as a whole word (BLIP-2 stage 1's rule,
`blip2_task.names_class`). The images and classes come from a conversation file's "What is this
item?" samples (the demo's held-out set: the answer names the class).

    python scripts/caption_names_class.py runs/demo-blip2-stage2 runs/data/llava/heldout.json [--prefix "A photo of a"]
"""
import argparse
import json
from collections import Counter
import os
import re

import torch

from tessera.chat import IMAGE_PLACEHOLDER
from tessera.train import build_task, load_recipe
from tessera.train.blip2_task import names_class, words
from tessera.train.checkpoint import resolve_checkpoint
from tessera.train.conversation_data import encode_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("questions")
    p.add_argument("--prefix", default="", help='the caption\'s start, given (BLIP-2 captions after "a photo of")')
    p.add_argument("--images", type=int, default=1000)
    a = p.parse_args()
    folder = resolve_checkpoint(a.run, "run")
    task = build_task(load_recipe(os.path.join(folder, "recipe.json"), []))
    model, d = task.load_model(folder).eval(), task.recipe.data
    items = [s for s in json.load(open(a.questions)) if s["conversations"][0]["value"].endswith("What is this item?")]
    items = items[: a.images]
    classes = [re.sub(r"^(a|an) ", "", s["conversations"][1]["value"].rstrip(".").lower()) for s in items]  # "A coat."
    samples = [{"id": s["id"], "image": s["image"], "conversations": [{"from": "human", "value": IMAGE_PLACEHOLDER},
                                                                       {"from": "gpt", "value": ""}]} for s in items]
    encoded = encode_samples(samples, a.questions, task.tokenizer, d.template, task.image_token_id, task.image_tokens,
                             d.max_length, d.image_folder or os.path.dirname(a.questions), supervise=False)
    if a.prefix:  # the caption's start, given: its ids continue every prompt (all of one length)
        prefix = torch.tensor(task.tokenizer.encode(a.prefix, add_bos=False))
        n = int(encoded.attention_mask[0].sum())
        encoded.input_ids[:, n:n + len(prefix)] = prefix
        encoded.attention_mask[:, n:n + len(prefix)] = 1
    answers = task.answer(model, encoded, task.recipe.eval.max_new_tokens)
    captions = [f"{a.prefix} {answer.lstrip()}" if a.prefix else answer for answer in answers]
    right = [names_class(words(c), name) for c, name in zip(captions, classes)]
    print(json.dumps({"images": len(right), "prefix": a.prefix, "captions_naming_the_class": sum(right) / len(right),
                      "examples": [[name, c] for name, c in zip(classes[:5], captions)],
                      "most_common": Counter(captions).most_common(4)}, indent=2))


if __name__ == "__main__":
    main()
