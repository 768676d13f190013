"""Where a bound C++ module is built: as torch's default device says (meta parameters without
memory or random init under `with torch.device("meta")`), within this machine's parameter budget."""
from __future__ import annotations

import contextlib

import torch

from . import _C


def build_cpp(make, *args):
    """`make(*args)` (a bound C++ module's constructor) where torch's default device says: under
    `with torch.device("meta")` every parameter is a meta tensor, without memory or random init
    (to be sharded, then `to_empty` and `init_weights()` or a load, as torchtitan builds); under
    another device it is made on the CPU and CppModule moves it. Sizes beyond this machine are
    refused before init (ParameterBudget)."""
    with on_meta(torch.get_default_device().type == "meta"), _C.nn.ParameterBudget():
        return make(*args)


@contextlib.contextmanager
def on_meta(meta: bool):
    """C++ modules built (or cloned) in the scope make meta parameters, uninitialised, if `meta`."""
    saved = _C.nn.set_meta_parameters(meta), _C.nn.init_enabled()
    if meta:
        _C.nn.set_init_enabled(False)
    try:
        yield
    finally:
        _C.nn.set_meta_parameters(saved[0])
        _C.nn.set_init_enabled(saved[1])
