"""Atomic file writes from Python, over the C++ writer every checkpoint uses (temporary file in the
same folder, fsync, rename, permissions as a plain open() would give): a crash leaves the old
file or the new one, never half of one."""
from __future__ import annotations

import json
import os
from typing import Any, Union

from . import _C


def write_atomic(path: Union[str, os.PathLike], data: Union[bytes, str]) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _C.core.write_file_atomic(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def write_json(path: Union[str, os.PathLike], value: Any, indent: int = 1) -> str:
    return write_atomic(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")
