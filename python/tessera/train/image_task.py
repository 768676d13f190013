"""What the image-only tasks share (MAE, VQ-KD, BEiT, feature-target MIM): the `data` section,
the training loader, held-out batches for evaluation, and the `masking` section of block-wise
masked image modeling."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator

import torch

from ..data.masking import BlockMaskGenerator
from ..models.timm_compat import CLIP_DATA
from ..seeds import sample_seed
from .optim import beit_pretraining_no_decay
from .image_data import (ImageData, image_dataset, image_loader, inherit_from_pretrained, sample_ids,
                         save_image_processor)
from .tasks import Task


@dataclass
class MaskingSection:
    ratio: float = 0.4                      # fraction of patches masked (BEiT: 75 of 196)
    min_num_patches: int = 4                # smallest block (BEiT: 16 on a 14x14 grid)
    min_aspect: float = 0.3                 # block aspect ratio in [min_aspect, 1/min_aspect]

    def validate(self, where: str) -> None:
        if not 0 < self.ratio < 1:
            raise ValueError(f"{where}.ratio must be in (0, 1), got {self.ratio}")
        if self.min_num_patches < 1:
            raise ValueError(f"{where}.min_num_patches must be >= 1, got {self.min_num_patches}")
        if not 0 < self.min_aspect <= 1:
            raise ValueError(f"{where}.min_aspect must be in (0, 1], got {self.min_aspect}")

    def generator(self, grid: int, seed: int) -> BlockMaskGenerator:
        return BlockMaskGenerator.from_ratio(grid, self.ratio, min_num_patches=self.min_num_patches,
                                             min_aspect=self.min_aspect, seed=seed)


@dataclass
class HeldOutEval:
    max_images: int = 1024                  # held-out images per evaluation (0: all)

    def validate(self, where: str) -> None:
        if self.max_images < 0:
            raise ValueError(f"{where}.max_images must be >= 0, got {self.max_images}")


class ImageTask(Task):
    """A task trained on images alone. `train_augmentation` is its reference's training crop under
    `data.train_augment`: BEiT's and VQ-KD's by default (RandomResizedCrop scale 0.08-1, flips)."""
    sections = {"data": ImageData}
    train_augmentation: Dict[str, Any] = {"scale": (0.08, 1.0), "hflip_prob": 0.5}
    #: the family's normalisation (timm_compat): CLIP's for VQ-KD and feature-target MIM, whose
    #: teacher (a CLIP model) reads the same pixels; MAE and BEiT set their own.
    image_pipeline: Dict[str, Any] = CLIP_DATA

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        super().__init__(recipe, rank, world_size)
        inherit_from_pretrained(recipe, self.image_pipeline)
        self.train_set = image_dataset(recipe.data, train=True)

    def train_loader(self, rank: int, world_size: int):
        return image_loader(self.recipe.data, self.train_set, True, self.recipe.train.seed, rank, world_size,
                            self.train_augmentation, pipeline=self.image_pipeline)

    def save_beside(self, folder: str) -> None:
        """The image processor (AutoImageProcessor reads the checkpoint's pixels as tessera's)."""
        save_image_processor(folder, self.recipe.data, self.image_pipeline)

    def batch_size(self, batch: Dict[str, Any]) -> int:
        return len(batch["pixel_values"])

    def heldout(self, device, max_images: int = 0) -> Iterator[torch.Tensor]:
        """Held-out pixel batches in a fixed order, exactly `max_images` images (0: all): the last
        batch is cut, as zero-shot and retrieval cut theirs."""
        loader = image_loader(self.recipe.data, image_dataset(self.recipe.data, train=False), False,
                              self.recipe.train.seed, pipeline=self.image_pipeline)
        seen = 0
        try:
            for batch in loader:
                pixels = batch["pixel_values"]
                if max_images:
                    pixels = pixels[:max_images - seen]
                yield pixels.to(device)
                seen += len(pixels)
                if max_images and seen >= max_images:
                    break
        finally:
            loader.stop()


class MaskedImageTask(ImageTask):
    """Block-masked image modeling on a BEiT encoder (`masking` section): each sample's mask is
    drawn from a generator reseeded from (seed, step, sample), so a resumed run sees the masks an
    uninterrupted one would, on any number of ranks; evaluation uses one fixed mask stream."""

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        super().__init__(recipe, rank, world_size)
        self.grid = recipe.data.image_size // self.model_config(recipe)["patch_size"]
        self.masks = recipe.masking.generator(self.grid, recipe.train.seed)

    def no_weight_decay(self, name, param) -> bool:
        return beit_pretraining_no_decay(name, param)  # BEiT's pretraining: mask token, bias tables decay

    @classmethod
    def head_config(cls, recipe) -> Dict[str, Any]:
        """Config keys the task fixes (the head's width); checked against the recipe's."""
        return {}

    @classmethod
    def model_config(cls, recipe) -> Dict[str, Any]:
        fixed = {"use_mask_token": True, **cls.head_config(recipe)}
        given = recipe.model.config or {}
        for key, value in fixed.items():
            if key in given and given[key] != value:
                raise ValueError(f"model.config.{key} is {given[key]!r} but the {recipe.task} task needs {value!r}")
        recipe.model.config = {**given, **fixed}
        return super().model_config(recipe)

    def train_masks(self, batch: Dict[str, Any], step: int) -> torch.Tensor:
        """Each sample's mask is drawn from (seed, step, the sample): the same on any number of ranks
        and in any micro-batch (seeded by rank and batch position, a run resumed on another world
        size masked the same samples differently)."""
        masks = []
        for sample in sample_ids(batch):
            self.masks.rng.seed(sample_seed(self.recipe.train.seed, step, sample, 1009))
            masks.append(self.masks(1))
        return torch.cat(masks)

    def eval_masks(self):
        """A generator for held-out masks: the same at every evaluation."""
        return self.recipe.masking.generator(self.grid, 1234)

    @classmethod
    def memory_shape(cls, recipe):
        """A BEiT encoder with its head for `tessera plan`; a frozen tokenizer or teacher beside it
        counts its weights only (no gradients, no activations kept)."""
        from ..plan import ModelShape
        from ..plan.beit import beit_encoder

        c, d = cls.model_config(recipe), recipe.data
        stack, embeddings = beit_encoder(c, "encoder", d.image_size)
        n, h, vocab = stack.tokens - 1, c["hidden_size"], c["vocab_size"]
        other = (embeddings + 2 * h * (1 if c["use_mean_pooling"] else 2)   # final norm(s) before the head
                 + h * vocab + vocab)                                        # the head
        pixels = c["num_channels"] * d.image_size ** 2 * 4
        acts = 4 * (3 * (n + 1) * h + 3 * n * vocab) + 2 * pixels            # embeddings, logits and their grads
        return ModelShape(recipe.task, [stack], other_params=other, other_activations_per_sample=acts,
                          sample_bytes=pixels, batch_size=d.batch_size, prefetch=d.prefetch,
                          frozen_beside=cls.frozen_beside(recipe))

    @classmethod
    def frozen_beside(cls, recipe) -> int:
        """Parameters of the frozen model the task runs beside this one (its teacher or tokenizer)."""
        return 0
