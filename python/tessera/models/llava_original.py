"""LLaVA's own checkpoints (haotian-liu/LLaVA's `LlavaLlamaForCausalLM`, model_type `llava_llama`:
what its training scripts write) into a Hugging Face LLaVA folder that tessera and transformers
load, as transformers' convert_llava_weights_to_hf.py converts them: the language model's keys
under `language_model.`, `mm_projector.0/.2` as `multi_modal_projector.linear_1/_2`, the vision
tower from the CLIP folder `mm_vision_tower` names (LLaVA loads it by name; nothing is
downloaded here, so a local folder is given), and two tokens added after the vocabulary,
`<image>` and `<pad>`, the table padded to a multiple of 64 (llava-hf's layout: 32000 and 32001
for LLaVA-1.5). The new rows are the mean embedding (transformers samples them from a normal
around it: they are never read for `<image>`, whose positions hold image features).

    python -m tessera.cli import-llava liuhaotian-llava-v1.5-7b out/llava --vision-tower clip-vit-large-patch14-336

Beside the weights go the tower's preprocessor_config.json (LLaVA takes its tower's image
processor), the tokenizer with the two tokens in its tokenizer_config.json, and a recipe.json
naming LLaVA's image_aspect_ratio and the tokenizer, which `tessera chat` reads."""
from __future__ import annotations

import os
import shutil
from typing import Dict, Optional

import torch

from ..io import is_regular_file, read_json, write_json

TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
             "hidden_act", "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_bias", "head_dim")
PROJECTORS = {"mlp2x_gelu": {"0": "linear_1", "2": "linear_2"}, "linear": {"": "linear_1"}}


def original_weights(folder: str) -> Dict[str, torch.Tensor]:
    """The checkpoint's tensors: safetensors (model.safetensors or an index), or PyTorch .bin files
    (pytorch_model.bin or its index), read with weights_only, so no pickled code runs."""
    from .weights import INDEX, SINGLE, load_weights

    if any(is_regular_file(os.path.join(folder, f)) for f in (SINGLE, INDEX)):
        return load_weights(folder)
    index, single = os.path.join(folder, "pytorch_model.bin.index.json"), os.path.join(folder, "pytorch_model.bin")
    if is_regular_file(index):
        mapping = read_json(index, "a checkpoint index").get("weight_map")
        names = sorted(set(mapping.values())) if isinstance(mapping, dict) else []
        if not names or any(not isinstance(n, str) or "/" in n or n in (".", "..") for n in names):
            raise ValueError(f"{index}: weight_map must name shard files in the folder")
        files = [os.path.join(folder, n) for n in names]
    elif is_regular_file(single):
        files = [single]
    else:
        raise FileNotFoundError(f"{folder}: no weights (model.safetensors, pytorch_model.bin or their index; a "
                                "projector-only stage-1 output goes to init.projector)")
    from .weights import read_state_file

    state: Dict[str, torch.Tensor] = {}
    for path in files:
        state.update(read_state_file(path))
    return state


def load_llava_projector(model, path: str, config: dict) -> None:
    """`init.projector` for the MLP projectors: LLaVA's stage-1 output (`mm_projector.bin`, what
    `--pretrain_mm_mlp_adapter` takes: `model.mm_projector.0/.2` tensors) or a LLaVA checkpoint
    folder (LLaVA's own, or a tessera or Hugging Face LLaVA run)."""
    import re

    from .weights import load_part, load_weights, read_state_file

    kind = config.get("projector_type", "mlp2x_gelu")
    if os.path.isfile(path):
        state = read_state_file(path)
    elif is_regular_file(os.path.join(path, "config.json")) and read_json(os.path.join(path, "config.json"), "a config"
                                                                           ).get("model_type") == "llava_llama":
        state = original_weights(path)
    else:
        state = load_weights(path)
    renamed = {}
    for key, value in state.items():
        found = re.search(r"(?:^|\.)mm_projector\.(?:(\d+)\.)?(weight|bias)$", key)
        if found and isinstance(value, torch.Tensor):
            layer = PROJECTORS.get(kind, {}).get(found.group(1) or "")
            if layer is None:
                raise ValueError(f"init.projector {path}: {key} is not a layer of a {kind!r} projector")
            renamed[f"multi_modal_projector.{layer}.{found.group(2)}"] = value.to(torch.float32)
        elif isinstance(value, torch.Tensor) and "multi_modal_projector." in key:
            renamed["multi_modal_projector." + key.split("multi_modal_projector.", 1)[1]] = value.to(torch.float32)
    load_part(model, renamed, path, r"^multi_modal_projector\.", "multi_modal_projector.")


