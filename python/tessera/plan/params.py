"""A model's parameters by name and size, written out from its config without building it, so
that the recipe's freezing rules (`model.freeze`, `model.trainable`) and LoRA (`lora`) decide
what trains exactly as they do on the built model (tests/python/test_plan_lm.py compares every
name and size with the model's)."""
from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple, Union

Params = List[Tuple[str, int]]            # (parameter name, elements)
LINEARS = List[Tuple[str, int, int]]       # (module path, in features, out features)


def _linear(out: Params, linears: LINEARS, path: str, fan_in: int, fan_out: int, bias: bool) -> None:
    out.append((f"{path}.weight", fan_in * fan_out))
    if bias:
        out.append((f"{path}.bias", fan_out))
    linears.append((path, fan_in, fan_out))


def llama_params(c: Dict, prefix: str = "") -> Tuple[Params, LINEARS]:
    """LlamaForCausalLM's parameters (RMSNorms without bias; the head unless tied)."""
    h, i, heads = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    d = c.get("head_dim") or h // heads
    kv = c.get("num_key_value_heads") or heads
    ab, mb = bool(c.get("attention_bias")), bool(c.get("mlp_bias"))
    out: Params = [(f"{prefix}model.embed_tokens.weight", c["vocab_size"] * h)]
    lin: LINEARS = []
    for n in range(c["num_hidden_layers"]):
        p = f"{prefix}model.layers.{n}."
        for name, fi, fo in (("q_proj", h, heads * d), ("k_proj", h, kv * d), ("v_proj", h, kv * d)):
            _linear(out, lin, p + "self_attn." + name, fi, fo, ab)
        _linear(out, lin, p + "self_attn.o_proj", heads * d, h, ab)
        out.append((p + "input_layernorm.weight", h))
        for name, fi, fo in (("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)):
            _linear(out, lin, p + "mlp." + name, fi, fo, mb)
        out.append((p + "post_attention_layernorm.weight", h))
    out.append((f"{prefix}model.norm.weight", h))
    if not c.get("tie_word_embeddings"):
        _linear(out, lin, f"{prefix}lm_head", h, c["vocab_size"], False)
    return out, lin


def clip_vision_params(v: Dict, prefix: str) -> Tuple[Params, LINEARS]:
    """CLIPVisionTransformer's parameters (LLaVA's tower)."""
    h, i, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    out: Params = [(prefix + "embeddings.class_embedding", h),
                   (prefix + "embeddings.patch_embedding.weight", h * v["num_channels"] * p * p),
                   (prefix + "embeddings.position_embedding.weight", ((v["image_size"] // p) ** 2 + 1) * h),
                   (prefix + "pre_layrnorm.weight", h), (prefix + "pre_layrnorm.bias", h)]
    lin: LINEARS = []
    for n in range(v["num_hidden_layers"]):
        q = f"{prefix}encoder.layers.{n}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(out, lin, q + "self_attn." + name, h, h, True)
        out += [(q + "layer_norm1.weight", h), (q + "layer_norm1.bias", h)]
        _linear(out, lin, q + "mlp.fc1", h, i, True)
        _linear(out, lin, q + "mlp.fc2", i, h, True)
        out += [(q + "layer_norm2.weight", h), (q + "layer_norm2.bias", h)]
    out += [(prefix + "post_layernorm.weight", h), (prefix + "post_layernorm.bias", h)]
    return out, lin


def feature_width(c: Dict) -> int:
    """The width of the tower features a LLaVA projector reads: several `vision_feature_layer`s
    are concatenated, as transformers does."""
    layers = c.get("vision_feature_layer", -2)
    return c["vision_config"]["hidden_size"] * (len(layers) if isinstance(layers, (list, tuple)) else 1)


def mlp_projector_params(c: Dict, prefix: str) -> Tuple[Params, LINEARS]:
    """LLaVA's `linear` and `mlpNx_gelu` projectors (vision width -> text width)."""
    kind = c.get("projector_type", "mlp2x_gelu")
    m = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    depth = int(m.group(1)) if m else 1 if kind == "linear" else 0
    if not depth:
        raise ValueError(f"tessera plan describes the linear and mlpNx_gelu projectors, not {kind!r}")
    hv, ht = feature_width(c), c["text_config"]["hidden_size"]
    bias = c.get("multimodal_projector_bias", True)
    out: Params = []
    lin: LINEARS = []
    for n in range(depth):
        _linear(out, lin, f"{prefix}linear_{n + 1}", hv if n == 0 else ht, ht, bias)
    return out, lin


def mlp_projector_activations(shape, c: Dict, images: int, patches: int) -> None:
    """What the MLP projectors keep when they train (ProjectorHooks.plan_activations): the input,
    the hidden layer and the GELU's output per image token."""
    n_img = images * int(c.get("image_seq_length") or patches)
    shape.other_activations_per_sample += n_img * 4 * (feature_width(c) + 2 * c["text_config"]["hidden_size"])


def resampler_params(c: Dict, prefix: str) -> Tuple[Params, LINEARS]:
    """LLaVA's `resampler` projector: learned queries cross-attending to the tower's features
    (models/llava/resampler.cpp), at the LM's width."""
    d, q = c["text_config"]["hidden_size"], c["projector_num_queries"]
    bias = c.get("multimodal_projector_bias", True)
    out: Params = [(prefix + "query", q * d)]
    lin: LINEARS = []
    _linear(out, lin, prefix + "kv_proj", feature_width(c), d, False)
    out += [(prefix + "ln_kv.weight", d), (prefix + "ln_kv.bias", d), (prefix + "ln_q.weight", d),
            (prefix + "ln_q.bias", d)]
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        _linear(out, lin, prefix + name, d, d, bias)
    out += [(prefix + "ln_post.weight", d), (prefix + "ln_post.bias", d)]
    _linear(out, lin, prefix + "proj", d, d, bias)
    return out, lin


def resampler_activations(shape, c: Dict, images: int, patches: int) -> None:
    """What the `resampler` keeps when it trains: per image token the features (kv_proj's
    input), kv_proj's output (its norm's input), the norm's output, keys and values; per query
    its projection, the attention's output and the inputs of out_proj, ln_post and proj."""
    d, q = c["text_config"]["hidden_size"], c["projector_num_queries"]
    tokens = patches + (1 if c.get("vision_feature_select_strategy") == "full" else 0)
    shape.other_activations_per_sample += images * 4 * (tokens * (feature_width(c) + 4 * d) + q * 5 * d)


def add_lora(params: Params, linears: LINEARS, targets: Union[str, Sequence[str]], r: int) -> Tuple[Params, List[str]]:
    """The parameters after `apply_lora`: lora_A [r, in] and lora_B [out, r] on each matching
    linear layer (PEFT's matching: a regular expression over the whole path, or suffixes)."""
    from ..lora import _matches

    chosen = [(p, fi, fo) for p, fi, fo in linears if _matches(p, targets)]
    out = list(params)
    for p, fi, fo in chosen:
        out += [(f"{p}.lora_A.weight", r * fi), (f"{p}.lora_B.weight", fo * r)]
    return out, [p for p, _, _ in chosen]


def trainable(params: Params, freeze: Sequence[str] = (), keep: Sequence[str] = (), lora: bool = False,
              modules_to_save: Sequence[str] = ()) -> Dict[str, bool]:
    """Which parameters train: LoRA's rule (adapters and `modules_to_save`), then the recipe's
    `model.trainable` and `model.freeze` as `apply_freezing` applies them."""
    from ..lora import _in_modules
    from ..train.freeze import compile_patterns

    keep_rx, drop_rx = compile_patterns([n for n, _ in params], freeze, keep)
    out = {}
    for name, _ in params:
        grad = not lora or ".lora_A." in name or ".lora_B." in name or _in_modules(name, modules_to_save)
        if keep_rx and not any(rx.search(name) for rx in keep_rx):
            grad = False
        if any(rx.search(name) for rx in drop_rx):
            grad = False
        out[name] = grad
    return out
