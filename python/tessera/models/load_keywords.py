"""transformers' from_pretrained keywords on tessera's: the Hub and loader switches offline scripts
pass everywhere (`local_files_only=True`, `low_cpu_mem_usage=True`, ...) change nothing for a
local folder, as in transformers; `device_map` to one device places the model there; a config
key (`attention_dropout=0.1`) updates the config, as transformers' keywords do. Anything else is
refused by name here, where it once reached the model's constructor ("FamilyModel.__init__() got
an unexpected keyword argument")."""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

import torch

#: Keywords for the Hub or transformers' loader that a local folder read by tessera makes moot
#: (tessera reads safetensors memory-mapped and never runs code from a folder).
NO_EFFECT = {"local_files_only", "low_cpu_mem_usage", "trust_remote_code", "revision", "cache_dir", "token",
             "force_download", "proxies", "resume_download", "use_safetensors", "attn_implementation",
             "device_map"}
_ATTENTION = (None, "sdpa", "eager")  # the math tessera's C++ attention computes; others name kernels it lacks


def class_arguments(cls, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The keywords `cls`'s constructor takes besides the config (BeitModel's add_pooling_layer),
    taken out of `kwargs`; the rest are config keys (or loader options)."""
    own = set(inspect.signature(cls.__init__).parameters) - {"self", "config"}
    return {k: kwargs.pop(k) for k in list(kwargs) if k in own}


def split_keywords(cls, config: Dict[str, Any], kwargs: Dict[str, Any]
                   ) -> Tuple[Dict[str, Any], Dict[str, Any], Optional[torch.device]]:
    """(config overrides, the class's own constructor arguments, the device to move to)."""
    loader = {k: kwargs.pop(k) for k in list(kwargs) if k in NO_EFFECT}
    if loader.get("use_safetensors") is False:
        raise ValueError("from_pretrained(use_safetensors=False): tessera reads model.safetensors only")
    if loader.get("attn_implementation") not in _ATTENTION:
        raise ValueError(f"from_pretrained(attn_implementation={loader['attn_implementation']!r}): tessera's C++ "
                         "attention is one implementation, transformers' 'eager' and 'sdpa' results (a padded query "
                         "that sees no key computed as 'eager' does)")
    device = _device(loader.get("device_map"))
    init = class_arguments(cls, kwargs)
    if not kwargs:
        return {}, init, device
    try:  # the keys the class reads, defaults included (a bad config is named with its file later)
        known = set(cls.resolve_config(config))
    except (AttributeError, ValueError):
        known = set(config)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"{cls.__name__}.from_pretrained() got unexpected keyword argument(s) {', '.join(unknown)}: "
                        f"neither a loading option nor a key of its config")
    return dict(kwargs), init, device


def _device(device_map) -> Optional[torch.device]:
    """transformers' device_map naming one device ("cpu", "cuda:0", a torch.device or an index)."""
    if device_map is None:
        return None
    if isinstance(device_map, dict) and len(set(device_map.values())) == 1:
        device_map = next(iter(device_map.values()))
    try:
        return torch.device(device_map)
    except (TypeError, RuntimeError):
        raise ValueError(f"from_pretrained(device_map={device_map!r}): tessera places a whole model on one device "
                         "(a device name, an index, or {'': device}); shard larger ones with FSDP2") from None
