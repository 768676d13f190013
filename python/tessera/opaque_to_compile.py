"""tessera's forwards as one opaque call to torch.compile, without importing Dynamo up front.

Their math is C++, which Dynamo cannot trace, and tracing the Python glue around it specialised on
each layer's index and recompiled until Dynamo's limit: so each is wrapped in
`torch.compiler.disable`. That call imports `torch._dynamo`, which costs about as much as `import
torch` again (over 1 s: sympy, the trace rules). Nothing compiles before Dynamo is imported, so a
method is wrapped the moment both exist: at once when Dynamo is already loaded, else right after
its import finishes (a finder on `sys.meta_path` until then). Processes that never compile (or
build an optimizer, whose first param group imports Dynamo) never pay for it.

The C++-to-Python entry of every layer call (`_LayerCaller.__call__`) is wrapped too: code that
kept a reference to a forward from before Dynamo loaded (accelerate's autocast wrapper does) calls
the unwrapped forward, and the layers it reaches must still stop the tracing.
"""
from __future__ import annotations

import importlib.abc
import sys
import threading
from typing import Callable, List, Optional, Tuple

from ._warn import warn

_DYNAMO = "torch._dynamo"
_lock = threading.Lock()
_waiting: List[Tuple[type, str]] = []
_finder: Optional["_AfterDynamoImport"] = None  # on sys.meta_path until Dynamo's import has finished


class opaque_to_compile:
    """Method decorator: `torch.compiler.disable` on the method, once Dynamo is imported."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __set_name__(self, owner: type, name: str) -> None:
        setattr(owner, name, self.fn)
        disable_when_dynamo_loads(owner, name)


def disable_when_dynamo_loads(cls: type, name: str = "forward") -> None:
    """Wraps `cls.<name>` in `torch.compiler.disable`, now or once Dynamo has been imported."""
    global _finder
    with _lock:
        # Loaded before tessera, or since (the finder has gone): wrap now. Else (not imported, or
        # importing in another thread) the finder wraps it when the import finishes.
        now = _finder is None and _DYNAMO in sys.modules
        if not now:
            _waiting.append((cls, name))
            if _finder is None:
                _finder = _AfterDynamoImport()
                sys.meta_path.insert(0, _finder)
    if now:
        _disable(cls, name)


def _disable(cls: type, name: str) -> None:
    import torch

    method = getattr(cls, name)
    if not getattr(method, "_torchdynamo_disable", False):  # a base class's, already wrapped
        setattr(cls, name, torch.compiler.disable(method))


def _dynamo_loaded() -> None:
    global _finder
    with _lock:
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _finder = None
        pending = list(_waiting)
        _waiting.clear()
    for cls, name in pending:
        try:
            _disable(cls, name)
        except Exception as e:  # never fail Dynamo's own import: compiling the model would then recompile
            warn(f"tessera: {cls.__name__}.{name} could not be made opaque to torch.compile ({e})")


class _AfterDynamoImport(importlib.abc.MetaPathFinder):
    """Finds `torch._dynamo` through the finders after it and has its loader call `_dynamo_loaded`
    once the module has run. It stays on `sys.meta_path` until then: a lookup that imports nothing
    (`importlib.util.find_spec`), or an import that fails, leaves the next import to it."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _DYNAMO:
            return None
        spec = next((s for f in list(sys.meta_path) if f is not self and hasattr(f, "find_spec")
                     for s in [f.find_spec(fullname, path, target)] if s is not None), None)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenWrap(spec.loader)
        return spec


class _ThenWrap(importlib.abc.Loader):
    """The module's own loader, then `_dynamo_loaded`; every other attribute is the loader's."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _dynamo_loaded()

    def __getattr__(self, name):
        return getattr(self._loader, name)
