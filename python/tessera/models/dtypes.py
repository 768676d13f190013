"""The dtype a model loads in: transformers 5's `dtype` argument of from_pretrained (its old name
`torch_dtype` too). "auto", the default there and here, is the folder's `config.json` `dtype` (or
`torch_dtype`, transformers 4's key), else the dtype of its first floating-point weight; a model
saved in bf16 loads in bf16, one saved in fp32 in fp32."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import torch

FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
DType = Union[str, torch.dtype, None]


def _named(value: Any, where: str) -> torch.dtype:
    """A floating dtype from a torch.dtype or its name ("bfloat16", "torch.bfloat16")."""
    if isinstance(value, torch.dtype):
        dtype = value
    elif isinstance(value, str) and isinstance(getattr(torch, value.removeprefix("torch."), None), torch.dtype):
        dtype = getattr(torch, value.removeprefix("torch."))
    else:
        raise ValueError(f"{where}: {value!r} is not a dtype (a torch.dtype, its name such as 'bfloat16', or 'auto')")
    if dtype not in FLOATS:
        raise ValueError(f"{where}: a model loads in a floating-point dtype ({', '.join(str(d) for d in FLOATS)}), "
                         f"not {dtype}")
    return dtype


def load_dtype(dtype: DType, torch_dtype: DType, config: Mapping[str, Any], weights: Mapping[str, torch.Tensor],
               where: str) -> torch.dtype:
    """The dtype `from_pretrained(dtype=..., torch_dtype=...)` loads `where` in."""
    if torch_dtype is not None and dtype not in (None, "auto") and _named(dtype, where) != _named(torch_dtype, where):
        raise ValueError(f"{where}: dtype={dtype} and torch_dtype={torch_dtype} disagree (torch_dtype is the old "
                         "name of dtype: give one)")
    if dtype in (None, "auto"):
        dtype = torch_dtype if torch_dtype is not None else "auto"
    if dtype != "auto":
        return _named(dtype, where)
    for key in ("dtype", "torch_dtype"):
        if config.get(key) is not None:
            return _named(config[key], f"{where}: {key}")
    first = next((t.dtype for t in weights.values() if t.dtype.is_floating_point), None)
    return first if first in FLOATS else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """config.json's spelling ("bfloat16"), as transformers writes it."""
    return str(dtype).removeprefix("torch.")


def config_with_dtype(config: Dict[str, Any], dtype: Optional[torch.dtype]) -> Dict[str, Any]:
    """The config to save: `dtype` is the weights' (transformers 5's key; 4's `torch_dtype` is dropped)."""
    out = {k: v for k, v in config.items() if k != "torch_dtype"}
    if dtype is not None:
        out["dtype"] = dtype_name(dtype)
    return out
