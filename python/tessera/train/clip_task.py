"""The CLIP objective for the Trainer: image batches, captions (from the dataset or from class
names x templates), contrastive loss across ranks, zero-shot / retrieval evaluation, plots."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from .. import data as tdata
from ..eval import (RetrievalSplit, caption_retrieval_evaluate, retrieval_evaluate, zero_shot_classifier,
                    zero_shot_evaluate)
from ..models.clip import CLIPModel
from ..text import ClipTokenizer
from ..models.timm_compat import CLIP_DATA
from .image_data import (ImageData, Shards, batch_captions, caption_or_label, image_dataset, image_loader,
                         inherit_from_pretrained, labelled, pipeline_settings, save_image_processor)
from .optim import open_clip_no_decay
from .tasks import Task, register_task


def trim_trailing_padding(ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """`ids` without the columns after every row's last token (padding in every row). The loss
    reads CLIP's text features at each row's end-of-text token, and causal attention keeps later
    positions from reaching it, so the features are the same (within float rounding) while the
    text tower computes ~9 columns instead of 77 for short captions: a ViT-B/32 step at batch 16
    took 2.9 s instead of 4.4 s. transformers' padding="longest" does the same; open_clip and
    transformers' CLIP training script pad every batch to 77."""
    used = (ids != pad_id).any(0).nonzero()
    return ids[:, : int(used.max()) + 1] if used.numel() else ids


def caption_split(dataset, max_images: int = 0) -> Optional[RetrievalSplit]:
    """A caption file's rows as a retrieval split, grouped by image (COCO's five rows per image
    scored as five separate "images" gave R@1 0.18 where the papers' rule gives 0.92); None for
    datasets without rows of their own (class folders, shards)."""
    entries = getattr(dataset, "entries", None)
    return None if entries is None else RetrievalSplit.from_pairs("eval", entries, max_images)


@dataclass
class ClipData(ImageData):
    templates: List[str] = field(default_factory=lambda: ["a photo of a {}."])
    class_names: Optional[List[str]] = None  # caption names for classes (defaults: dataset names)
    context_length: int = 77

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.context_length < 1:
            raise ValueError(f"{where}.context_length must be >= 1, got {self.context_length}")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError(f"{where}.templates: each template needs a {{}} for the class name, got {self.templates}")


@dataclass
class ClipLossConfig:
    kind: str = "clip"                      # clip | siglip
    local_loss: bool = False
    gather_with_grad: bool = True

    def validate(self, where: str) -> None:
        if self.kind not in ("clip", "siglip"):
            raise ValueError(f"{where}.kind must be clip or siglip, got {self.kind!r}")


@dataclass
class ClipEval:
    zero_shot: bool = True
    retrieval: bool = False
    max_images: int = 0                     # 0: all evaluation images

    def validate(self, where: str) -> None:
        if self.max_images < 0:
            raise ValueError(f"{where}.max_images must be >= 0 (0: all), got {self.max_images}")


