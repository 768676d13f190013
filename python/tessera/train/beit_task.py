"""BEiT pretraining for the Trainer: a VQ-KD tokenizer (a `vqkd` run) turns each image into
visual tokens, block-wise masks hide ~40 % of the patches, and the model predicts the tokens of
the masked ones (a TokenLoss over masked patches). Evaluation: held-out loss and token accuracy
with fixed masks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Tuple

import torch

from ..eval.finite import require_items
from ..models.beit import BeitForMaskedImageModeling
from ..models.pretrained import read_config
from ..models.timm_compat import BEIT_DATA
from ..models.vqkd import VQKD
from .image_data import ImageData, Renormalise, checkpoint_pipeline, pipeline_settings
from .image_task import HeldOutEval, MaskedImageTask, MaskingSection
from .tasks import TokenLoss, register_task
from .checkpoint import resolve_checkpoint


@dataclass
class TokenizerSection:
    checkpoint_fields: ClassVar[Tuple[str, ...]] = ("checkpoint",)
    checkpoint: str = ""                    # a vqkd run folder (its newest checkpoint) or checkpoint folder

    def validate(self, where: str) -> None:
        if not self.checkpoint:
            raise ValueError(f"{where}.checkpoint: name the VQ-KD run or checkpoint folder (train a vqkd recipe first)")


@register_task("beit")
class BeitTask(MaskedImageTask):
    sections = {"data": ImageData, "tokenizer": TokenizerSection, "masking": MaskingSection, "eval": HeldOutEval}
    model_class = BeitForMaskedImageModeling
    image_pipeline = BEIT_DATA

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        super().__init__(recipe, rank, world_size)
        self.tokenizer = VQKD.from_pretrained(resolve_checkpoint(recipe.tokenizer.checkpoint, "tokenizer.checkpoint")).requires_grad_(False)
        enc = self.tokenizer.config["encoder_config"]
        if enc["image_size"] // enc["patch_size"] != self.grid:
            raise ValueError(f"tokenizer {recipe.tokenizer.checkpoint}: its {enc['image_size'] // enc['patch_size']}"
                             f"-patch grid differs from the model's {self.grid}")
        # BEiT's pixels are normalised as BEiT's (0.5, 0.5); the tokenizer reads them as its own run
        # did (CLIP's, its teacher's, unless its recipe said otherwise), as BEiT v2's tokenizer
        # normalises its input itself.
        self.tokenizer_pixels = Renormalise(
            pipeline_settings(recipe.data, self.image_pipeline),
            checkpoint_pipeline(resolve_checkpoint(recipe.tokenizer.checkpoint, "tokenizer.checkpoint"), self.tokenizer))

    @classmethod
    def head_config(cls, recipe) -> Dict[str, Any]:
        tokenizer = read_config(resolve_checkpoint(recipe.tokenizer.checkpoint, "tokenizer.checkpoint"))
        return {"vocab_size": tokenizer["codebook_size"]}

    @classmethod
    def frozen_beside(cls, recipe) -> int:
        """The VQ-KD tokenizer's tensors (its codebook too), counted from its checkpoint file."""
        from ..models.weights import load_weights

        folder = resolve_checkpoint(recipe.tokenizer.checkpoint, "tokenizer.checkpoint")
        return sum(t.numel() for t in load_weights(folder).values())

    def compute_loss(self, wrapped, model, batch, step):
        px = batch["pixel_values"].to(model.device, non_blocking=True)  # pinned: the copy overlaps
        labels = self.tokenizer.to(px.device).get_codebook_indices(self.tokenizer_pixels(px))
        mask = self.train_masks(batch, step).to(px.device)
        out = wrapped(pixel_values=px, bool_masked_pos=mask, labels=labels)
        masked = mask.sum()
        return {"loss": TokenLoss(out.loss * masked, masked)}

    def evaluate(self, model, final: bool = False) -> Dict[str, Any]:
        masks = self.eval_masks()
        total, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for px in self.heldout(model.device, self.recipe.eval.max_images):
                labels = self.tokenizer.to(px.device).get_codebook_indices(self.tokenizer_pixels(px))
                mask = masks(len(px)).to(px.device)
                out = model(pixel_values=px, bool_masked_pos=mask, labels=labels)
                m = int(mask.sum())
                total += float(out.loss) * m
                correct += int((out.logits[mask].argmax(-1) == labels[mask]).sum())
                count += m
        require_items(count, "BEiT evaluation: masked patches")
        return {"eval_loss": total / count, "token_accuracy": correct / count}
