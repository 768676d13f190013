"""What timm's helpers read from a model, for the image families: `no_weight_decay()` (names or
patterns that `timm.optim.create_optimizer_v2` keeps out of weight decay, as timm's own ViT and
BEiT declare theirs), `pretrained_cfg` (what `timm.data.resolve_data_config` builds the input
pipeline from) and `group_matcher` (layer decay). Without them timm decayed position embeddings
and tokens, gave CLIP and BEiT ImageNet's mean and std, and layer decay did nothing, silently.
Every image tower has them (features.VisionFeatures, with the family's values below); CLIPModel
and BEiT's pretraining model through the classes here."""
from __future__ import annotations

from typing import Any, Dict, Set, Tuple

from ..data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: CLIP's position and class embeddings: what timm's ViT (`pos_embed`, `cls_token`) and open_clip
#: (train/optim.py `open_clip_no_decay`) keep out of weight decay, besides vectors and biases.
CLIP_NO_DECAY = ("position_embedding", "class_embedding")
#: timm's `Beit.no_weight_decay`: the class token, absolute position embeddings and every relative
#: position bias table. BEiT's own pretraining scripts decay the tables (tessera's BEiT recipe
#: follows them: train/optim.py `beit_pretraining_no_decay`); this is for timm's helpers.
BEIT_NO_DECAY = ("cls_token", "position_embeddings", "relative_position_bias_table")
MAE_NO_DECAY = ("cls_token", "position_embeddings")

#: The input pipelines of timm's ports: open_clip's evaluation transform for CLIP (bicubic resize,
#: a centre crop of all of it, OpenAI's mean and std) and BLIP-2 (its processor resizes to the
#: square); BEiT's Inception mean and std; MAE's ImageNet ones.
CLIP_DATA = {"interpolation": "bicubic", "mean": tuple(OPENAI_CLIP_MEAN), "std": tuple(OPENAI_CLIP_STD), "crop_pct": 1.0}
BEIT_DATA = {"interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.9}
MAE_DATA = {"interpolation": "bicubic", "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": 0.9}
BLIP2_DATA = {**CLIP_DATA, "crop_mode": "squash"}  # LAVIS's and transformers' processors: no crop


def transform_settings(data_config: Dict[str, Any]) -> Dict[str, Any]:
    """`clip_transform` keywords of a pipeline above (or a model's pretrained_cfg): its mean, std,
    interpolation, and squash for timm's crop_mode "squash"."""
    return {"mean": tuple(data_config["mean"]), "std": tuple(data_config["std"]),
            "interpolation": data_config.get("interpolation", "bicubic"),
            "resize_mode": "squash" if data_config.get("crop_mode") == "squash" else "shortest"}


def model_data_config(model) -> Dict[str, Any]:
    """The data config a model's images are normalised with: its pretrained_cfg, or its image
    tower's (BLIP-2's and LLaVA's parents), else CLIP's."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(getattr(model, "vision_model", None), "pretrained_cfg",
                                                            None) or getattr(getattr(model, "vision_tower", None),
                                                                             "pretrained_cfg", None)
    return dict(cfg or CLIP_DATA)


def model_transform_settings(model) -> Dict[str, Any]:
    """`clip_transform` keywords of `model_data_config`."""
    return transform_settings(model_data_config(model))


class TimmNames:
    """What every class below answers timm with: `no_weight_decay()` from the class's `_no_decay`
    names (parts of parameter names), and `default_cfg`, timm's older name of `pretrained_cfg`."""

    _no_decay: Tuple[str, ...] = ()

    def no_weight_decay(self) -> Set[str]:
        return {f"*{name}*" for name in self._no_decay}

    @property
    def default_cfg(self) -> Dict[str, Any]:
        return self.pretrained_cfg


class ClipTimmInterface(TimmNames):
    """CLIPModel's: both towers' embeddings kept out of decay; the image tower's pipeline."""

    _no_decay = CLIP_NO_DECAY

    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        return self.vision_model.pretrained_cfg


class EncoderPipeline:
    """A pretraining model's `pretrained_cfg`: its encoder's (timm's helpers gave ImageNet's at
    224 px for MAE's and BEiT's pretraining models)."""

    _encoder = ""

    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        return getattr(self, self._encoder).pretrained_cfg

    @property
    def default_cfg(self) -> Dict[str, Any]:
        return self.pretrained_cfg


class BeitTimmInterface(EncoderPipeline, TimmNames):
    """BEiT's pretraining model (its encoder `beit` is a VisionFeatures)."""

    _no_decay, _encoder = BEIT_NO_DECAY, "beit"
