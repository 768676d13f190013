"""The image-data recipe section and loaders that image tasks share (CLIP, MAE): a dataset
(Fashion-MNIST, an image folder or image-caption pairs), the CLIP transform, tessera's loader."""
from __future__ import annotations

import math

import torch

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .. import data as tdata
from ..models.timm_compat import CLIP_DATA, transform_settings
from ..seeds import sample_seed

DATASETS = ("fashion_mnist", "image_folder", "captions", "webdataset")


@dataclass
class ImageData:
    dataset: str = "fashion_mnist"          # fashion_mnist | image_folder | captions | webdataset
    root: str = "/usr/share/datasets/fashion-mnist"
    eval_root: Optional[str] = None         # evaluation data (defaults: the test split / root)
    image_size: int = 28
    batch_size: int = 256                   # per process
    num_workers: int = 2
    prefetch: int = 4
    train_augment: bool = False
    shuffle_buffer: int = 2000              # webdataset: samples mixed across shards (root: a brace pattern)
    # webdataset: one weight per source of root ('a/{0..9}.tar::b/{0..3}.tar'), drawn sample by
    # sample in training (open_clip's upsampling factors, webdataset's RandomMix); empty: one set
    source_weights: List[float] = field(default_factory=list)
    # Pixel normalisation (per channel); empty: those of the checkpoint the task starts from or
    # reads with (model.pretrained, a teacher, a tower: its run's or its preprocessor_config.json's,
    # `inherit_statistics`), else the family's (MAE ImageNet's, BEiT 0.5, CLIP and BLIP-2 OpenAI
    # CLIP's; the task's `image_pipeline`).
    image_mean: List[float] = field(default_factory=list)
    image_std: List[float] = field(default_factory=list)

    def validate(self, where: str) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"{where}.dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        for name in ("image_size", "batch_size", "prefetch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"{where}.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.num_workers < 0:
            raise ValueError(f"{where}.num_workers must be >= 0, got {self.num_workers}")
        check_statistics(self.image_mean, self.image_std, where)
        if self.source_weights:
            sources = self.root.split("::")
            if self.dataset != "webdataset" or len(sources) != len(self.source_weights) or len(sources) < 2:
                raise ValueError(f"{where}.source_weights: one weight per source of a webdataset root joined by '::' "
                                 f"(two or more), got {len(self.source_weights)} weight(s) for dataset "
                                 f"{self.dataset!r} with {len(sources)} source(s)")
            from ..data.webdataset import mix_weights

            try:
                mix_weights(self.source_weights, len(sources))
            except ValueError as e:
                raise ValueError(f"{where}.source_weights: {e}") from None


def check_statistics(mean: Sequence[float], std: Sequence[float], where: str) -> None:
    """A data section's image_mean and image_std: three finite numbers each (std > 0), or both empty."""
    if len(mean) not in (0, 3) or len(std) != len(mean) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in [*mean, *std]) or any(
            v <= 0 for v in std):
        raise ValueError(f"{where}.image_mean and image_std: three finite values each (std > 0), or both empty; "
                         f"got {list(mean)} and {list(std)}")


def image_dataset(d: ImageData, train: bool):
    root = d.root if train else (d.eval_root or d.root)
    if d.dataset == "fashion_mnist":
        return tdata.FashionMNIST(root, split="train" if train else "test")
    if d.dataset == "image_folder":
        return tdata.ImageFolder(root)
    if d.dataset == "webdataset":
        return Shards(root)
    return tdata.CaptionDataset(root)


class Shards:
    """Webdataset shards named by a brace pattern; checked now, streamed by the loader."""

    classes: tuple = ()  # class names come from the recipe (data.class_names)

    def __init__(self, pattern: str):
        from ..data.webdataset import expand_urls

        self.pattern, self.urls = pattern, expand_urls(pattern)


def pipeline_settings(d: ImageData, pipeline: Dict[str, Any]) -> Dict[str, Any]:
    """`clip_transform` keywords of a task's `image_pipeline` (timm_compat's *_DATA), with the
    recipe's data.image_mean / image_std over its mean and std."""
    settings = transform_settings(pipeline)
    if d.image_mean:
        settings.update(mean=tuple(d.image_mean), std=tuple(d.image_std))
    return settings


def save_image_processor(folder: str, d: ImageData, pipeline: Dict[str, Any]) -> None:
    """A checkpoint's preprocessor_config.json: the evaluation pipeline of `d` under the family's
    `pipeline`, as transformers' image processors read it (AutoImageProcessor)."""
    import os

    from ..io import write_json
    from ..models.image_processor import FILE, image_processor_settings

    write_json(os.path.join(folder, FILE), image_processor_settings(d.image_size, **pipeline_settings(d, pipeline)))


