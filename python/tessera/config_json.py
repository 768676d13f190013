"""A config dict as the JSON text the C++ core reads. JSON has no NaN or infinity, yet Python's
json writes them (and reads them from a config.json); the C++ parser then failed with a position,
not a key. A sub-config (`text_config`, ...) that is not an object failed inside the parser's
accessors the same way. Both are refused here, naming the key."""
from __future__ import annotations

import json
import math
from typing import Any, Dict


def _check(value: Any, key: str, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and not -2 ** 63 <= value < 2 ** 64:
        raise ValueError(f"{where}: {key} is too large for a 64-bit integer, got {value}")
    if value is not None and not isinstance(value, (bool, int, float, str, dict, list, tuple)):
        raise TypeError(f"{where}: {key} must be a JSON value (number, string, list, mapping), got "
                        f"{type(value).__name__}")
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{key}.{k}" if key else str(k)
            if str(k).endswith("_config") and v is not None and not isinstance(v, dict):
                raise ValueError(f"{where}: {path} must be a JSON object (a sub-config), got {type(v).__name__}")
            _check(v, path, where)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check(v, f"{key}[{i}]", where)


def config_json(config: Dict[str, Any], where: str = "config") -> str:
    _check(config, "", where)
    return json.dumps(config, allow_nan=False)
