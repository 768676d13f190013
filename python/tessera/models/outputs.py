"""Model outputs with Hugging Face's field names, readable as attributes or keys.

The C++ side lists each output struct's fields once (csrc/tessera/models/outputs.h) and the
binding hands over a dict tagged with the class name; `make_output` builds the class here. Every
output class is a pytree node, as transformers registers its ModelOutputs, so FSDP2 and
`torch.utils.checkpoint` find the tensors inside.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Tuple

import torch.utils._pytree as pytree

_CLASSES: Dict[str, type] = {}


class ModelOutput(OrderedDict):
    """Like transformers' ModelOutput: `out.loss`, `out["loss"]`, `out[0]` (the first field that
    is set) and `out.to_tuple()`. A declared field that was not computed reads as None; a name the
    class does not declare is an AttributeError (a typo returned None)."""

    #: the field names, transformers' (and tessera's additions); empty: not declared (lenient)
    fields: Tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls
        pytree.register_pytree_node(
            cls,
            lambda out: (list(out.values()), list(out.keys())),
            lambda values, keys, cls=cls: cls(zip(keys, values)),
            serialized_type_name=f"{cls.__module__}.{cls.__name__}",
        )

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            if name.startswith("__") or (self.fields and name not in self.fields):
                raise AttributeError(f"{type(self).__name__} has no field {name!r}"
                                     + (f" (fields: {', '.join(self.fields)})" if self.fields else "")) from None
            return None  # HF returns None for fields that were not computed

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def to_tuple(self) -> tuple:
        return tuple(v for v in self.values() if v is not None)


class BaseModelOutputWithPooling(ModelOutput):
    """last_hidden_state, pooler_output, hidden_states."""
    fields = ("last_hidden_state", "pooler_output", "hidden_states", "attentions")


class CLIPOutput(ModelOutput):
    """loss, logits_per_image, logits_per_text, text_embeds, image_embeds,
    text_model_output, vision_model_output."""
    fields = ("loss", "logits_per_image", "logits_per_text", "text_embeds", "image_embeds", "text_model_output",
              "vision_model_output")


class IntermediatesOutput(ModelOutput):
    """last_hidden_state, intermediates (timm's forward_intermediates)."""
    fields = ("last_hidden_state", "intermediates")


def make_output(d: Dict[str, Any]) -> ModelOutput:
    """The ModelOutput for a dict from the C++ binding (its "__output__" names the class)."""
    name = d.pop("__output__")
    cls = _CLASSES.get(name) or type(name, (ModelOutput,), {"__module__": __name__})
    return cls((k, make_output(v) if isinstance(v, dict) and "__output__" in v else v) for k, v in d.items())


def as_tuple(out: Any) -> Any:
    """transformers' `return_dict=False`: an output as the tuple of its set fields, nested too."""
    if isinstance(out, ModelOutput):
        return tuple(as_tuple(v) for v in out.to_tuple())
    return out
