"""open_clip's and OpenAI's CLIP checkpoint files (what open_clip's training writes, `epoch_N.pt`
with its `state_dict`, and the `open_clip_pytorch_model.bin` / `open_clip_model.safetensors` of
its pretrained weights) read into tessera's CLIPModel, whose layout is transformers'. open_clip's
`create_model("ViT-B-32", pretrained="/path/epoch_32.pt")` takes such a file; tessera's
`create_model` does too, the architecture coming from the named variant as in open_clip (OpenAI's
weights need the `-quickgelu` variants there and here). What changes no weight comes from the
variant too: transformers' CLIP pools the class token and the end of text (the first
`eos_token_id`, or the largest id where that is 2, transformers' legacy rule), masks text causally
and normalises with eps 1e-5; a checkpoint trained with open_clip's other pooling (`pool_type`
avg or last), `no_causal_mask` or another norm eps loads but computes otherwise.

Pickled files are read with `torch.load(weights_only=True)`: tensors and plain containers only,
never code a checkpoint's author wrote. A model built for another image size or context length gets
the checkpoint's position embeddings resampled as open_clip's `load_checkpoint` does (the image grid
bicubic with antialiasing, the class token kept; text positions linear). What has no place in transformers' CLIP (open_clip's layer
scale, attentional pooling, a timm or Hugging Face tower) is refused by name."""
from __future__ import annotations

import math
import os
import re
from typing import Dict, Mapping

import torch
import torch.nn.functional as F

from .. import _C

# open_clip's names within a residual block -> transformers' within an encoder layer.
_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_PLAIN = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
          "positional_embedding": "text_model.embeddings.position_embedding.weight",
          "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
          "logit_scale": "logit_scale", "logit_bias": "logit_bias",  # SigLIP's loss (open_clip_train --siglip)
          "visual.class_embedding": "vision_model.embeddings.class_embedding",
          "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
          "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
          "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
          "visual.ln_post.weight": "vision_model.post_layernorm.weight",
          "visual.ln_post.bias": "vision_model.post_layernorm.bias"}
# [width, embed] matrices applied as x @ P; transformers' projections are Linear weights, P^T.
_PROJECTIONS = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_RESBLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
_IN_PROJ = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")


