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


def is_regular_file(path: Union[str, os.PathLike], what: str = "a file") -> bool:
    """False when nothing is at `path` (a broken link included: a pruned Hugging Face cache leaves
    them, and transformers reads them as absent); True for a regular file (or a link to one); an
    error naming it for anything else. A FIFO blocks the open() that would read it, and a link to
    /dev/zero never ends: run folders and caches are written by others too."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return False
    if os.path.isfile(path):
        return True
    raise ValueError(f"{path}: not a regular file (a folder, FIFO or device); {what} was expected here")


def read_text(path: Union[str, os.PathLike], what: str = "a text file") -> str:
    """A UTF-8 file's text; a missing file, a folder or bytes that are not UTF-8 are errors that
    name the file and, for bad bytes, their offset."""
    path = os.fspath(path)
    if not is_regular_file(path, what):
        raise FileNotFoundError(f"{path}: not found ({what} was expected here)")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}); {what} "
                         "must be UTF-8") from None


def parse_json(text: str, source: str, what: str = "JSON") -> Any:
    """`text` as JSON; a syntax error names `source`, the line and the column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg} "
                         f"({what} was expected)") from None
    except (ValueError, RecursionError) as e:  # a 5000-digit number, nesting past Python's stack
        raise ValueError(f"{source}: JSON that cannot be read ({type(e).__name__}: {str(e)[:120]}; "
                         f"{what} was expected)") from None


def parse_json_line(line: str, where: str, hint: str) -> Any:
    """One line of a JSON-lines file; any failure (syntax, a 5000-digit number, nesting past the
    stack) is a ValueError naming `where`, followed by `hint`."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{where}: not a JSON object that can be read ({str(e)[:120]}); {hint}") from None


def read_json(path: Union[str, os.PathLike], what: str = "a JSON file") -> Any:
    """A JSON file's value; errors name the file, and the line and column of a syntax error."""
    return parse_json(read_text(path, what), os.fspath(path), what)
