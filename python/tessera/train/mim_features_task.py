"""Feature-target masked image modeling for the Trainer (MVP / EVA style): a BEiT encoder with
block-masked input regresses a frozen CLIP teacher's patch features at the masked positions; the
head is BEiT's LM head with the teacher's width. Loss: 1 - cosine, or smooth-L1 on layer-normalised
targets, per masked patch (a TokenLoss)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
import torch.nn.functional as F

from ..eval.finite import require_items
from ..models.beit import BeitForMaskedImageModeling
from .image_data import ImageData
from .image_task import HeldOutEval, MaskedImageTask, MaskingSection
from .tasks import TokenLoss, register_task
from .teacher import TeacherSection, load_teacher, teacher_features, teacher_statistics, teacher_width

LOSSES = ("cosine", "smooth_l1")


@dataclass
class FeatureLoss:
    type: str = "cosine"                    # cosine | smooth_l1 (on layer-normalised targets)

    def validate(self, where: str) -> None:
        if self.type not in LOSSES:
            raise ValueError(f"{where}.type must be one of {', '.join(LOSSES)}, got {self.type!r}")


def feature_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-patch losses [M] of predictions against teacher features [M, D]."""
    if kind == "cosine":
        return 1 - F.cosine_similarity(pred.float(), target.float(), dim=-1)
    target = F.layer_norm(target.float(), target.shape[-1:])
    return F.smooth_l1_loss(pred.float(), target, reduction="none").mean(-1)


@register_task("mim_features")
class MimFeaturesTask(MaskedImageTask):
    sections = {"data": ImageData, "teacher": TeacherSection, "masking": MaskingSection, "loss": FeatureLoss,
                "eval": HeldOutEval}
    model_class = BeitForMaskedImageModeling

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        super().__init__(recipe, rank, world_size)
        self.teacher = load_teacher(recipe.teacher, teacher_statistics(recipe.data, recipe.teacher, self.image_pipeline))
        t = self.teacher.config
        if t["image_size"] // t["patch_size"] != self.grid:
            raise ValueError(f"teacher: its {t['image_size'] // t['patch_size']}-patch grid differs from the "
                             f"model's {self.grid}")

    @classmethod
    def head_config(cls, recipe) -> Dict[str, Any]:
        return {"vocab_size": teacher_width(recipe.teacher)}

    @classmethod
    def frozen_beside(cls, recipe) -> int:
        return sum(p.numel() for p in load_teacher(recipe.teacher).parameters())

    def _loss(self, model_out, px, mask) -> torch.Tensor:
        target = teacher_features(self.teacher.to(px.device), px, self.recipe.teacher.layer)
        return feature_loss(model_out.logits[mask], target[mask], self.recipe.loss.type)

    def compute_loss(self, wrapped, model, batch, step):
        px = batch["pixel_values"].to(model.device, non_blocking=True)  # pinned: the copy overlaps
        mask = self.train_masks(batch, step).to(px.device)
        per_patch = self._loss(wrapped(pixel_values=px, bool_masked_pos=mask), px, mask)
        return {"loss": TokenLoss(per_patch.sum(), mask.sum())}

    def evaluate(self, model, final: bool = False) -> Dict[str, Any]:
        masks = self.eval_masks()
        total, count = 0.0, 0
        with torch.no_grad():
            for px in self.heldout(model.device, self.recipe.eval.max_images):
                mask = masks(len(px)).to(px.device)
                total += float(self._loss(model(pixel_values=px, bool_masked_pos=mask), px, mask).sum())
                count += int(mask.sum())
        return {"eval_loss": total / require_items(count, "feature-target evaluation: masked patches")}
