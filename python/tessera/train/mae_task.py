"""The MAE objective for the Trainer: images in, masked-patch pixel loss (a TokenLoss over masked
patches, so accumulation and ranks weigh every patch alike), evaluation loss on held-out images
with fixed masks, and reconstruction pictures (original | masked | reconstruction | pasted)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict

import torch

from ..eval.finite import require_items
from .. import data as tdata
from ..models.mae import ViTMAEForPreTraining
from ..models.timm_compat import MAE_DATA
from ..seeds import sample_seed
from .image_data import ImageData, pipeline_settings, sample_ids
from .image_task import ImageTask
from .optim import only_vectors_and_biases
from .tasks import TokenLoss, register_task


@dataclass
class MaeEval:
    max_images: int = 1024                  # held-out images for the evaluation loss (0: all)
    pictures: int = 8                       # rows in reconstruction.png (0: none)

    def validate(self, where: str) -> None:
        if self.max_images < 0 or self.pictures < 0:
            raise ValueError(f"{where}: max_images and pictures must be >= 0")


@register_task("mae")
class MaeTask(ImageTask):
    sections = {"data": ImageData, "eval": MaeEval}
    model_class = ViTMAEForPreTraining
    _pictures = None

    # MAE's main_pretrain.py: RandomResizedCrop(scale=(0.2, 1.0), bicubic), RandomHorizontalFlip,
    # ImageNet's mean and std.
    train_augmentation = {"scale": (0.2, 1.0), "hflip_prob": 0.5}
    image_pipeline = MAE_DATA

    def no_weight_decay(self, name, param) -> bool:
        return only_vectors_and_biases(name, param)  # MAE's main_pretrain.py: the tokens decay

    def compute_loss(self, wrapped, model, batch, step):
        px = batch["pixel_values"].to(model.device, non_blocking=True)  # pinned: the copy overlaps
        # MAE's random_masking noise, drawn per sample from (seed, step, the sample) rather than
        # the rank's global RNG: the same masks on any number of ranks (see ImageTask.train_masks).
        n = (px.shape[-1] // model.config["patch_size"]) ** 2
        noise = torch.stack([torch.rand(n, generator=torch.Generator().manual_seed(
            sample_seed(self.recipe.train.seed, step, sample, 1013))) for sample in sample_ids(batch)])
        out = wrapped(pixel_values=px, noise=noise.to(px.device),
                      interpolate_pos_encoding=px.shape[-1] != model.config["image_size"])
        masked = out.mask.sum()
        return {"loss": TokenLoss(out.loss * masked, masked)}

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, model: ViTMAEForPreTraining, final: bool = False) -> Dict[str, Any]:
        """Masked-patch loss on held-out images with fixed masks; the first images' pictures are
        kept for plot() and, when the trainer has set `out_dir`, written at every evaluation."""
        cfg = self.recipe.eval
        g = torch.Generator().manual_seed(1234)  # the same masks at every evaluation
        n = (self.recipe.data.image_size // model.config["patch_size"]) ** 2
        total, count, seen = 0.0, 0.0, 0
        with torch.no_grad():
            for px in self.heldout(model.device, cfg.max_images):
                out = model(pixel_values=px, noise=torch.rand(len(px), n, generator=g).to(px.device),
                            interpolate_pos_encoding=px.shape[-1] != model.config["image_size"])
                total += float(out.loss) * float(out.mask.sum())
                count += float(out.mask.sum())
                if seen == 0 and cfg.pictures:
                    self._pictures = self._pictures_of(model, px[:cfg.pictures], out.logits[:cfg.pictures],
                                                       out.mask[:cfg.pictures])
                seen += len(px)
        self._evaluations = getattr(self, "_evaluations", 0) + 1
        if self.out_dir and self.rank == 0 and self._pictures is not None and not final and self.recipe.train.plots:
            os.makedirs(os.path.join(self.out_dir, "reconstructions"), exist_ok=True)
            self._write(os.path.join(self.out_dir, "reconstructions", f"eval-{self._evaluations:03d}.png"))
        return {"eval_loss": total / require_items(count, "MAE evaluation: masked patches")}

    def _pictures_of(self, model, px, logits, mask):
        """Display images in [0, 1]: original, masked (grey patches), reconstruction, and the
        reconstruction with the visible patches pasted back."""
        target = model.patchify(px, True)
        if model.config.get("norm_pix_loss"):  # predictions are per-patch normalised: undo with the target's stats
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            logits = logits * (var + 1e-6).sqrt() + mean
        hidden = mask.unsqueeze(-1).expand_as(target)
        size = tuple(px.shape[-2:])
        recon = model.unpatchify(logits.to(target.dtype), size)
        blended = model.unpatchify(torch.where(hidden > 0, logits.to(target.dtype), target), size)
        where_hidden = model.unpatchify(hidden.to(target.dtype), size) > 0
        c = px.shape[1]
        stats = pipeline_settings(self.recipe.data, self.image_pipeline)  # what the loader normalised with
        mean = torch.tensor(stats["mean"][:c]).view(1, c, 1, 1).to(px.device)
        std = torch.tensor(stats["std"][:c]).view(1, c, 1, 1).to(px.device)

        grey = bool((px[:, :1] * std[:, :1] + mean[:, :1] - (px * std + mean)).abs().max() < 1e-3)

        def show(x):  # back to [0, 1]; grey inputs (Fashion-MNIST's three equal channels) shown grey
            x = (x.float() * std + mean).clamp(0, 1)
            return (x.mean(1) if grey else x.permute(0, 2, 3, 1)).cpu()

        original = show(px)
        masked = show(torch.where(where_hidden, (0.5 - mean) / std, px))
        return original, masked, show(recon), show(blended), int(mask[0].sum()), mask.shape[1]

    def _write(self, path: str) -> str:
        from ..viz import plot_reconstructions

        original, masked, recon, blended, hidden, total = self._pictures
        return plot_reconstructions(original, masked, recon, blended, path,
                                    f"MAE on held-out images, {hidden}/{total} patches masked")

    def plot(self, out_dir: str, metrics_path: str, metrics: Dict[str, Any]) -> None:
        super().plot(out_dir, metrics_path, metrics)
        if self._pictures is not None:
            self._write(os.path.join(out_dir, "reconstruction.png"))

    @classmethod
    def memory_shape(cls, recipe):
        """MAE for `tessera plan`: the encoder over the visible patches, the decoder over all."""
        from ..plan import ModelShape, Stack
        from ..plan.shapes import patch_count

        c, d = cls.model_config(recipe), recipe.data
        n = patch_count(d.image_size, c["patch_size"])
        keep = int(n * (1 - c["mask_ratio"]))
        h, dh, p2c = c["hidden_size"], c["decoder_hidden_size"], c["patch_size"] ** 2 * c["num_channels"]
        stacks = [Stack("encoder", c["num_hidden_layers"], keep + 1, h, c["intermediate_size"],
                        c["num_attention_heads"], qkv_bias=c["qkv_bias"]),
                  Stack("decoder", c["decoder_num_hidden_layers"], n + 1, dh, c["decoder_intermediate_size"],
                        c["decoder_num_attention_heads"], qkv_bias=c["qkv_bias"])]
        grid = (c["image_size"] // c["patch_size"]) ** 2 + 1
        other = (h * p2c + h + h + grid * h + 2 * h          # patch projection, class token, sin-cos table, norm
                 + h * dh + dh + dh + grid * dh + 2 * dh      # decoder embed, mask token, table, norm
                 + dh * p2c + p2c)                            # pixel head
        pixels = c["num_channels"] * d.image_size ** 2 * 4
        # Outside the layers: patch embeddings, the kept tokens, the decoder's filled-in sequence,
        # predictions, targets and their difference.
        acts = 4 * (2 * n * h + 2 * (keep + 1) * h + 3 * (n + 1) * dh + 3 * n * p2c) + 2 * pixels
        return ModelShape("mae", stacks, other_params=other, other_activations_per_sample=acts,
                          sample_bytes=pixels, batch_size=d.batch_size, prefetch=d.prefetch)
