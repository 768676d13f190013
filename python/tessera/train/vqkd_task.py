"""VQ-KD tokenizer training for the Trainer: the frozen teacher's patch features are the target of
the decoder (cosine loss) through the quantizer's codes; evaluation reports the held-out
reconstruction loss and how much of the codebook held-out images use."""
from __future__ import annotations

from typing import Any, Dict

import torch

from ..eval.finite import require_items
from ..models.quantizer import NormEMAQuantizer
from ..models.vqkd import VQKD
from .image_data import ImageData
from .image_task import HeldOutEval, ImageTask
from .tasks import register_task
from .teacher import TeacherSection, load_teacher, teacher_features, teacher_statistics, teacher_width


@register_task("vqkd")
class VqkdTask(ImageTask):
    sections = {"data": ImageData, "teacher": TeacherSection, "eval": HeldOutEval}
    model_class = VQKD

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        super().__init__(recipe, rank, world_size)
        self.teacher = load_teacher(recipe.teacher, teacher_statistics(recipe.data, recipe.teacher, self.image_pipeline))
        enc, t = self.model_config(recipe)["encoder_config"], self.teacher.config
        if enc["image_size"] // enc["patch_size"] != t["image_size"] // t["patch_size"]:
            raise ValueError(f"model.config.encoder_config: a {enc['image_size'] // enc['patch_size']}-patch grid "
                             f"cannot regress a teacher with a {t['image_size'] // t['patch_size']}-patch grid")
        recipe.model.config = {**(recipe.model.config or {}), "teacher_dim": teacher_width(recipe.teacher)}

    def build_model(self):
        if self.recipe.model.pretrained:
            return super().build_model()
        return VQKD(self.model_config(self.recipe))

    @classmethod
    def memory_shape(cls, recipe):
        """VQ-KD for `tessera plan`: the encoder over the patches, the decoder over the grid of codes
        (the frozen teacher counts its weights only: it runs without gradients)."""
        from ..plan import ModelShape
        from ..plan.beit import beit_encoder

        c, d = cls.model_config(recipe), recipe.data
        enc_c = c["encoder_config"]
        # The config as the task and the model resolve it (the decoder's grid and input width come
        # from the encoder, the target's width from the teacher).
        c = VQKD.resolve_config({**c, "teacher_dim": teacher_width(recipe.teacher)})
        encoder, enc_other = beit_encoder(c["encoder_config"], "encoder", d.image_size)
        dc = c["decoder_config"]
        decoder, dec_other = beit_encoder(dc, "decoder", dc["image_size"])
        n, h, hd = encoder.tokens - 1, encoder.hidden, decoder.hidden
        k, t = c["codebook_dim"], c["teacher_dim"]
        other = (enc_other + 2 * h + h * h + h + h * k + k             # final norm, encode_task_layer
                 + dec_other + 2 * hd + hd * hd + hd + hd * t + t)      # final norm, decode_task_layer
        pixels = enc_c["num_channels"] * d.image_size ** 2 * 4
        # Outside the layers, fitted with saved-tensor hooks (tests/python/test_plan_tasks.py): the
        # final norms and task layers (12 bytes per token and width), the unit-norm codes and the
        # straight-through path (18 per code element), reconstruction and target (8 per element),
        # the pixels; the codebook distances keep nothing (the code is an argmin).
        acts = 12 * (n + 1) * (h + hd) + 18 * n * k + 8 * n * t + pixels
        return ModelShape(recipe.task, [encoder, decoder], other_params=other, other_activations_per_sample=acts,
                          sample_bytes=pixels, batch_size=d.batch_size, prefetch=d.prefetch,
                          frozen_beside=sum(p.numel() for p in load_teacher(recipe.teacher).parameters()))

    def compute_loss(self, wrapped, model, batch, step):
        px = batch["pixel_values"].to(model.device, non_blocking=True)  # pinned: the copy overlaps
        target = teacher_features(self.teacher.to(px.device), px, self.recipe.teacher.layer)
        out = wrapped(pixel_values=px, target=target)
        return {"loss": out.loss, "rec_loss": out.rec_loss.detach(), "commit_loss": out.commit_loss.detach()}

    def after_step(self, model) -> None:
        for m in model.modules():
            if isinstance(m, NormEMAQuantizer):
                m.restart_dead_codes()

    def evaluate(self, model: VQKD, final: bool = False) -> Dict[str, Any]:
        total, count = 0.0, 0
        counts = torch.zeros(model.config["codebook_size"])
        with torch.no_grad():
            for px in self.heldout(model.device, self.recipe.eval.max_images):
                out = model(px, target=teacher_features(self.teacher.to(px.device), px, self.recipe.teacher.layer))
                total += float(out.rec_loss) * len(px)
                count += len(px)
                counts += torch.bincount(out.indices.flatten().cpu(), minlength=len(counts)).float()
        p = counts / counts.sum().clamp(min=1)
        return {"eval_rec_loss": total / require_items(count, "VQ-KD evaluation: held-out images"), "codes_used": float((counts > 0).float().mean()),
                "perplexity": float(torch.exp(-(p * p.clamp(min=1e-12).log()).sum()))}