def checkpoint_data_config(folder: str, fallback: Dict[str, Any]) -> Dict[str, Any]:
    """The data config (timm's names) a checkpoint's images were normalised with, each source over
    the one before: `fallback` (the model's family), its training task's `image_pipeline` (a
    feature-target MIM BEiT trained on its CLIP teacher's), its preprocessor_config.json (a Hugging
    Face folder's image processor), its recipe's data.image_mean / image_std (recipe.json)."""
    from ..chat import run_recipe
    from ..models.image_processor import read_image_processor
    from .tasks import task_class

    config = dict(fallback)
    try:
        recipe = run_recipe(folder)
    except ValueError:  # not JSON: the model's family
        recipe = {}
    try:
        pipeline = getattr(task_class(recipe["task"]), "image_pipeline", None) if "task" in recipe else None
    except (ValueError, TypeError, KeyError):  # a task this installation lacks: the model's family
        pipeline = None
    config.update(pipeline or {})
    config.update(read_image_processor(folder) or {})
    data = recipe.get("data") if isinstance(recipe.get("data"), dict) else {}
    if data.get("image_mean") or data.get("image_std"):
        mean, std = data.get("image_mean"), data.get("image_std")
        if not isinstance(mean, list) or not isinstance(std, list):
            raise ValueError(f"{folder}/recipe.json: data.image_mean and image_std must be lists, got {mean!r} and {std!r}")
        check_statistics(mean, std, f"{folder}/recipe.json: data")
        config.update(mean=tuple(mean), std=tuple(std))
    return config


def checkpoint_pipeline(folder: str, model) -> Dict[str, Any]:
    """`clip_transform` keywords of `checkpoint_data_config`, the model's family the fallback."""
    from ..models.timm_compat import model_data_config

    return transform_settings(checkpoint_data_config(folder, model_data_config(model)))


def inherit_statistics(d, folder: str, own: Dict[str, Any]) -> None:
    """A task whose images a checkpoint's tower reads (fine-tuned, frozen, or a teacher) normalises
    them as that checkpoint's run or image processor did, as LLaVA takes its tower's processor;
    the recipe's own data.image_mean / image_std win, and so does the first checkpoint asked (the
    model's own before a teacher's). The statistics taken are written into the recipe (`d`), also
    where they are the family's, so recipe.json, evaluation and chat read the same and a later
    source cannot take their place."""
    if d.image_mean:
        return
    theirs = checkpoint_data_config(folder, own)
    d.image_mean, d.image_std = [float(v) for v in theirs["mean"]], [float(v) for v in theirs["std"]]


def inherit_from_pretrained(recipe, own: Dict[str, Any]) -> None:
    """`inherit_statistics` from the checkpoint folder a task's model starts from (model.pretrained;
    an open_clip checkpoint file has no statistics of its own)."""
    import os

    from .checkpoint import resolve_checkpoint

    if recipe.model.pretrained and os.path.isdir(recipe.model.pretrained):
        inherit_statistics(recipe.data, resolve_checkpoint(recipe.model.pretrained, "model.pretrained"), own)


class Renormalise:
    """Pixels normalised with one mean and std, as another's: what a frozen reader trained on other
    statistics (a teacher, BLIP-2's tower, BEiT's tokenizer) takes from the task's batch, as BEiT
    v2's tokenizer normalises its own input. The identity when the two agree."""

    def __init__(self, ours: Dict[str, Any], theirs: Dict[str, Any]):
        same = (tuple(ours["mean"]), tuple(ours["std"])) == (tuple(theirs["mean"]), tuple(theirs["std"]))
        self._stats = None if same else [torch.tensor([float(x) for x in v]).view(1, -1, 1, 1)
                                         for v in (ours["mean"], ours["std"], theirs["mean"], theirs["std"])]

    def __call__(self, px: torch.Tensor) -> torch.Tensor:
        if self._stats is None:
            return px
        mean, std, their_mean, their_std = (t.to(px.device, px.dtype) for t in self._stats)
        return (px * std + mean - their_mean) / their_std


