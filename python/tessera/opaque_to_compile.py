"""tessera's forwards as one opaque call to torch.compile, without importing Dynamo up front.

Their math is C++, which Dynamo cannot trace, and tracing the Python glue around it specialised on
each layer's index and recompiled until Dynamo's limit: so each is wrapped in
`torch.compiler.disable`. That call imports `torch._dynamo`, which costs about as much as `import
torch` again (over 1 s: sympy, the trace rules). Nothing compiles before Dynamo is imported, so a
method is wrapped the moment both exist: at once when Dynamo is already loaded, else right after
its import finishes (a one-shot finder on `sys.meta_path`). Processes that never compile never pay.
"""
from __future__ import annotations

import importlib.abc
import sys
from typing import Callable, List, Tuple

_DYNAMO = "torch._dynamo"
_waiting: List[Tuple[type, str]] = []


class opaque_to_compile:
    """Method decorator: `torch.compiler.disable` on the method, once Dynamo is imported."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __set_name__(self, owner: type, name: str) -> None:
        setattr(owner, name, self.fn)
        disable_when_dynamo_loads(owner, name)


def disable_when_dynamo_loads(cls: type, name: str = "forward") -> None:
    """Wraps `cls.<name>` in `torch.compiler.disable`, now or once Dynamo has been imported."""
    if _DYNAMO in sys.modules:
        _disable(cls, name)
        return
    if not _waiting:
        sys.meta_path.insert(0, _AfterDynamoImport())
    _waiting.append((cls, name))


def _disable(cls: type, name: str) -> None:
    import torch

    method = getattr(cls, name)
    if not getattr(method, "_torchdynamo_disable", False):  # a base class's, already wrapped
        setattr(cls, name, torch.compiler.disable(method))


class _AfterDynamoImport(importlib.abc.MetaPathFinder):
    """Finds `torch._dynamo` through the finders after it, and wraps the waiting methods once its
    module has run; then leaves `sys.meta_path`."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _DYNAMO:
            return None
        sys.meta_path.remove(self)
        spec = next((s for f in sys.meta_path if hasattr(f, "find_spec")
                     for s in [f.find_spec(fullname, path, target)] if s is not None), None)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            for cls, name in _waiting:
                _disable(cls, name)
            _waiting.clear()

        spec.loader.exec_module = exec_module
        return spec
