"""What open_clip's training and evaluation code calls on a CLIP model besides encode_image and
encode_text (clip.py): `model(image, text)` with its output, LiT's `lock_image_tower` /
`lock_text_tower` with open_clip's layer groups, and the attributes its scripts read
(`context_length`, `vocab_size`, `logit_bias`, `output_dict`). They failed before with an
AttributeError, or, for the call, with a message about input_ids' shape."""
from __future__ import annotations

import operator
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn


def _count(name: str, value) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= 0, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int >= 0, got {value!r}") from None
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


def _lock(groups: List[Sequence[nn.Module]], unlocked: int) -> None:
    """Freezes every group, then unfreezes the last `unlocked` (open_clip's `lock`)."""
    for group in groups:
        for module in group:
            module.requires_grad_(False)
    for group in groups[len(groups) - min(unlocked, len(groups)):]:
        for module in group:
            module.requires_grad_(True)


def is_image_first(input_ids: Any) -> bool:
    """open_clip's positional order, model(image, text): a [B, C, H, W] float tensor where
    transformers' order has input_ids (integer ids, [B, L]), so the two cannot be confused."""
    return isinstance(input_ids, torch.Tensor) and input_ids.dim() == 4 and input_ids.is_floating_point()


def open_clip_arguments(input_ids, pixel_values, image, text, others: Dict[str, Any]
                        ) -> Optional[Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]:
    """(image, text) of an open_clip call of CLIPModel (`image=` / `text=`, or an image batch
    first), None for a transformers call; `others` are the transformers arguments given besides."""
    if image is None and text is None and not is_image_first(input_ids):
        return None
    if is_image_first(input_ids):
        if image is not None:
            raise TypeError("model(image, ..., image=...): the image batch is given twice")
        image, input_ids = input_ids, None
        if pixel_values is not None:  # model(image, text): the second position is open_clip's text
            if text is not None:
                raise TypeError("model(image, text, text=...): the text batch is given twice")
            text, pixel_values = pixel_values, None
    mixed = [k for k, v in {"input_ids": input_ids, "pixel_values": pixel_values, **others}.items()
             if v is not None and v is not False]
    if mixed:
        raise TypeError(f"model(image, text) is open_clip's call and {', '.join(mixed)} transformers' arguments; "
                        "use one call or the other (transformers': input_ids=, pixel_values=)")
    return image, text


class OpenClipInterface:
    #: open_clip's flag (`create_model(..., output_dict=True)`): its call returns a dict, not a tuple.
    output_dict = False

    @property
    def context_length(self) -> int:
        return int(self.config["text_config"]["max_position_embeddings"])

    @property
    def vocab_size(self) -> int:
        return int(self.config["text_config"]["vocab_size"])

    @property
    def logit_bias(self) -> Optional[nn.Parameter]:
        """SigLIP's learned bias, None without one (open_clip's attribute is None then)."""
        return self._parameters.get("logit_bias")

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """LiT (Zhai et al. 2022) as open_clip locks it: the image tower and its projection frozen
        but for the last `unlocked_groups` of open_clip's groups (embeddings and pre-norm, each
        layer, the last layer with post_layernorm, the projection). `freeze_bn_stats` has nothing
        to freeze: a ViT has no batch norm (open_clip's ViT ignores it too)."""
        del freeze_bn_stats
        v = self.vision_model
        layers = list(v.encoder.layers)
        groups = [[v.embeddings, v.pre_layrnorm], *[[layer] for layer in layers[:-1]],
                  [layers[-1], v.post_layernorm], [self.visual_projection]]
        _lock(groups, _count("unlocked_groups", unlocked_groups))

    def lock_text_tower(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """The text tower and its projection frozen but for the last `unlocked_layers` of open_clip's
        groups (embeddings, each layer, the last layer with final_layer_norm, the projection).
        open_clip refuses `freeze_layer_norm=False` (its norms go with their groups), so does this."""
        if not freeze_layer_norm:
            raise ValueError("lock_text_tower(freeze_layer_norm=False): the norms are locked with their groups, as "
                             "open_clip does (it refuses the flag too)")
        t = self.text_model
        layers = list(t.encoder.layers)
        groups = [[t.embeddings], *[[layer] for layer in layers[:-1]], [layers[-1], t.final_layer_norm],
                  [self.text_projection]]
        _lock(groups, _count("unlocked_layers", unlocked_layers))

    def open_clip_forward(self, image: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None
                          ) -> Union[Tuple[Any, ...], Dict[str, Any]]:
        """open_clip's forward: L2-normalised image and text features (None for one not given),
        logit_scale.exp(), and logit_bias when the model has one; a dict with `output_dict`."""
        if image is None and text is None:
            raise ValueError("model(image, text) needs an image batch, a text batch, or both")
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        out = {"image_features": image_features, "text_features": text_features,
               "logit_scale": self.logit_scale.exp()}
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out if self.output_dict else tuple(out.values())
