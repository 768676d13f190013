"""What the planner needs to know about a model: its transformer stacks (depth, tokens, widths)
and the parameters and activations outside them. A task builds a `ModelShape` from its recipe
(`Task.memory_shape`); nothing is allocated."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

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
        return self.matrix_params() + biases + norms + (2 * h if self.layer_scale else 0)

    def params(self) -> int:
        return self.layers * self.layer_params()

    def layer_activations(self, batch: int, mode: str) -> int:
        """Bytes autograd saves for one layer's backward."""
        c = SAVED[mode]
        mlp = c["mlp"] * (1.5 if self.gated else 1.0)
        bl = batch * self.tokens
        return int(c["hidden"] * bl * self.hidden + mlp * bl * self.intermediate
                   + c["heads"] * bl * self.heads + c["weights"] * self.matrix_params())

    def checkpointed_layer(self, batch: int, dtype_bytes: int = 4) -> int:
        """Bytes kept per layer under activation checkpointing: its input."""
        return batch * self.tokens * self.hidden * dtype_bytes

    def layer_transient(self, batch: int) -> int:
        bl = batch * self.tokens
        return TRANSIENT["hidden"] * bl * self.hidden + TRANSIENT["mlp"] * bl * self.intermediate


@dataclass
class ModelShape:
    """A model for the planner: its stacks, the parameters outside them (embeddings, heads), and
    per sample: the activations outside the stacks (fp32 bytes) and the input batch's bytes."""
    family: str
    stacks: List[Stack] = field(default_factory=list)
    other_params: int = 0
    other_activations_per_sample: int = 0
    sample_bytes: int = 0
    batch_size: int = 1          # the recipe's per-process micro-batch
    prefetch: int = 4            # batches its loader keeps ready
    has_lora: bool = False

    def params(self) -> int:
        return self.other_params + sum(s.params() for s in self.stacks)
