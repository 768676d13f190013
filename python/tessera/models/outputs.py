"""Model outputs with Hugging Face's field names, readable as attributes or keys."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any


class ModelOutput(OrderedDict):
    """Like transformers' ModelOutput: `out.loss`, `out["loss"]`, and `out.to_tuple()`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            if name.startswith("__"):
                raise AttributeError(name) from None
            return None  # HF returns None for fields that were not computed

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def to_tuple(self) -> tuple:
        return tuple(v for v in self.values() if v is not None)


class BaseModelOutputWithPooling(ModelOutput):
    """last_hidden_state, pooler_output, hidden_states."""


class CLIPOutput(ModelOutput):
    """loss, logits_per_image, logits_per_text, text_embeds, image_embeds,
    text_model_output, vision_model_output."""