@register_task("clip")
class ClipTask(Task):
    sections = {"data": ClipData, "loss": ClipLossConfig, "eval": ClipEval}
    model_class = CLIPModel
    # open_clip's image_transform(is_train=True): RandomResizedCrop(scale=(0.9, 1.0), bicubic), no flip.
    train_augmentation = {"scale": (0.9, 1.0), "hflip_prob": 0.0}
    # open_clip's accum_freq recomputes against cached features instead (not built).
    batch_coupled = "the contrastive loss compares each pair with the batch's others"
    image_pipeline = CLIP_DATA  # its family's normalisation (timm_compat)

    def __init__(self, recipe, rank: int = 0, world_size: int = 1):
        super().__init__(recipe, rank, world_size)
        inherit_from_pretrained(recipe, self.image_pipeline)
        self.tokenizer = ClipTokenizer(context_length=recipe.data.context_length)
        self.train_set = self._dataset(train=True)
        self.class_names: List[str] = list(recipe.data.class_names or getattr(self.train_set, "classes", []) or [])
        from ..losses import ClipLoss, SigLipLoss

        lc = recipe.loss
        if lc.kind == "clip":
            self.loss_fn = ClipLoss(local_loss=lc.local_loss, gather_with_grad=lc.gather_with_grad,
                                    rank=rank, world_size=world_size)
        else:
            self.loss_fn = SigLipLoss(rank=rank, world_size=world_size)

    def save_beside(self, folder: str) -> None:
        """The tokenizer and image processor: CLIPProcessor, and transformers' zero-shot pipeline,
        read the checkpoint as tessera prepares its captions and images."""
        self.tokenizer.save_pretrained(folder)
        save_image_processor(folder, self.recipe.data, self.image_pipeline)

    # ---- data -----------------------------------------------------------------------------
    def _dataset(self, train: bool):
        return image_dataset(self.recipe.data, train)

    def _loader(self, dataset, train: bool, rank: int, world_size: int, select=None):
        return image_loader(self.recipe.data, dataset, train, self.recipe.train.seed, rank, world_size,
                            self.train_augmentation, select=select or caption_or_label(self.class_names))

    def train_loader(self, rank: int, world_size: int):
        return self._loader(self.train_set, True, rank, world_size)

    def captions(self, batch: Dict[str, Any], step: int) -> List[str]:
        return batch_captions(self.recipe.data, self.class_names, batch, self.recipe.train.seed, step)

    # ---- model and loss ---------------------------------------------------------------------
    def batch_size(self, batch: Dict[str, Any]) -> int:
        return len(batch["labels"])

    @classmethod
    def memory_shape(cls, recipe):
        """CLIP for `tessera plan`: the two towers at the recipe's image size and context length."""
        from ..plan import ModelShape, Stack
        from ..plan.shapes import patch_count

        c, d = cls.model_config(recipe), recipe.data
        v, t = c["vision_config"], c["text_config"]
        patches = patch_count(d.image_size, v["patch_size"])
        lv, lt = patches + 1, cls._text_columns(recipe)
        stacks = [Stack("vision", v["num_hidden_layers"], lv, v["hidden_size"], v["intermediate_size"],
                        v["num_attention_heads"]),
                  Stack("text", t["num_hidden_layers"], lt, t["hidden_size"], t["intermediate_size"],
                        t["num_attention_heads"])]
        hv, ht, proj = v["hidden_size"], t["hidden_size"], c["projection_dim"]
        other = (hv * v["num_channels"] * v["patch_size"] ** 2 + hv + (v["image_size"] // v["patch_size"]) ** 2 * hv
                 + hv + 4 * hv                                                   # class + pre/post norms
                 + t["vocab_size"] * ht + t["max_position_embeddings"] * ht + 2 * ht  # embeddings, final norm
                 + hv * proj + ht * proj + 1                                     # projections, logit_scale
                 + (c.get("logit_bias_init_value") is not None))                 # SigLIP's logit_bias
        pixels = 3 * d.image_size ** 2 * 4
        # Outside the layers: patch + position embeddings and the pre-norm (vision), token +
        # position embeddings and the final norm (text), the pixels' patch unfold.
        acts = 4 * (4 * lv * hv + 3 * lt * ht) + 2 * pixels
        return ModelShape("clip", stacks, other_params=other, other_activations_per_sample=acts,
                          sample_bytes=pixels + lt * 8, batch_size=d.batch_size, prefetch=d.prefetch)

    @staticmethod
    def _text_columns(recipe) -> int:
        """The most text columns a step computes: captions made from the templates end before
        `context_length`, and the padding after them is cut (`trim_trailing_padding`). Shards and
        caption files bring captions of any length: `context_length` then."""
        d = recipe.data
        if d.dataset not in ("fashion_mnist", "image_folder"):
            return d.context_length
        names = d.class_names or image_dataset(d, True).classes
        captions = [t.format(n) for t in d.templates for n in names]
        return int(trim_trailing_padding(ClipTokenizer()(captions, context_length=d.context_length)).shape[1])

    def compute_loss(self, wrapped, model: CLIPModel, batch: Dict[str, Any], step: int) -> Dict[str, torch.Tensor]:
        device = model.device
        ids = self.tokenizer(self.captions(batch, step), context_length=self.recipe.data.context_length)
        out = wrapped(input_ids=trim_trailing_padding(ids).to(device),
                      pixel_values=batch["pixel_values"].to(device, non_blocking=True))  # pinned: the copy overlaps
        # The loss in fp32, as autocast computes it under DDP: FSDP2's bf16 policy turns autocast
        # off and handed bf16 features to a bf16 matmul and cross-entropy.
        image, text = out.image_embeds.float(), out.text_embeds.float()
        if self.recipe.loss.kind == "siglip":
            loss = self.loss_fn(image, text, model.logit_scale.exp(), model.logit_bias)
        else:
            loss = self.loss_fn(image, text, model.logit_scale.exp())
        return {"loss": loss, "logit_scale": model.logit_scale.detach().exp()}

    def build_model(self):
        model = super().build_model()
        if self.recipe.loss.kind == "siglip" and getattr(model, "logit_bias", None) is None:
            raise ValueError("loss.kind siglip needs a model with a logit_bias parameter (SigLIP's learned bias): set "
                             "model.config.logit_bias_init_value (the paper: -10, with logit_scale_init_value "
                             "2.302585, log 10), or train with loss.kind clip")
        return model

    def no_weight_decay(self, name: str, param: torch.Tensor) -> bool:
        return open_clip_no_decay(name, param)

    def after_step(self, model: CLIPModel) -> None:
        with torch.no_grad():  # CLIP clamps the temperature so logits stay <= 100
            model.logit_scale.clamp_(0, math.log(100))

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, model: CLIPModel, final: bool = False) -> Dict[str, Any]:
        cfg = self.recipe
        eval_set = self._dataset(train=False)
        out: Dict[str, Any] = {}
        if cfg.eval.zero_shot and self.class_names:
            classifier = zero_shot_classifier(model, self.tokenizer, self.class_names, cfg.data.templates,
                                              cfg.data.context_length)
            loader = self._loader(eval_set, False, 0, 1, labelled(self.class_names))
            out.update(zero_shot_evaluate(model, loader, classifier, cfg.eval.max_images))
            if final:
                self._grid_source = next(iter(self._loader(eval_set, False, 0, 1, labelled(self.class_names))))
        split = caption_split(eval_set, cfg.eval.max_images) if cfg.eval.retrieval else None
        if split is not None:  # a caption file: each image once, a hit on any of its captions
            out.update(self.evaluate_split(model, split))
        elif cfg.eval.retrieval:
            loader = self._loader(eval_set, False, 0, 1)
            # One caption per class (the first template), not a drawn one: a hit must not hang on
            # which template an image happened to draw.
            first = cfg.data.templates[0] if cfg.data.templates else "{}"
            batches = ({**b, "captions": [c or first.format(self.class_names[int(label)]) for c, label in
                                          zip(list(b.get("captions") or [""] * len(b["labels"])), b["labels"])]}
                       for b in loader)
            # Shards written from a caption file repeat each image per caption: one image, as there.
            out.update(retrieval_evaluate(model, batches, self.tokenizer, cfg.data.context_length,
                                          cfg.eval.max_images, group=isinstance(eval_set, Shards)))
        return out

    def evaluate_split(self, model: CLIPModel, split: RetrievalSplit) -> Dict[str, float]:
        d = self.recipe.data
        return caption_retrieval_evaluate(model, split, self.tokenizer, d.image_size, d.context_length, d.batch_size,
                                          pipeline=pipeline_settings(d, self.image_pipeline))

    def plot(self, out_dir: str, metrics_path: str, metrics: Dict[str, Any]) -> None:
        from ..viz import plot_confusion, plot_eval_curves, plot_prediction_grid, plot_training_curves, read_metrics

        rows = read_metrics(metrics_path)
        plot_training_curves(rows, os.path.join(out_dir, "loss.png"))
        plot_eval_curves(rows, os.path.join(out_dir, "eval.png"))
        if "confusion" in metrics:
            plot_confusion(metrics["confusion"], self.class_names, os.path.join(out_dir, "confusion.png"))
            batch = getattr(self, "_grid_source", None)
            if batch is not None:
                n = 16
                stats = pipeline_settings(self.recipe.data, self.image_pipeline)  # what the loader normalised with
                mean, std = (torch.tensor(stats[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
                imgs = ((batch["pixel_values"][:n] * std + mean).clamp(0, 1) * 255).to(torch.uint8)
                imgs = imgs.permute(0, 2, 3, 1)
                if bool((imgs[..., 0] == imgs[..., 1]).all()):
                    imgs = imgs[..., 0]
                captions = [self.recipe.data.templates[0].format(c) for c in self.class_names]
                plot_prediction_grid(imgs, metrics["labels"][:n], metrics["top5"][:n], captions,
                                     os.path.join(out_dir, "predictions.png"), n)
