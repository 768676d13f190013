"""A frozen teacher for feature targets (VQ-KD, feature-target MIM): a tessera CLIP vision tower
from a CLIP run, a CLIP checkpoint folder, or a config (random weights: tests and ablations);
its patch features at any layer come from forward_intermediates.

Two targets (`teacher.target`): `hidden`, a layer's output as the residual stream carries it
(the default: any layer, any CLIP tower); and `projected`, BEiT v2's (`modeling_vqkd.py`,
`get_regress_target`): every token through the final LayerNorm (`ln_post`), then CLIP's visual
projection, the space image-text training shaped (a CLIPModel checkpoint, the last layer)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch

from ..models.clip import CLIPVisionModel
from ..models.pretrained import read_config
from ..models.timm_compat import CLIP_DATA
from ..models.weights import load_weights
from .checkpoint import resolve_checkpoint
from .image_data import Renormalise, checkpoint_data_config, inherit_statistics, pipeline_settings


@dataclass
class TeacherSection:
    checkpoint_fields: ClassVar[Tuple[str, ...]] = ("checkpoint",)
    checkpoint: str = ""                    # a CLIP run folder (its newest checkpoint) or checkpoint folder
    config: Dict[str, Any] = field(default_factory=dict)  # else a CLIP vision config, random weights
    layer: int = -1                         # whose output: a forward_intermediates index (-1: the last)
    seed: int = 0                           # initialises a config-built teacher
    target: str = "hidden"                  # hidden | projected (BEiT v2's: ln_post, then visual_projection)

    def validate(self, where: str) -> None:
        if bool(self.checkpoint) == bool(self.config):
            raise ValueError(f"{where}: give either checkpoint (a CLIP run or checkpoint folder) or config")
        if self.target not in ("hidden", "projected"):
            raise ValueError(f"{where}.target must be hidden or projected, got {self.target!r}")
        if self.target == "projected" and (not self.checkpoint or self.layer != -1):
            raise ValueError(f"{where}.target projected is BEiT v2's target: the last layer (layer -1) of a CLIPModel "
                             "checkpoint, whose visual_projection it applies")


def teacher_statistics(d, section: TeacherSection, own: Dict[str, Any]) -> Dict[str, Any]:
    """The task's pixel statistics (`data`, whose family's are `own`): the teacher checkpoint's
    where the recipe names none (`inherit_statistics`, written into `d`); `clip_transform` keywords."""
    if section.checkpoint:
        inherit_statistics(d, resolve_checkpoint(section.checkpoint, "teacher.checkpoint",
                                                 "train the CLIP recipe first: make demo"), own)
    return pipeline_settings(d, own)


def load_teacher(section: TeacherSection, pixels: Optional[Dict[str, Any]] = None) -> CLIPVisionModel:
    """The frozen vision tower, in eval mode, without gradients. With `pixels` (the statistics the
    task's batches are normalised with), `teacher_features` renormalises them as the teacher's own
    run (or image processor) did, where the two differ (`renormalise`)."""
    if section.checkpoint:
        folder = resolve_checkpoint(section.checkpoint, "teacher.checkpoint", "train the CLIP recipe first: make demo")
        config = read_config(folder)
        vision = config.get("vision_config", config)
        if config.get("model_type") not in ("clip", "clip_vision_model"):
            raise ValueError(f"{folder}/config.json: the teacher must be a CLIP model, got model_type "
                             f"{config.get('model_type')!r}")
        model = CLIPVisionModel(vision)
        state = load_weights(folder)
        projection = state.get("visual_projection.weight")
        if "vision_config" in config:  # a CLIPModel: keep its vision tower's tensors
            state = {k: v for k, v in state.items() if k.startswith("vision_model.")}
        model.load_state_dict(state, strict=True)
        if section.target == "projected":
            if projection is None:
                raise ValueError(f"{folder}: teacher.target projected needs a CLIPModel checkpoint (its "
                                 "visual_projection.weight); this one has none")
            model.target_projection = projection.detach().float()  # [projection_dim, hidden], no bias
        if pixels is not None:
            model.renormalise = Renormalise(pixels, checkpoint_data_config(folder, CLIP_DATA))
    else:
        with torch.random.fork_rng():
            torch.manual_seed(section.seed)
            model = CLIPVisionModel(section.config)
    model.eval().requires_grad_(False)
    return model


def teacher_width(section: TeacherSection) -> int:
    """The target's width: the tower's hidden size, or the projection's for `projected`."""
    config = section.config or read_config(resolve_checkpoint(section.checkpoint, "teacher.checkpoint"))
    if section.target == "projected":
        return int(config["projection_dim"])
    return int(config.get("vision_config", config).get("hidden_size", 768))


def tower_input(tower: CLIPVisionModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """A batch as a frozen tower loaded with `pixels` reads it (`load_teacher`)."""
    renormalise = getattr(tower, "renormalise", None)
    return renormalise(pixel_values) if renormalise is not None else pixel_values


@torch.no_grad()
def teacher_features(teacher: CLIPVisionModel, pixel_values: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """[B, patches, width]: the chosen layer's patch tokens (class token dropped), or with a
    `target_projection` (teacher.target projected), the last layer's after ln_post, projected."""
    c = teacher.config
    if pixel_values.shape[-1] != c["image_size"] or pixel_values.shape[-2] != c["image_size"]:
        raise ValueError(f"teacher expects {c['image_size']}px images (patch grid "
                         f"{c['image_size'] // c['patch_size']}), got {tuple(pixel_values.shape[-2:])}")
    projection = getattr(teacher, "target_projection", None)
    pixel_values = tower_input(teacher, pixel_values)
    (feats,) = teacher.forward_intermediates(pixel_values, indices=[layer], norm=projection is not None,
                                             stop_early=True, intermediates_only=True)
    if projection is not None:
        feats = feats @ projection.to(feats.device, feats.dtype).t()
    return feats[:, 1:]
