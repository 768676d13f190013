"""Peak memory per rank of a training step, from a `ModelShape` and the run's settings.

The step's peak is the larger of two moments (AdamW, fp32 master weights):
- early backward: weights + optimizer state + every saved activation + one layer's backward
  transients, or a language model's head backward over its logits if larger (gradients are
  freed by `zero_grad(set_to_none=True)`, so few exist yet);
- the optimizer step: weights + gradients + optimizer state (the trainer's fused AdamW updates in
  place: no temporaries, measured); with `optim.in_backward` there is no such moment.
DDP adds its gradient buckets (a second copy of the gradients); FSDP2 divides weights, gradients
and optimizer state by the world size and adds the gathered working set: the root's parameters,
the running and the prefetched layer, and one layer's reduce-scatter buffer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Iterator, List

from .shapes import ModelShape

MiB = 2 ** 20
# The CPU runtime's own growth during training (thread pools, oneDNN primitive caches, allocator
# slack), calibrated against RSS (docs/memory.md). CUDA adds its context outside allocator stats.
RUNTIME_BYTES = {"cpu": 24 * MiB, "cuda": 0}
# A language model's cross-entropy backward, bytes per logit at the start of backward: the fp32
# gradients of the log-probabilities and of the logits; under bf16 autocast also the bf16
# logits' gradient and cast copies (calibrated against RSS: docs/memory.md).
HEAD_TRANSIENT = {"fp32": 8, "bf16": 14}


@dataclass
class Settings:
    world_size: int = 1
    strategy: str = "ddp"            # ddp | fsdp2 (one process: neither)
    precision: str = "fp32"          # fp32 | bf16
    checkpointing: bool = False
    batch_size: int = 1              # per process, per micro-batch
    accumulation: int = 1
    prefetch: int = 4                # batches the loader keeps ready
    device: str = "cpu"
    in_backward: bool = False        # optim.in_backward: each gradient used and freed inside backward


@dataclass
class MemoryPlan:
    settings: Settings
    params: int                      # parameter count (whole model)
    weights: int                     # bytes per rank, below likewise
    gradients: int
    optimizer: int
    activations: int
    activations_per_layer: Dict[str, int]
    temporaries: int
    communication: int               # DDP buckets / FSDP2 gathered parameters and reduce buffers
    data: int
    runtime: int
    peak: int
    peak_moment: str                 # "backward" or "optimizer step"
    notes: List[str] = field(default_factory=list)
    trainable: int = 0               # parameters with gradients and optimizer state

    def as_dict(self) -> Dict:
        return asdict(self)


def _activation_mode(s: Settings) -> str:
    if s.precision == "fp32":
        return "fp32"
    return "bf16_params" if s.strategy == "fsdp2" and s.world_size > 1 else "bf16"


def _fp32_attention(s: Settings, mode: str, tokens: int) -> bool:
    """Whether this CPU computes the stack's bf16 attention in fp32 in training (the rule itself,
    asked with empty tensors of the stack's key count)."""
    if mode == "fp32" or s.device != "cpu":
        return False
    import torch

    from .. import ops

    q = torch.empty(1, 1, 1, 1, dtype=torch.bfloat16, requires_grad=True)
    k = torch.empty(1, 1, tokens, 1, dtype=torch.bfloat16, requires_grad=True)
    with torch.enable_grad():
        return ops.cpu_attention_in_fp32.applies(q, k, k)


