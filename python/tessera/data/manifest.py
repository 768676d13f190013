"""Generated data sets (instruct, interleaved) are idempotent: a folder whose manifest records
the same version and arguments is reused instead of generated again."""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict


def ensure_generated(out: str, version: int, generate: Callable[..., Dict], **kwargs: Any) -> Dict:
    """The manifest at `out` if it was generated with `version` and `kwargs`, else generate(out, **kwargs)."""
    path = os.path.join(out, "manifest.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        wanted = {"version": version, **kwargs}
        if "root" in wanted:
            wanted["root"] = os.path.abspath(wanted["root"])
        if all(manifest.get(k) == v for k, v in wanted.items()):
            return manifest
    return generate(out, **kwargs)
