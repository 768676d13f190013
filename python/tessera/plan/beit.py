"""A BEiT encoder for `tessera plan` (BEiT pretraining and the masked-feature task, and VQ-KD's
encoder and decoder): its layers as a `Stack` and its parameters outside them."""
from __future__ import annotations

from typing import Dict, Tuple

from .shapes import Stack, patch_count


def beit_encoder(c: Dict, name: str, image_size: int) -> Tuple[Stack, int]:
    """(the layers over the patches and the class token, the embedding and final-norm parameters)."""
    n = patch_count(image_size, c["patch_size"])
    h, heads = c["hidden_size"], c["num_attention_heads"]
    g = c["image_size"] // c["patch_size"]
    stack = Stack(name, c["num_hidden_layers"], n + 1, h, c["intermediate_size"], heads, k_bias=False,
                  layer_scale=c["layer_scale_init_value"] > 0)
    tables = (c["num_hidden_layers"] if c["use_relative_position_bias"] else 0) + (
        1 if c["use_shared_relative_position_bias"] else 0)
    other = (h * c["num_channels"] * c["patch_size"] ** 2 + h + h             # patch projection, class token
             + (h if c.get("use_mask_token") else 0)
             + ((g * g + 1) * h if c["use_absolute_position_embeddings"] else 0)
             + tables * ((2 * g - 1) ** 2 + 3) * heads)
    return stack, other
