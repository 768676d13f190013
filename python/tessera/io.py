"""Atomic file writes: the new content goes to a temporary file in the same folder, is flushed to
disk, then renamed over the target, so a crash leaves the old file or the new one, never half."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Union


def write_atomic(path: Union[str, os.PathLike], data: Union[bytes, str]) -> str:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: Union[str, os.PathLike], value: Any, indent: int = 1) -> str:
    return write_atomic(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")
