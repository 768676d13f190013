"""What autograd keeps for backward: the bytes of every saved tensor's storage, each once,
parameters excluded (the planner's activations are held to this)."""
import contextlib

import torch


def saved_bytes(model, run, bf16: bool) -> int:
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        run()
    return sum(v for k, v in storages.items() if k not in params)
