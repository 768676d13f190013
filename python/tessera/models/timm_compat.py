"""What timm's helpers read from a model, for the image families: `no_weight_decay()` (names or
patterns that `timm.optim.create_optimizer_v2` keeps out of weight decay, as timm's own ViT and
BEiT declare theirs) and CLIP's `pretrained_cfg` (what `timm.data.resolve_data_config` builds the
input pipeline from). Without them timm decayed position embeddings and tokens and gave CLIP
ImageNet's mean and std, silently."""
from __future__ import annotations

from typing import Any, Dict, Set

from ..data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


#: CLIP's position and class embeddings: what timm's ViT (`pos_embed`, `cls_token`) and open_clip
#: (train/optim.py `open_clip_no_decay`) keep out of weight decay, besides vectors and biases.
CLIP_NO_DECAY = ("position_embedding", "class_embedding")


class ClipTimmInterface:
    def no_weight_decay(self) -> Set[str]:
        return {f"*{name}*" for name in CLIP_NO_DECAY}

    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        """open_clip's evaluation transform (tessera's `create_model_and_transforms`): bicubic
        resize to the tower's size, a centre crop of all of it, OpenAI's mean and std."""
        vision = self.config.get("vision_config", self.config)
        size = int(vision["image_size"])
        return {"input_size": (3, size, size), "interpolation": "bicubic", "mean": tuple(OPENAI_CLIP_MEAN),
                "std": tuple(OPENAI_CLIP_STD), "crop_pct": 1.0, "crop_mode": "center", "num_classes": 0}

    @property
    def default_cfg(self) -> Dict[str, Any]:  # timm's older name
        return self.pretrained_cfg


class BeitTimmInterface:
    """timm's `Beit.no_weight_decay`: the class token, absolute position embeddings and every
    relative position bias table. BEiT's own pretraining scripts decay the tables (tessera's BEiT
    recipe follows them: train/optim.py `beit_pretraining_no_decay`); this is for timm's helpers."""

    def no_weight_decay(self) -> Set[str]:
        return {"*cls_token", "*position_embeddings", "*relative_position_bias_table"}