def plan_memory(shape: ModelShape, s: Settings) -> MemoryPlan:
    P, T = shape.params(), shape.trainable_params()
    n = s.world_size if s.strategy == "fsdp2" and s.world_size > 1 else 1
    sharded = n > 1
    mode = _activation_mode(s)
    b = s.batch_size
    per_layer: Dict[str, int] = {}
    acts = int(shape.other_activations_per_sample * b * (0.5 if mode != "fp32" else 1.0))
    logits = 4 * shape.logits_per_sample * b
    acts += logits + (2 * (shape.head_matrix + shape.autocast_matrices) if mode == "bf16" else 0)
    acts += shape.pairwise_activations * b * b
    if shape.fitted:
        fitted = shape.fitted[mode + ("+ckpt" if s.checkpointing else "")] * b
        per_layer[shape.fitted_label] = fitted
        acts += fitted
    recompute = 0
    for st in shape.stacks:
        full = st.layer_activations(b, mode, _fp32_attention(s, mode, st.tokens))
        kept = st.checkpointed_layer(b, 2 if mode == "bf16_params" else 4) if s.checkpointing else full
        per_layer[st.name] = kept
        acts += kept * st.layers
        recompute = max(recompute, full if s.checkpointing else 0)
    acts += recompute  # checkpointing rebuilds one layer's activations at a time in backward
    transient = max((st.layer_transient(b) for st in shape.stacks), default=0)
    if mode != "fp32":
        transient //= 2
    head = HEAD_TRANSIENT[s.precision] * shape.logits_per_sample * b
    # Backward runs the head first (its logits saved, its transient), then the layers (the logits
    # freed, a checkpointed layer rebuilt with its transients): the larger of the two moments.
    extra = max(head, recompute + transient - logits) if logits else recompute + transient

    # Frozen parameters have neither gradients nor AdamW state.
    weights, grads, optim = 4 * P // n + 4 * shape.frozen_beside, 4 * T // n, 8 * T // n
    comm = 0
    notes = []
    if sharded:
        layer = max((st.layer_params() for st in shape.stacks), default=0)
        pbytes = 2 if s.precision == "bf16" else 4
        comm = pbytes * (shape.other_params + 2 * layer) + 4 * layer
    elif s.strategy == "ddp" and s.world_size > 1:
        comm = 4 * T
    data = (s.prefetch + 2) * b * shape.sample_bytes
    runtime = RUNTIME_BYTES.get(s.device, 0)
    backward = weights + optim + acts - recompute + extra
    # Stepping inside backward, no moment holds every gradient (nor the step's temporaries).
    step = 0 if s.in_backward else weights + grads + optim
    peak, moment = (backward, "backward") if backward >= step else (step, "optimizer step")
    peak += comm + data + runtime
    if moment == "optimizer step" and s.accumulation == 1 and (s.world_size == 1 or s.strategy == "fsdp2"):
        inside = backward + comm + data + runtime
        notes.append(f"the peak is the optimizer step, which holds every gradient: optim.in_backward (with "
                     f"optim.grad_clip: 0) steps inside backward instead, peak {inside / MiB:.1f} MiB")
    if shape.frozen_beside:
        notes.append(f"weights include {shape.frozen_beside / 1e6:.2f} M parameters of the frozen model(s) the task "
                     "runs beside this one (teacher, tokenizer or tower), on every rank")
    if s.precision == "bf16" and s.device == "cpu":
        from ..train.hardware import BF16_SLOW_WARNING, cpu_has_native_bf16

        if not cpu_has_native_bf16():
            notes.append(BF16_SLOW_WARNING)
    return MemoryPlan(settings=s, params=P, weights=weights, gradients=grads, optimizer=optim, activations=acts,
                      activations_per_layer=per_layer, temporaries=max(transient, head), communication=comm,
                      data=data, runtime=runtime, peak=peak, peak_moment=moment, notes=notes,
                      trainable=T)


def _combinations(base: Settings, precisions=("fp32", "bf16")) -> Iterator[Settings]:
    """The recipe's settings under each strategy (sharding needs several processes), precision
    and checkpointing."""
    several = ["fsdp2"] if base.in_backward else ["ddp", "fsdp2"]  # DDP cannot step inside backward
    for strategy in (several if base.world_size > 1 else ["ddp"]):
        for precision in precisions:
            for ckpt in (False, True):
                yield replace(base, strategy=strategy, precision=precision, checkpointing=ckpt)


def variants(shape: ModelShape, base: Settings) -> List[MemoryPlan]:
    """The recipe's run under each strategy, checkpointing and precision."""
    return [plan_memory(shape, s) for s in _combinations(base)]


def suggest(shape: ModelShape, base: Settings, device_bytes: int, bf16_ok: bool, limit: int = 3,
            batch_coupled: bool = False) -> List[MemoryPlan]:
    """Settings that fit `device_bytes`, keeping the global batch (micro-batch x accumulation):
    fastest first (no checkpointing, bigger micro-batches, DDP before FSDP2, then bf16). A loss that
    couples the samples of a batch (contrastive: CLIP, SigLIP, BLIP-2's ITC) keeps the recipe's
    micro-batch: accumulated micro-batches are separate, smaller contrastive batches."""
    global_batch = base.batch_size * base.accumulation
    fits = []
    for combo in _combinations(base, ("fp32", "bf16") if bf16_ok else ("fp32",)):
        divisors = [a for a in range(1, global_batch + 1) if global_batch % a == 0]
        if batch_coupled:
            divisors = [base.accumulation]
        for accum in divisors[:1] if base.in_backward else divisors:  # in_backward cannot accumulate
            p = plan_memory(shape, replace(combo, batch_size=global_batch // accum, accumulation=accum))
            if p.peak <= device_bytes:
                fits.append(p)
                break  # the biggest micro-batch that fits for this combination
    fits.sort(key=lambda p: (p.settings.checkpointing, p.settings.accumulation, p.settings.strategy != "ddp",
                             p.settings.precision != "fp32", p.peak))
    return fits[:limit]