def _tower(folder: str) -> tuple:
    """(vision config, vision tensors without their prefix) of a CLIP folder."""
    from .pretrained import read_config
    from .weights import load_weights

    config = read_config(folder)
    tensors = load_weights(folder)
    if any(k.startswith("vision_model.") for k in tensors):
        tensors = {k[len("vision_model."):]: v for k, v in tensors.items() if k.startswith("vision_model.")}
    return config.get("vision_config", config), tensors


def convert_llava_original(src: str, out: str, vision_tower: Optional[str] = None) -> str:
    """Writes `out`, the Hugging Face LLaVA folder of LLaVA's checkpoint `src`; `vision_tower` is a
    local CLIP folder (default: the config's mm_vision_tower, when that is one). Returns `out`."""
    from .llava import LlavaForConditionalGeneration
    from .. import _C

    path = os.path.join(src, "config.json")
    config = read_json(path, "LLaVA's config")
    if not isinstance(config, dict) or config.get("model_type") != "llava_llama":
        raise ValueError(f"{path}: model_type {config.get('model_type') if isinstance(config, dict) else None!r}; "
                         "LLaVA's own checkpoints say llava_llama (a Hugging Face LLaVA folder loads as it is)")
    if is_regular_file(os.path.join(src, "adapter_config.json")):
        raise ValueError(f"{src}: LLaVA's LoRA output (adapter_config.json, non_lora_trainables.bin): merge it into its "
                         "base first with LLaVA's scripts/merge_lora_weights.py, then convert the merged folder")
    unsupported = [f"{k} {config[k]!r}" for k, ok in (
        ("mm_use_im_start_end", (False, None)), ("mm_use_im_patch_token", (False, None)),
        ("image_aspect_ratio", ("pad", "square", None)), ("mm_patch_merge_type", ("flat", None)),
        ("s2", (False, None))) if config.get(k) not in ok]
    if unsupported:  # each changes what the model is fed: prompts, tiles, merged features
        raise ValueError(f"{path}: {', '.join(unsupported)}: tessera's LLaVA feeds one image of image_seq_length "
                         "tokens without start/end tokens (LLaVA-1.5's layout); this checkpoint needs more")
    tower = vision_tower or config.get("mm_vision_tower")
    if not tower or not os.path.isdir(tower):
        raise FileNotFoundError(f"{path}: mm_vision_tower {config.get('mm_vision_tower')!r} is not a local folder; "
                                "give the CLIP tower's folder (vision_tower=, --vision-tower): nothing is downloaded")
    kind = config.get("mm_projector_type", "linear")
    if kind not in PROJECTORS:
        raise ValueError(f"{path}: mm_projector_type {kind!r}: tessera converts {', '.join(PROJECTORS)}")
    feature = config.get("mm_vision_select_feature", "patch")
    if feature not in ("patch", "cls_patch"):
        raise ValueError(f"{path}: mm_vision_select_feature {feature!r} (patch or cls_patch)")
    vocab = config.get("vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"{path}: vocab_size must be a positive int, got {vocab!r}")
    vision_config, tower_tensors = _tower(tower)
    state = {}
    for key, value in original_weights(src).items():
        if key.startswith("model.mm_projector."):
            layer, _, leaf = key[len("model.mm_projector."):].rpartition(".")
            if layer not in PROJECTORS[kind]:
                raise ValueError(f"{src}: {key} is not a layer of a {kind!r} projector")
            state[f"multi_modal_projector.{PROJECTORS[kind][layer]}.{leaf}"] = value
        elif key.startswith("model.vision_tower.vision_tower.vision_model."):  # a tower LLaVA trained too
            tower_tensors[key[len("model.vision_tower.vision_tower.vision_model."):]] = value
        elif key.startswith("model.") or key == "lm_head.weight":
            state[f"language_model.{key}"] = value
    state.update({f"vision_tower.{k}": v for k, v in tower_tensors.items()})
    tied = bool(config.get("tie_word_embeddings", False))
    if tied:  # the head is the embedding table
        state.pop("language_model.lm_head.weight", None)
    elif "language_model.lm_head.weight" not in state:
        raise ValueError(f"{src}: no lm_head.weight, and tie_word_embeddings is not set")
    rows = -(-(vocab + 2) // 64) * 64  # <image>, <pad>; padded to 64 as llava-hf
    for key in ("language_model.model.embed_tokens.weight", *(() if tied else ("language_model.lm_head.weight",))):
        table = state[key]
        if table.shape[0] != vocab:
            raise ValueError(f"{src}: {key} has {table.shape[0]} rows, config vocab_size {vocab}")
        state[key] = torch.cat([table, table.float().mean(0, keepdim=True).to(table.dtype).expand(rows - vocab, -1)])
    grid = (int(vision_config["image_size"]) // int(vision_config["patch_size"])) ** 2
    llava = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
             "text_config": {"model_type": "llama", **{k: config[k] for k in TEXT_KEYS if k in config},
                             "vocab_size": rows, "pad_token_id": vocab + 1},
             "vision_config": {**vision_config, "model_type": "clip_vision_model"},
             "image_token_index": vocab, "pad_token_id": vocab + 1, "projector_type": kind,
             "projector_hidden_act": "gelu", "vision_feature_layer": int(config.get("mm_vision_select_layer", -2)),
             "vision_feature_select_strategy": "default" if feature == "patch" else "full",
             "image_seq_length": grid if feature == "patch" else grid + 1}
    previous = _C.nn.set_init_enabled(False)  # every tensor is loaded next
    try:
        model = LlavaForConditionalGeneration(llava)
    finally:
        _C.nn.set_init_enabled(previous)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    model.save_pretrained(out)
    _beside(src, tower, out, config, vocab)
    return out


def _beside(src: str, tower: str, out: str, config: dict, vocab: int) -> None:
    """The tower's image processor, the tokenizer with <image> and <pad>, a recipe.json for chat."""
    from .image_processor import FILE

    if is_regular_file(os.path.join(tower, FILE)):
        shutil.copy(os.path.join(tower, FILE), os.path.join(out, FILE))
    data = {"image_aspect_ratio": config.get("image_aspect_ratio") if config.get("image_aspect_ratio") in (
        "pad", "square") else "square", "template": "v1"}
    if is_regular_file(os.path.join(src, "tokenizer.model")):
        shutil.copy(os.path.join(src, "tokenizer.model"), os.path.join(out, "tokenizer.model"))
        path = os.path.join(src, "tokenizer_config.json")
        tok = read_json(path, "the tokenizer's settings") if is_regular_file(path) else {}
        added = {"special": True, "normalized": False, "lstrip": False, "rstrip": False, "single_word": False}
        tok["added_tokens_decoder"] = {**{k: v for k, v in (tok.get("added_tokens_decoder") or {}).items()
                                          if str(k).isdigit() and int(k) < vocab},
                                       str(vocab): {"content": "<image>", **added},
                                       str(vocab + 1): {"content": "<pad>", **added}}
        tok["pad_token"] = "<pad>"
        write_json(os.path.join(out, "tokenizer_config.json"), tok, indent=2)
        data["tokenizer"] = os.path.abspath(os.path.join(out, "tokenizer.model"))
    write_json(os.path.join(out, "recipe.json"), {"task": "llava", "data": data}, indent=2)