def image_loader(d: ImageData, dataset, train: bool, seed: int, rank: int = 0, world_size: int = 1,
                 augmentation: Optional[Dict[str, Any]] = None, select=None, pipeline: Dict[str, Any] = CLIP_DATA):
    """The task's loader; `augmentation` (a task's `train_augmentation`: crop scale, flip) applies
    under `data.train_augment`; `select` (shards only: the native datasets are all labelled)
    skips the samples a task cannot use (`caption_or_label`); `pipeline` is the model family's
    normalisation (and evaluation resize)."""
    augment = train and d.train_augment
    transform = tdata.clip_transform(d.image_size, train=augment, **pipeline_settings(d, pipeline),
                                     **(augmentation or {}) if augment else {})
    if isinstance(dataset, Shards):
        from ..data.shard_loader import ShardLoader

        weights = d.source_weights if train and d.source_weights else None  # the sources: root's '::' parts
        return ShardLoader(dataset.pattern if weights else dataset.urls, d.batch_size, transform,
                           d.shuffle_buffer if train else 0, seed, rank, world_size, d.num_workers, drop_last=train,
                           select=select, prefetch=d.prefetch, weights=weights)
    return tdata.DataLoader(dataset, batch_size=d.batch_size, shuffle=train, seed=seed, rank=rank,
                            world_size=world_size, num_workers=d.num_workers, prefetch=d.prefetch, drop_last=train,
                            transform=transform)


def sample_ids(batch: Dict[str, Any]) -> List[int]:
    """The dataset index of each sample of an image batch (the native loaders' `indices`), or for
    webdataset shards, which have none, a 63-bit digest of its key: what per-sample random draws
    (masks, caption templates) are seeded by, so they do not depend on the rank or the micro-batch."""
    if "indices" in batch:
        return [int(i) for i in batch["indices"]]
    if "keys" in batch:
        import hashlib

        return [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") >> 1
                for k in batch["keys"]]
    raise ValueError("an image batch without `indices` or `keys`: random draws are made per sample")


def caption_or_label(class_names: Sequence[str]):
    """A shard sample filter for image-text tasks: a caption, or a label that names a class (its
    caption is then a template). img2dataset writes an empty .txt where the source had none."""
    def reason(caption: str, label: int) -> Optional[str]:
        if caption or 0 <= label < len(class_names):
            return None
        return (f"no caption (.txt or .json) and label {label}, outside the {len(class_names)} class names "
                "(data.class_names): an image-text task cannot use it")
    return reason


def labelled(class_names: Sequence[str]):
    """A shard sample filter for zero-shot evaluation: a label that names a class."""
    def reason(caption: str, label: int) -> Optional[str]:
        if 0 <= label < len(class_names):
            return None
        return f"label {label} is outside the {len(class_names)} class names (data.class_names): zero-shot cannot score it"
    return reason


def batch_captions(d: ImageData, class_names, batch: Dict[str, Any], seed: int, step: int) -> List[str]:
    """The batch's own captions where it has them (shards), a class template for the others."""
    captions = list(batch.get("captions") or [])
    if captions and all(captions):
        return captions
    return template_captions(d.templates, class_names, batch["labels"], seed, step, sample_ids(batch), captions,
                             batch.get("keys"))


def template_captions(templates, class_names, labels: torch.Tensor, seed: int, step: int, samples: Sequence[int],
                      captions: Optional[List[str]] = None, keys: Optional[List[str]] = None) -> List[str]:
    """A caption per label: a template drawn for each sample from (seed, step, the sample's id,
    `sample_ids`), filled with its class name: deterministic and resume-safe without saved state,
    and the same on any number of ranks or micro-batches (drawn per rank, the micro-batches of a
    step repeated one sequence of templates). With `captions` (a batch's own, "" where a sample has
    none), those that exist stand and only the empty ones are templated. A label outside the class
    names is refused by value, naming the sample by its key where the batch has keys (a missing
    label, -1, named the last class)."""
    import random

    if len(samples) != len(labels):
        raise ValueError(f"template_captions: {len(samples)} sample ids for {len(labels)} labels")
    pick = [random.Random(sample_seed(seed, step, int(sample), 65_537)).randrange(len(templates)) for sample in samples]
    out = []
    for i, (t, c) in enumerate(zip(pick, labels.tolist())):
        if captions and captions[i]:
            out.append(captions[i])
            continue
        if not 0 <= c < len(class_names):
            name = f"sample {keys[i]!r}" if keys else f"sample {i} of the batch"
            raise ValueError(f"{name} has no caption and label {c}, outside the {len(class_names)} class names "
                             "(data.class_names): a contrastive task needs a caption or a label for every image")
        out.append(templates[t].format(class_names[c]))
    return out
