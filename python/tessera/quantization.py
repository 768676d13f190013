"""Int8 weight-only decoding: `int8_decoding(model)` makes every plain linear layer of a tessera
model (LoRA adapters merged or absent) decode from an int8 copy of its weight, symmetric per
output row (scale = max |w| / 127). A quarter of fp32's bytes per token, half of bf16's.

Only decoding steps use it (at most 8 rows, no autograd, no autocast, CPU): training, prompts and
full forwards keep the weight itself, and the copy is remade whenever the weight changes (an
optimizer step, `load_state_dict`, merging LoRA). The LM head is a linear layer unless it is tied
to the input embedding, in which case it stays in the weight's dtype."""
from __future__ import annotations

import torch

from . import _C


def int8_decoding(model: torch.nn.Module, enabled: bool = True) -> int:
    """Turns int8 weight-only decoding on (or off) for every linear layer of `model`; returns how
    many layers it applies to."""
    from .lora import _linear_nodes

    if not hasattr(model, "_sync_all"):
        raise TypeError(f"int8_decoding needs a tessera model, got {type(model).__name__}")
    model._sync_all()  # C++ quantizes the tensors Python holds now
    nodes = [node for path, node in _linear_nodes(model).items() if ".lora_" not in path]
    for node in nodes:
        _C.nn.set_int8_decoding(node._cpp_addr, bool(enabled))
    return len(nodes)
