"""transformers' CLIPTextModelWithProjection and CLIPVisionModelWithProjection: one CLIP tower and
its projection into the joint space, `text_embeds` / `image_embeds` from one tower (what text-to-
image pipelines and retrieval indexes load). Parameter names are transformers' (`text_model.*`,
`text_projection.weight`), so their checkpoints load, and so does a CLIPModel folder (the tower's
sub-config and weights, the other tower's ignored), as in transformers."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from ..registry import register_model
from .clip import CLIPTextModel, CLIPVisionModel
from .outputs import ModelOutput
from .pretrained import PreTrainedModel


class CLIPTextModelOutput(ModelOutput):
    """text_embeds, last_hidden_state, hidden_states."""
    fields = ("text_embeds", "last_hidden_state", "hidden_states", "attentions")


class CLIPVisionModelOutput(ModelOutput):
    """image_embeds, last_hidden_state, hidden_states."""
    fields = ("image_embeds", "last_hidden_state", "hidden_states", "attentions")


class _WithProjection(PreTrainedModel):
    _tower: type = CLIPTextModel
    _part, _projection, _embeds, _output = "", "", "", ModelOutput

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__()
        config = dict(config or {})
        tower = self._tower(config)
        self.config = {**tower.config, "projection_dim": int(config.get("projection_dim", 512))}
        setattr(self, self._part, tower)
        # transformers' CLIP projection init: normal with std hidden ** -0.5 (initializer_factor 1)
        projection = nn.Linear(tower.config["hidden_size"], self.config["projection_dim"], bias=False)
        nn.init.normal_(projection.weight, std=tower.config["hidden_size"] ** -0.5)
        setattr(self, self._projection, projection)

    @classmethod
    def resolve_config(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        return {**cls._tower.resolve_config({k: v for k, v in config.items() if k != "projection_dim"}),
                "projection_dim": config.get("projection_dim", 512)}

    def _set_checkpointing(self, enable: bool) -> None:
        getattr(self, self._part)._set_checkpointing(enable)

    def _project(self, out) -> ModelOutput:
        embeds = getattr(self, self._projection)(out.pooler_output)
        return self._output(**{self._embeds: embeds, "last_hidden_state": out.last_hidden_state,
                               "hidden_states": out.hidden_states})


@register_model
class CLIPTextModelWithProjection(_WithProjection):
    model_type = "clip_text_model"
    architecture = "CLIPTextModelWithProjection"
    base_config_key = "text_config"
    input_embeddings = "text_model.embeddings.token_embedding"
    _tower, _part, _projection, _embeds, _output = (CLIPTextModel, "text_model", "text_projection", "text_embeds",
                                                    CLIPTextModelOutput)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False) -> CLIPTextModelOutput:
        return self._project(self.text_model(input_ids, attention_mask, output_hidden_states))


@register_model
class CLIPVisionModelWithProjection(_WithProjection):
    model_type = "clip_vision_model"
    architecture = "CLIPVisionModelWithProjection"
    base_config_key = "vision_config"
    main_input_name = "pixel_values"
    input_embeddings = "vision_model.embeddings.patch_embedding"
    _tower, _part, _projection, _embeds, _output = (CLIPVisionModel, "vision_model", "visual_projection",
                                                    "image_embeds", CLIPVisionModelOutput)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False,
                interpolate_pos_encoding: bool = False) -> CLIPVisionModelOutput:
        return self._project(self.vision_model(pixel_values, output_hidden_states, interpolate_pos_encoding))

    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        return self.vision_model.pretrained_cfg

    def probe_features(self):
        """`tessera eval --probe`'s feature function: the projected image embedding."""
        return lambda px: self(px).image_embeds