def is_checkpoint_file(path) -> bool:
    """A file (not a folder) given as `pretrained`: open_clip's way."""
    return isinstance(path, (str, os.PathLike)) and os.path.isfile(path)


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of an open_clip checkpoint file (`weights.read_state_file`: a training
    checkpoint's `state_dict`, DDP's `module.` prefix removed, as open_clip's `load_checkpoint`)."""
    from .weights import read_state_file

    return read_state_file(path, "OpenAI's TorchScript files: load them once with open_clip and save "
                                 "model.state_dict() as safetensors")


def to_transformers(state: Mapping[str, torch.Tensor], where: str) -> Dict[str, torch.Tensor]:
    """open_clip's CLIP state dict in transformers' CLIPModel layout: q, k and v split from the
    fused in_proj, the projection matrices transposed."""
    if any(k.startswith(("text_model.", "vision_model.")) for k in state):
        raise ValueError(f"{where}: these are transformers' CLIP names, not open_clip's: give the folder of "
                         "config.json and model.safetensors to from_pretrained (or as pretrained=)")
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _PLAIN:
            out[_PLAIN[key]] = value
        elif key in _PROJECTIONS:
            out[_PROJECTIONS[key]] = value.t().contiguous()
        elif key == "text_projection.weight":  # open_clip's linear text projection
            out["text_projection.weight"] = value
        elif (m := _IN_PROJ.match(key)) is not None:
            tower, layer, kind = m.groups()
            prefix = f"{'vision_model' if tower else 'text_model'}.encoder.layers.{layer}.self_attn."
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{prefix}{name}.{kind}"] = part.contiguous()
        elif (m := _RESBLOCK.match(key)) is not None and m.group(3) in _BLOCK:
            tower, layer, name, kind = m.groups()
            out[f"{'vision_model' if tower else 'text_model'}.encoder.layers.{layer}.{_BLOCK[name]}.{kind}"] = value
        elif key not in ("attn_mask", "input_resolution", "context_length", "vocab_size"):
            # (the causal mask, rebuilt by the model; OpenAI's TorchScript metadata, which open_clip drops)
            from .weights import original_layout

            how = original_layout(state)
            raise ValueError(f"{where}: '{key}' has no place in transformers' CLIP (open_clip's layer scale, "
                             "attentional pooling or a timm / Hugging Face tower); tessera's CLIPModel cannot "
                             "hold this checkpoint" + (f" (its layout is {how})" if how else ""))
    return out


_IMAGE_POSITIONS = "vision_model.embeddings.position_embedding.weight"
_TEXT_POSITIONS = "text_model.embeddings.position_embedding.weight"


def resize_positions(state: Dict[str, torch.Tensor], model: torch.nn.Module, where: str) -> None:
    """Resamples the checkpoint's position embeddings to the model's image grid and context length,
    as open_clip's `resize_pos_embed` and `resize_text_pos_embed` do when it loads a checkpoint."""
    own = model.state_dict()
    for key in (_IMAGE_POSITIONS, _TEXT_POSITIONS):
        if key not in state or key not in own or state[key].shape == own[key].shape:
            continue
        old, new = state[key], own[key]
        if old.dim() != 2 or old.shape[1] != new.shape[1]:
            raise ValueError(f"{where}: {key} is {list(old.shape)}, the model's {list(new.shape)}: only the "
                             "number of positions can be resampled, not the width")
        if key == _TEXT_POSITIONS:  # [positions, width] -> [1, width, positions], linear in position
            state[key] = F.interpolate(old.t()[None], size=new.shape[0], mode="linear", align_corners=False)[0].t()
            continue
        side, new_side = math.isqrt(old.shape[0] - 1), math.isqrt(new.shape[0] - 1)
        if side * side != old.shape[0] - 1 or new_side * new_side != new.shape[0] - 1:
            raise ValueError(f"{where}: {key} has {old.shape[0]} positions, the model {new.shape[0]}: a class token "
                             "and a square grid are needed to resample them")
        grid = old[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", antialias=True, align_corners=False)
        state[key] = torch.cat([old[:1], grid.permute(0, 2, 3, 1).reshape(new_side * new_side, -1)])


def load_open_clip(model: torch.nn.Module, path: str) -> None:
    """Loads an open_clip checkpoint file into a tessera CLIPModel of the same sizes."""
    from .weights import load_fitting

    if not hasattr(model, "encode_image"):
        from .weights import original_layout, read_state_file

        how = original_layout(read_state_file(path))
        raise ValueError(f"{path}: a checkpoint file is read as open_clip's CLIP; {type(model).__name__} loads a "
                         "checkpoint folder (config.json and model.safetensors)" + (f"; this file's layout is {how}"
                                                                                   if how else ""))
    where = f"{path} (an open_clip checkpoint)"
    state = to_transformers(read_state_dict(path), where)
    resize_positions(state, model, where)
    load_fitting(model, state, where)


def force_overrides(kwargs: Dict, name: str, cls: type) -> Dict:
    """open_clip's `create_model` keywords `force_image_size`, `force_context_length` and
    `force_quick_gelu`, popped from `kwargs`, as config overrides of a CLIP variant."""
    given = {k: kwargs.pop(k) for k in ("force_image_size", "force_context_length", "force_quick_gelu") if k in kwargs}
    forced = {k: v for k, v in given.items() if v is not None and v is not False}  # open_clip's "not forced"
    if not forced:
        return {}
    if not hasattr(cls, "encode_image"):
        raise TypeError(f"create_model({name!r}): {', '.join(forced)}: open_clip's keywords for CLIP variants, "
                        f"not {cls.__name__}")
    out: Dict = {"vision_config": {}, "text_config": {}}
    size = forced.get("force_image_size")
    if size is not None:
        if isinstance(size, (tuple, list)):
            if len(size) != 2 or size[0] != size[1]:
                raise ValueError(f"create_model({name!r}): force_image_size={size!r}: tessera's towers take square "
                                 "images")
            size = size[0]
        out["vision_config"]["image_size"] = size
    if "force_context_length" in forced:
        out["text_config"]["max_position_embeddings"] = forced["force_context_length"]
    if forced.get("force_quick_gelu"):
        out["vision_config"]["hidden_act"] = out["text_config"]["hidden_act"] = "quick_gelu"
    return {k: v for k, v in out.items() if v}
