"""Checkpoints of the CLIP and image-only tasks are folders transformers' processors read as
tessera prepared the run's data: CLIPProcessor gives tessera's caption ids and pixels, the
zero-shot pipeline tessera's probabilities, and AutoImageProcessor an MAE run's pixels. Before,
a checkpoint held the weights alone (CLIPProcessor.from_pretrained failed on it)."""
import os
import sys

import numpy as np
import pytest
import torch

import tessera
from tessera.data import ImageTransform, clip_transform
from tessera.train import Trainer, recipe_from_dict
from tessera.train.distributed import DistInfo
from tessera.train.image_data import pipeline_settings
from tessera.train.tasks import task_class

sys.path.insert(0, os.path.dirname(__file__))
from _recipes import CLASSES, FMNIST, tiny_recipe  # noqa: E402

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
# Not square: the short side (21) becomes 28 and the long one 37, a margin of 9 whose crop offset
# (4) transformers and torchvision round alike. (An odd half-margin, x.5, they round apart by a
# pixel: transformers down, torchvision and open_clip half to even; image_processor_settings.)
IMAGE = np.random.default_rng(0).integers(0, 256, (37, 21, 3), dtype=np.uint8)


def _checkpoint(tmp_path, r):
    recipe = recipe_from_dict(r)
    task = task_class(recipe.task)(recipe)
    Trainer(recipe, task, str(tmp_path), DistInfo(), progress=False).fit()
    steps = recipe.train.steps
    return task, tmp_path / "checkpoints" / f"step-{steps:08d}"


def _pixels(task, image):
    d = task.recipe.data
    return ImageTransform(clip_transform(d.image_size, **pipeline_settings(d, task.image_pipeline)))(
        torch.from_numpy(image))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_a_clip_checkpoint_is_read_by_clip_processor_and_the_zero_shot_pipeline(tmp_path, interpolation):
    from PIL import Image

    r = tiny_recipe(steps=2, checkpoint_every=2)
    r["data"].update(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    r["eval"].update(max_images=32)
    task, ckpt = _checkpoint(tmp_path, r)
    if interpolation == "bilinear":  # a pipeline of another filter (an open_clip model's own)
        task.image_pipeline = {**task.image_pipeline, "interpolation": "bilinear"}
        task.save_beside(str(ckpt))
    proc = transformers.CLIPProcessor.from_pretrained(str(ckpt))
    captions = ["a photo of a t-shirt.", "An ANKLE boot!!", "two  dresses,\tthe 2nd one - café"]
    got = proc(text=captions, images=Image.fromarray(IMAGE), padding="max_length", return_tensors="pt")
    ids = task.tokenizer(captions)
    # the same ids up to each caption's end token; padded with it (CLIPTokenizer's) where tessera
    # pads with 0, which the pooled end token never attends to
    ends = ids.argmax(-1)
    for row, end in zip(range(len(captions)), ends.tolist()):
        assert got["input_ids"][row, : end + 1].tolist() == ids[row, : end + 1].tolist()
    torch.testing.assert_close(got["pixel_values"][0], _pixels(task, IMAGE), atol=1e-5, rtol=0)

    ours = tessera.from_pretrained(str(ckpt)).eval()
    hf = transformers.CLIPModel.from_pretrained(str(ckpt)).eval()
    with torch.no_grad():  # transformers' model on its processor's batch, tessera's on tessera's
        theirs = hf(**got).logits_per_image
        mine = ours(input_ids=ids, pixel_values=_pixels(task, IMAGE)[None]).logits_per_image
    torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=0)
    assert mine.std() > 0.01  # not a tie the comparison would pass anyway
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(ckpt))
    scores = {s["label"]: s["score"] for s in pipe(Image.fromarray(IMAGE), candidate_labels=CLASSES,
                                                    hypothesis_template="a photo of a {}.")}
    with torch.no_grad():
        out = ours(input_ids=task.tokenizer([f"a photo of a {c}." for c in CLASSES]),
                   pixel_values=_pixels(task, IMAGE)[None])
    probs = out.logits_per_image.softmax(-1)[0]
    torch.testing.assert_close(torch.tensor([scores[c] for c in CLASSES]), probs, atol=1e-5, rtol=0)


def test_an_image_task_checkpoint_is_read_by_auto_image_processor(tmp_path):
    from PIL import Image

    r = {"task": "mae",
         "model": {"config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                              "intermediate_size": 64, "image_size": 28, "patch_size": 7, "decoder_hidden_size": 32,
                              "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2,
                              "decoder_intermediate_size": 64}},
         "data": {"root": FMNIST, "image_size": 28, "batch_size": 16, "num_workers": 1},
         "train": {"plots": False, "steps": 1, "checkpoint_every": 1, "threads": 1, "eval_every": 0},
         "eval": {"max_images": 16}}
    task, ckpt = _checkpoint(tmp_path, r)
    proc = transformers.AutoImageProcessor.from_pretrained(str(ckpt))
    got = proc(images=Image.fromarray(IMAGE), return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(got, _pixels(task, IMAGE), atol=1e-5, rtol=0)
    assert tuple(proc.image_mean) == tuple(task.image_pipeline["mean"])  # ImageNet's, MAE's own
    # and tessera reads the file back as the pipeline it was written from
    from tessera.models.image_processor import read_image_processor
    from tessera.models.timm_compat import transform_settings

    assert transform_settings(read_image_processor(str(ckpt))) == pipeline_settings(task.recipe.data,
                                                                                   task.image_pipeline)


def test_clip_tokenizer_files_give_tessera_ids_on_open_clip_cleaned_text(tmp_path):
    """The saved CLIPTokenizer does not clean text as open_clip does (transformers' never does):
    on text open_clip's cleaning (ftfy, HTML unescaped twice, whitespace, lower case) has made,
    its ids are tessera's, entities, curly quotes, ligatures, widths, controls and final sigma
    included; on other text only that cleaning differs."""
    ftfy = pytest.importorskip("ftfy")
    import html
    import re

    from tessera.text import ClipTokenizer

    tok = ClipTokenizer(context_length=77)
    tok.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    captions = ["salt &amp; pepper", "a&nbsp;b", "it’s “quoted”", "ＡＢＣ ﬁne", "a\x00b\x07c", "ΟΔΟΣ",
                "long " * 90, "", "cafe\u0301 東京 🙂", "<|endoftext|> is text"]
    cleaned = [re.sub(r"\s+", " ", html.unescape(html.unescape(ftfy.fix_text(c)))).strip().lower() for c in captions]
    ids = tok(captions)
    got = hf(cleaned, padding="max_length", max_length=77, truncation=True)["input_ids"]
    for row, caption in enumerate(captions):
        end = int(ids[row].argmax())  # the end token: the largest id
        assert got[row][: end + 1] == ids[row, : end + 1].tolist(), caption
