"""Generated data sets (instruct, interleaved) are idempotent: a folder whose manifest records
the same version and arguments (defaults included) is reused instead of generated again. A set is
written into a fresh folder beside `out` and swapped in at the end, and only a folder that is
empty or holds a set of the same generator is ever replaced: a researcher's own files are not."""
from __future__ import annotations

import inspect
import json
import os
import secrets
import shutil
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional


def read_manifest(out: str) -> Optional[Dict]:
    """The manifest at `out`, None if there is none; a ValueError naming the file if it is not a
    JSON object."""
    path = os.path.join(out, "manifest.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON manifest ({e}); delete the folder to generate it again") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: a manifest is a JSON object, got {type(manifest).__name__}")
    return manifest


def ensure_generated(out: str, version: int, generate: Callable[..., Dict], **kwargs: Any) -> Dict:
    """The manifest at `out` if it was generated with `version` and these arguments, with the
    generator's defaults for those not given; else generate(out, **kwargs)."""
    try:
        bound = inspect.signature(generate).bind(out, **kwargs)
    except TypeError as e:
        raise TypeError(f"{generate.__module__}.generate: {e}") from None
    bound.apply_defaults()
    wanted = {"version": version, **{k: v for k, v in bound.arguments.items() if k != "out"}}
    if "root" in wanted:
        wanted["root"] = os.path.abspath(wanted["root"])
    manifest = read_manifest(out)
    if manifest is not None and all(manifest.get(k) == v for k, v in wanted.items()):
        return manifest
    return generate(out, **kwargs)


def _replaceable(out: str, generator: str) -> None:
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out) or os.path.islink(out):
        raise ValueError(f"{out} exists and is not a folder: refusing to replace it with a generated data set")
    if not os.listdir(out):
        return
    manifest = read_manifest(out)
    # Sets written before the manifest named its generator carry only a version.
    ours = manifest is not None and "version" in manifest and manifest.get("generator", generator) == generator
    if not ours:
        raise ValueError(f"{out} holds files that {generator} did not write (no manifest of its own): refusing "
                         "to replace them; give an empty or new folder")


@contextmanager
def staged(out: str, generator: str) -> Iterator[str]:
    """A new folder beside `out` to write a data set into; when the block ends it becomes `out`
    (the old set is renamed aside first and deleted last, so a crash loses neither). An error in
    the block deletes the new folder and leaves `out` as it was."""
    _replaceable(out, generator)
    out = out.rstrip("/") or out
    tmp = f"{out}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    os.makedirs(tmp)  # not mkdtemp: the set keeps the umask's permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = tmp + ".old"
    if os.path.lexists(out):
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
