"""`ModelShape`s of LLaMA language models and of LLaVA (a CLIP tower, a projector, a LLaMA), from
their configs and the recipe's freezing and LoRA settings; the tasks' `memory_shape` call these."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ..models.projectors import projector_hooks
from .params import Params, add_lora, clip_vision_params, llama_params, trainable
from .shapes import ModelShape, Stack, patch_count

# Bytes kept per token outside the decoder layers besides the logits (fitted with saved-tensor
# hooks): the final RMSNorm and the head's input per hidden unit, 6 when the head is frozen.
HEAD_HIDDEN = {True: 14, False: 6}
PER_TOKEN = 20  # ids, labels, the cross-entropy's statistics


def _llama_stack(c: Dict, tokens: int, saves: str, r: int, adapters: int, lora_params: int) -> Stack:
    h, heads = c["hidden_size"], c["num_attention_heads"]
    ab, mb = bool(c.get("attention_bias")), bool(c.get("mlp_bias"))
    return Stack("language_model", c["num_hidden_layers"], tokens, h, c["intermediate_size"], heads,
                 kv_heads=c.get("num_key_value_heads") or heads, head_dim=c.get("head_dim") or h // heads,
                 gated=True, qkv_bias=ab, o_bias=ab, mlp_bias=mb, norm_bias=False, kind="llama", saves=saves,
                 lora_rank=r, lora_adapters=adapters, lora_params=lora_params)


def _saves(grads: Dict[str, bool], part: str, upstream: bool) -> str:
    names = [n for n in grads if n.startswith(part) and ".layers." in n]
    if any(grads[n] for n in names if ".lora_" in n):
        return "lora"
    if any(grads[n] for n in names):
        return "full"
    return "frozen" if upstream else "none"


def _layer0_lora(params: Params, part: str) -> int:
    return sum(k for n, k in params if n.startswith(part + "layers.0.") and ".lora_" in n)


def lm_shape(family: str, c: Dict, tokens: int, batch_size: int, sample_bytes: int, params: Params,
             grads: Dict[str, bool], lm_prefix: str = "", upstream: bool = False, lora_r: int = 0,
             stacks: Optional[List[Stack]] = None) -> ModelShape:
    """A LLaMA over `tokens` positions (after `stacks` that feed it, e.g. a vision tower) with the
    parameters `params` of which `grads` train."""
    part = lm_prefix + "model."
    saves = _saves(grads, part, upstream)
    adapters = sum(1 for n, _ in params if n.startswith(part + "layers.0.") and n.endswith(".lora_A.weight"))
    lm = _llama_stack(c, tokens, saves, lora_r, adapters, _layer0_lora(params, part))
    stacks = list(stacks or []) + [lm]
    total = sum(k for _, k in params)
    head = lm_prefix + ("lm_head.weight" if not c.get("tie_word_embeddings") else "model.embed_tokens.weight")
    head_grad = grads.get(head, False)
    v, h = c["vocab_size"], c["hidden_size"]
    acts = tokens * (HEAD_HIDDEN[head_grad] * h + PER_TOKEN)
    return ModelShape(family, stacks, other_params=total - sum(s.params() for s in stacks),
                      other_activations_per_sample=acts, sample_bytes=sample_bytes, batch_size=batch_size,
                      prefetch=0, has_lora=bool(lora_r), trainable=sum(k for n, k in params if grads[n]),
                      logits_per_sample=tokens * v, head_matrix=v * h)


def causal_lm_shape(c: Dict, tokens: int, batch_size: int, freeze: Sequence[str], keep: Sequence[str]) -> ModelShape:
    params, _ = llama_params(c)
    grads = trainable(params, freeze, keep)
    return lm_shape("causal_lm", c, tokens, batch_size, 3 * 8 * tokens, params, grads)


def llava_shape(c: Dict, tokens: int, images: int, batch_size: int, freeze: Sequence[str], keep: Sequence[str],
                lora=None) -> ModelShape:
    """LLaVA: the tower runs on `images` images per sample, each becoming `image_seq_length` of
    the LM's `tokens` positions. A frozen tower on pixels keeps nothing for backward."""
    v, t = c["vision_config"], c["text_config"]
    params, linears = clip_vision_params(v, "vision_tower.")
    hooks = projector_hooks(c.get("projector_type", "mlp2x_gelu"), "tessera plan")
    proj, proj_lin = hooks.plan_params(c, "multi_modal_projector.")
    lm, lm_lin = llama_params(t, "language_model.")
    params, linears = params + proj + lm, linears + proj_lin + lm_lin
    r = lora.r if lora is not None and lora.r else 0
    if r:
        params, _ = add_lora(params, linears, lora.target_modules, r)
    grads = trainable(params, freeze, keep, lora=bool(r), modules_to_save=lora.modules_to_save if r else ())
    vsaves = "full" if any(g for n, g in grads.items() if n.startswith("vision_tower.")) else "none"
    patches = patch_count(v["image_size"], v["patch_size"], "vision_config.image_size")
    tower = Stack("vision_tower", v["num_hidden_layers"], patches + 1, v["hidden_size"], v["intermediate_size"],
                  v["num_attention_heads"], saves=vsaves, lora_params=_layer0_lora(params, "vision_tower."))
    projector_grad = vsaves != "none" or any(g for n, g in grads.items() if n.startswith("multi_modal_projector."))
    pixels = 3 * v["image_size"] ** 2 * 4 * images
    shape = lm_shape("llava", t, tokens, batch_size, 4 * 8 * tokens + 2 * pixels, params, grads,
                     lm_prefix="language_model.", upstream=projector_grad, lora_r=r, stacks=[tower])
    if projector_grad:
        hooks.plan_activations(shape, c, images, patches)
    return shape
