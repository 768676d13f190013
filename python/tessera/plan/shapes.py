"""What the planner needs to know about a model: its transformer stacks (depth, tokens, widths)
and the parameters and activations outside them. A task builds a `ModelShape` from its recipe
(`Task.memory_shape`); nothing is allocated."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

# Bytes autograd keeps per element for one pre-norm transformer layer (attention on SDPA's flash
# kernel, GELU MLP), fitted exactly against saved-tensor hooks on tessera's layers
# (tests/python/test_plan.py checks it): fp32 keeps 8 [B, L, H] tensors, 2 [B, L, I] and the
# softmax statistics [B, heads, L]; bf16 autocast keeps the matmul outputs in bf16, norm outputs
# in fp32, and the bf16 copy of every weight matrix.
SAVED = {
    "fp32": {"hidden": 32, "mlp": 8, "heads": 8, "weights": 0},
    "bf16": {"hidden": 24, "mlp": 4, "heads": 8, "weights": 2},
    # FSDP2's bf16 parameters: every saved tensor bf16, no cast copies (estimate: fp32 halved).
    "bf16_params": {"hidden": 16, "mlp": 4, "heads": 4, "weights": 0},
}
# LLaMA layers (RMSNorm, SwiGLU, RoPE, GQA), fitted the same way over seven shapes (residual: the
# RoPE tables, 2 KiB a layer). "mlp" is per [B, L, I] element (gate and up count separately),
# "kv" per [B, L, kv_heads * head_dim] (keys and values after RoPE). Their frozen weights keep
# fewer tensors (no matmul input is needed for a weight gradient); LoRA adds its [B, L, r]
# intermediates ("rank", per adapter).
SAVED_LLAMA = {
    "fp32": {"full": {"hidden": 32, "mlp": 16, "kv": 8, "heads": 4, "weights": 0},
             "frozen": {"hidden": 16, "mlp": 12, "kv": 8, "heads": 4, "weights": 0},
             "lora": {"hidden": 24, "mlp": 16, "kv": 8, "heads": 4, "weights": 0, "rank": 4}},
    "bf16": {"full": {"hidden": 30, "mlp": 8, "kv": 4, "heads": 4, "weights": 2},
             "frozen": {"hidden": 12, "mlp": 6, "kv": 4, "heads": 4, "weights": 2},
             "lora": {"hidden": 22, "mlp": 8, "kv": 4, "heads": 4, "weights": 2, "rank": 2}},
}
# FSDP2's bf16 parameters (estimate, as above): fp32 halved, no cast copies.
SAVED_LLAMA["bf16_params"] = {k: {n: (v // 2 if n != "weights" else 0) for n, v in c.items()}
                              for k, c in SAVED_LLAMA["fp32"].items()}
# Where a CPU computes bf16 attention in fp32 (tessera.ops.cpu_attention_in_fp32: training, at
# most 320 keys), SDPA keeps fp32 q, k, v and output instead of bf16 ones; the bytes it adds per
# element, fitted the same way (a frozen output projection keeps no input, so the bf16 output
# was the attention's own there).
FP32_ATTENTION_EXTRA = {"prenorm": {"full": {"hidden": 10}},
                        "llama": {"full": {"hidden": 6, "kv": 4}, "frozen": {"hidden": 4, "kv": 4},
                                  "lora": {"hidden": 6, "kv": 4}}}
# Backward transients of one layer: the gradients of its MLP and attention outputs while they are
# formed (calibrated against peak RSS; docs/memory.md).
TRANSIENT = {"hidden": 16, "mlp": 8}


@dataclass
class Stack:
    """`layers` identical pre-norm transformer layers over `tokens` positions."""
    name: str
    layers: int
    tokens: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int = 0            # 0: = heads
    head_dim: int = 0            # 0: hidden // heads
    gated: bool = False          # SwiGLU MLP (3 matrices)
    qkv_bias: bool = True
    k_bias: bool = True          # BEiT: query and value biases only
    o_bias: bool = True
    mlp_bias: bool = True
    norm_bias: bool = True       # LayerNorm (RMSNorm has no bias)
    layer_scale: bool = False    # two [hidden] scale vectors (BEiT, CaiT)
    kind: str = "prenorm"        # "llama": RMSNorm, SwiGLU, RoPE (SAVED_LLAMA)
    # What autograd keeps: "full"; "frozen" (frozen weights, an input that needs grad: LLaVA's
    # LM in stage 1); "lora" (frozen weights with adapters); "none" (nothing needs grad: a
    # frozen tower on pixels).
    saves: str = "full"
    lora_rank: int = 0
    lora_adapters: int = 0       # adapted linear layers per layer
    lora_params: int = 0         # their elements per layer

    @property
    def _dims(self):
        d = self.head_dim or self.hidden // self.heads
        return d, self.kv_heads or self.heads

    def matrix_params(self) -> int:
        """Weight-matrix elements of one layer (what autocast copies to bf16)."""
        d, kv = self._dims
        h, i = self.hidden, self.intermediate
        return h * self.heads * d * 2 + h * kv * d * 2 + (3 if self.gated else 2) * h * i

    def layer_params(self) -> int:
        d, kv = self._dims
        h, i = self.hidden, self.intermediate
        biases = (self.heads * d + (2 if self.k_bias else 1) * kv * d if self.qkv_bias else 0)
        biases += (h if self.o_bias else 0) + (((2 if self.gated else 1) * i + h) if self.mlp_bias else 0)
        norms = 2 * (2 * h if self.norm_bias else h)
        return (self.matrix_params() + biases + norms + (2 * h if self.layer_scale else 0)
                + self.lora_params)

    def params(self) -> int:
        return self.layers * self.layer_params()

    def layer_activations(self, batch: int, mode: str, fp32_attention: bool = False) -> int:
        """Bytes autograd saves for one layer's backward (`fp32_attention`: a reduced-precision
        mode whose attention a CPU computes in fp32)."""
        if self.saves == "none":
            return 0
        bl = batch * self.tokens
        extra = FP32_ATTENTION_EXTRA[self.kind].get(self.saves, {}) if fp32_attention else {}
        if self.kind == "llama":
            d, kv = self._dims
            c = SAVED_LLAMA[mode][self.saves]
            return int(bl * ((c["hidden"] + extra.get("hidden", 0)) * self.hidden + c["mlp"] * self.intermediate
                             + (c["kv"] + extra.get("kv", 0)) * kv * d + c["heads"] * self.heads
                             + c.get("rank", 0) * self.lora_rank * self.lora_adapters)
                       + c["weights"] * (self.matrix_params() + self.lora_params))
        c = SAVED[mode]
        mlp = c["mlp"] * (1.5 if self.gated else 1.0)
        return int((c["hidden"] + extra.get("hidden", 0)) * bl * self.hidden + mlp * bl * self.intermediate
                   + c["heads"] * bl * self.heads + c["weights"] * self.matrix_params())

    def checkpointed_layer(self, batch: int, dtype_bytes: int = 4) -> int:
        """Bytes kept per layer under activation checkpointing: its input."""
        if self.saves == "none":
            return 0
        return batch * self.tokens * self.hidden * dtype_bytes

    def layer_transient(self, batch: int) -> int:
        if self.saves == "none":
            return 0
        bl = batch * self.tokens
        return TRANSIENT["hidden"] * bl * self.hidden + TRANSIENT["mlp"] * bl * self.intermediate


@dataclass
class ModelShape:
    """A model for the planner: its stacks, the parameters outside them (embeddings, heads), and
    per sample: the activations outside the stacks (fp32 bytes) and the input batch's bytes.
    A language model's head adds its logits: `logits_per_sample` (tokens x vocab, kept in fp32
    for the cross-entropy in either precision) and `head_matrix` (its weight's elements, which
    bf16 autocast copies). `trainable` counts the parameters that get gradients and AdamW state
    (None: all). `fitted` holds the per-sample bytes of parts fitted outside the `Stack` model (the
    Q-Former: plan/qformer.py) by activation mode, and under checkpointing by mode + "+ckpt"."""
    family: str
    stacks: List[Stack] = field(default_factory=list)
    other_params: int = 0
    other_activations_per_sample: int = 0
    sample_bytes: int = 0
    batch_size: int = 1          # the recipe's per-process micro-batch
    prefetch: int = 4            # batches its loader keeps ready
    has_lora: bool = False
    trainable: Optional[int] = None
    logits_per_sample: int = 0
    head_matrix: int = 0
    fitted: Dict[str, int] = field(default_factory=dict)
    fitted_label: str = "fitted parts"  # how the plan names `fitted` (BLIP-2: "Q-Former, all layers")
    autocast_matrices: int = 0   # weight-matrix elements outside the stacks that bf16 autocast copies (2 bytes)
    # Frozen models the task runs beside this one (a teacher, a tokenizer, BLIP-2's tower): their
    # parameters, held in fp32 on every rank, without gradients or optimizer state.
    frozen_beside: int = 0
    # Activations that grow with the micro-batch squared (Sugar's point pooling: [points, B x L]),
    # bytes per B^2.
    pairwise_activations: int = 0

    def params(self) -> int:
        return self.other_params + sum(s.params() for s in self.stacks)

    def trainable_params(self) -> int:
        return self.params() if self.trainable is None else self.trainable


def patch_count(image_size: int, patch_size: int, where: str = "data.image_size") -> int:
    """Patches of a square image; an image the patches do not tile is refused here, as the model's
    forward would refuse it at the first step (a plan for a recipe that cannot run is no plan)."""
    if patch_size <= 0 or image_size <= 0 or image_size % patch_size:
        raise ValueError(f"{where} {image_size} is not a multiple of the patch size {patch_size}")
    return (image_size // patch_size) ** 2

