"""Handing control to C++ from a mirrored tree (see cpp_module): the parameters registered in
Python now are pushed to C++ where their identity changed (`_Sync`), each encoder's layer loop is
routed through the Python layer nodes (`_LayerCaller`), and Python's tracers, which cannot see
C++, are refused up front (`refuse_capture`)."""
from __future__ import annotations

import weakref
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from . import _C
from .opaque_to_compile import opaque_to_compile


def weight_hooks() -> tuple:
    """The forward pre-hooks with which torch recomputes a parameter from others before each call
    (pruning's mask, weight norm's g and v, the old spectral norm); they ignore the call's inputs."""
    from torch.nn.utils.prune import BasePruningMethod
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return BasePruningMethod, WeightNorm, SpectralNorm


_NOT_CAPTURED = ("{how} a tessera model: its forward runs in C++, which Python's tracers cannot see. "
                 "torch.compile works (the model is one opaque call in the graph); for ONNX or a frozen graph "
                 "use transformers' model on the same weights (save_pretrained writes its folder)")


def refuse_capture() -> None:
    """torch.jit.trace and torch.export record Python ops, and vmap batches them: over C++ each
    failed deep inside with a message about something else (`.item()`, a symbolic guard)."""
    if torch.jit.is_tracing():
        raise RuntimeError(_NOT_CAPTURED.format(how="torch.jit.trace cannot record"))
    if torch.compiler.is_exporting():
        raise RuntimeError(_NOT_CAPTURED.format(how="torch.export cannot capture"))
    # any level: vmap(grad(f)), torch.func's per-sample gradients, has grad on top
    if torch._C._functorch.peek_interpreter_stack() is not None and any(i.key() == torch._C._functorch.TransformType.Vmap for i in retrieve_all_functorch_interpreters()):
        raise RuntimeError("torch.func.vmap cannot batch a tessera model's C++ forward: the model takes batches "
                           "itself; stack the inputs (or loop over them)")


class _Sync:
    """Pushes rebound parameters to C++ and checks that no C++-run node was replaced."""

    def __init__(self):
        self.slots: List[Tuple[nn.Module, str, int]] = []  # (node, parameter name, C++ address)
        self.seen: List[int] = []  # TensorImpl address C++ holds, per slot
        self.children: List[Tuple[nn.Module, str, nn.Module, str]] = []  # (parent, name, child, path)

    def run(self) -> None:
        for parent, name, child, path in self.children:
            if parent._modules.get(name) is not child:
                raise TypeError(
                    f"{path} was replaced by {type(parent._modules.get(name)).__name__}, but C++ runs the original "
                    "module there, so the replacement would be ignored. Change the C++ module, or replace a whole "
                    "layer (layers are called through Python).")
        ran = set()
        for i, (node, name, addr) in enumerate(self.slots):
            if node._forward_pre_hooks and id(node) not in ran:  # prune / weight_norm recompute it now
                ran.add(id(node))
                for hook in [h for h in node._forward_pre_hooks.values() if isinstance(h, weight_hooks())]:
                    hook(node, ())  # not FSDP's or a user's hook on the model: those run in __call__
            t = node._parameters.get(name)
            if t is None:  # a parametrization computes it on access (or a weight hook set it)
                t = getattr(node, name)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{node._cpp_path}.{name} is {type(t).__name__}, but the C++ module computes with "
                                "it: a C++ layer keeps its parameters (for no bias, zero it and freeze it: "
                                "`bias.data.zero_(); bias.requires_grad_(False)`)")
            if t._cdata != self.seen[i]:
                _C.nn.rebind_parameter(addr, name, t)
                self.seen[i] = t._cdata


class _LayerCaller:
    """What the C++ encoder calls for layer i: Python's `layers[i](hidden_states, args)`."""

    def __init__(self, layers: nn.ModuleList, nodes: List[nn.Module], encoder_addr: int):
        self.layers = weakref.ref(layers)  # no cycle through C++ (the tree owns the C++ module)
        self.nodes = nodes
        self.checked: Dict[int, int] = {}
        self.encoder_addr = encoder_addr

    def edited(self) -> bool:
        """The Python list no longer holds the layer nodes in order (a wrapper still counts as
        edited: C++ alone would skip it)."""
        layers = self.layers()
        return layers is not None and (len(layers) != len(self.nodes)
                                       or any(a is not b for a, b in zip(layers, self.nodes)))

    @opaque_to_compile  # as the forwards that reach it, also for one kept from before Dynamo loaded
    def __call__(self, i: int, hidden_states: torch.Tensor, args) -> torch.Tensor:
        layers = self.layers()
        if layers is None:
            return _C.nn.run_layer(self.encoder_addr, i, hidden_states, args)
        if i == 0 and len(layers) != len(self.nodes):
            raise ValueError(f"{self.nodes[0]._cpp_path.rpartition('.')[0]} holds {len(layers)} layers but its C++ "
                             f"encoder runs {len(self.nodes)}: layers cannot be added or removed in Python (a layer "
                             "may be wrapped); build the model with the number you want (num_hidden_layers)")
        layer = layers[i]
        if self.checked.get(i) != id(layer):
            node = self.nodes[i]
            if layer is not node and not any(m is node for m in layer.modules()):
                raise TypeError(f"{node._cpp_path} was replaced by {type(layer).__name__}, which does not wrap it; "
                                "a layer may only be wrapped (checkpoint wrappers, FSDP), since C++ computes it")
            self.checked[i] = id(layer)
        return layer(hidden_states, args)
