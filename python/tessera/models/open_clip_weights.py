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
never code a checkpoint's author wrote. What has no place in transformers' CLIP (open_clip's layer
scale, attentional pooling, a timm or Hugging Face tower) is refused by name."""
from __future__ import annotations

import os
import re
from typing import Dict, Mapping

import torch

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
    """The tensors of an open_clip checkpoint file: safetensors, or a pickle of tensors (a training
    checkpoint's `state_dict`, DDP's `module.` prefix removed, as open_clip's `load_checkpoint`)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return dict(_C.core.load_safetensors(path)[0])
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a TorchScript archive (OpenAI's original .pt), or code in the pickle
        raise ValueError(f"{path}: not a checkpoint of tensors that can be read without running code "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); OpenAI's TorchScript files: load "
                         "them once with open_clip and save model.state_dict() as safetensors") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or a training checkpoint holding one)")
    if loaded and all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module."):]: v for k, v in loaded.items()}
    return dict(loaded)


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
        elif key != "attn_mask":  # the causal mask, rebuilt by the model
            raise ValueError(f"{where}: '{key}' has no place in transformers' CLIP (open_clip's layer scale, "
                             "attentional pooling or a timm / Hugging Face tower); tessera's CLIPModel cannot "
                             "hold this checkpoint")
    return out


def load_open_clip(model: torch.nn.Module, path: str) -> None:
    """Loads an open_clip checkpoint file into a tessera CLIPModel of the same sizes."""
    from .weights import load_fitting

    if not hasattr(model, "encode_image"):
        raise ValueError(f"{path}: a checkpoint file is read as open_clip's CLIP; {type(model).__name__} loads a "
                         "checkpoint folder (config.json and model.safetensors)")
    where = f"{path} (an open_clip checkpoint)"
    load_fitting(model, to_transformers(read_state_dict(path), where), where)
