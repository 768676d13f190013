"""A torch.nn.Module over a C++ module: the Python parameters *are* the C++ tensors.

LibTorch's own `torch.nn.cpp.ModuleWrapper` keeps C++ children as pybind objects, so hooks,
`state_dict` prefixes and DistributedDataParallel do not see a real module tree. Here the tree
is rebuilt from the C++ module's dotted parameter names with plain `nn.Module` nodes whose
`_parameters` hold the very tensors the C++ forward uses (same TensorImpl): an optimizer step in
Python changes what C++ computes, `.to()` swaps their data in place, and gradients accumulate on
them. `forward` goes to C++.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _as_parameter(t: torch.Tensor) -> nn.Parameter:
    # Re-label the C++ tensor's Python object as a Parameter without copying: a Parameter is a
    # Tensor with no extra state, and keeping the same object keeps the same TensorImpl.
    if not isinstance(t, nn.Parameter):
        t.__class__ = nn.Parameter
    return t


class _Node(nn.Module):
    """An interior module of the mirrored tree (e.g. `vision_model.encoder.layers.0`)."""

    def forward(self, *args, **kwargs):  # pragma: no cover - nodes are containers only
        raise RuntimeError("this submodule is part of a C++ module; call the top-level module")


class CppModule(nn.Module):
    """Wraps a bound C++ module (see `tessera/python/module_binding.h`).

    Example::

        block = tessera.CppModule(my_ext.MyBlock(64))
        opt = torch.optim.AdamW(block.parameters())
    """

    def __init__(self, cpp):
        super().__init__()
        object.__setattr__(self, "_cpp", cpp)
        self._mirror(cpp)

    @property
    def cpp(self):
        """The underlying C++ module handle."""
        return self._cpp

    def _mirror(self, cpp) -> None:
        for kind, items in (("param", cpp.named_parameters()), ("buffer", cpp.named_buffers())):
            for name, tensor in items:
                *path, leaf = name.split(".")
                node = self
                for part in path:
                    child = node._modules.get(part)
                    if child is None:
                        child = _Node()
                        node._modules[part] = child
                    node = child
                if kind == "param":
                    node._parameters[leaf] = _as_parameter(tensor)
                else:
                    node._buffers[leaf] = tensor
        self.train(cpp.is_training())

    def train(self, mode: bool = True):
        super().train(mode)
        self._cpp.train(mode)
        return self

    def forward(self, *args, **kwargs):
        return self._cpp.forward(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # `assign=True` would put new Parameter objects into the Python tree while the C++ forward
        # kept reading the old tensors; copying into the shared tensors is the only load that C++
        # sees, so `assign` is accepted and loads by copy.
        return super().load_state_dict(state_dict, strict=strict, assign=False)

    def __deepcopy__(self, memo):
        # A deep copy needs its own C++ module (Cloneable::clone copies every tensor).
        clone = self.__class__.__new__(self.__class__)
        nn.Module.__init__(clone)
        object.__setattr__(clone, "_cpp", self._cpp.clone())
        for key, value in self.__dict__.items():
            if key not in clone.__dict__ and key != "_cpp":
                clone.__dict__[key] = copy.deepcopy(value, memo)
        clone._mirror(clone._cpp)
        for (_, p), (_, q) in zip(self.named_parameters(), clone.named_parameters()):
            q.requires_grad_(p.requires_grad)
        return clone

    def __reduce_ex__(self, protocol):
        raise TypeError(
            f"{type(self).__name__} wraps a C++ module and cannot be pickled; "
            "use save_pretrained(dir) / tessera.from_pretrained(dir) or state_dict()"
        )

    def extra_repr(self) -> str:
        return f"cpp={type(self._cpp).__name__}"
