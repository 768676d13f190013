"""Checksums of every file of a checkpoint, written into it and verified before it is read.

`checksums.json` lists each file under the checkpoint folder (relative path, size, sha256) and a
sha256 of that list itself, so a damaged manifest is named as such rather than blamed on the
file whose digest it garbled. sha256 because with SHA-NI it hashes ~1.3 GB/s on one core here
(crc32 1.9 GB/s, blake2b 0.5 GB/s): nearly free next to writing the files, and it also catches
deliberate tampering, which a CRC does not. Files are hashed on a few threads (hashlib releases
the GIL on large buffers).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from typing import Dict, Iterable, List, Optional

from . import _C

MANIFEST = "checksums.json"
ALGORITHM = "sha256"
_CHUNK = 8 << 20


class CheckpointDamaged(ValueError):
    """A file of a checkpoint is missing, truncated or altered (its checksum does not match)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def files_under(folder: str) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if rel != MANIFEST:
                found.append(rel.replace(os.sep, "/"))
    return found


def _hash_all(folder: str, rels: Iterable[str]) -> Dict[str, str]:
    rels = list(rels)
    workers = max(1, min(4, os.cpu_count() or 1, len(rels)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        digests = pool.map(lambda r: file_sha256(os.path.join(folder, r)), rels)
        return dict(zip(rels, digests))


def _listing_digest(files: Dict[str, Dict[str, object]]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(folder: str) -> Dict[str, Dict[str, object]]:
    """Hashes every file under `folder` (the manifest excluded) and writes the manifest atomically.
    Call it last, once every other file of the checkpoint is complete."""
    rels = files_under(folder)
    digests = _hash_all(folder, rels)
    files = {r: {"size": os.path.getsize(os.path.join(folder, r)), ALGORITHM: digests[r]} for r in rels}
    doc = {"algorithm": ALGORITHM, "files": files, "manifest_" + ALGORITHM: _listing_digest(files)}
    _C.core.write_file_atomic(os.path.join(folder, MANIFEST), (json.dumps(doc, indent=1) + "\n").encode())
    return files


def refresh_model_files(folder: str) -> None:
    """After `save_pretrained` or `tessera convert` rewrote a checkpoint's model files in place
    (config.json, the weights, adapter/): their entries are recomputed and those of files that
    are gone dropped, so the manifest stays true for the rest of the folder. A stale manifest made
    the rewritten model fail to load as "damaged". No manifest, nothing to do."""
    try:
        files = read_manifest(folder)
    except CheckpointDamaged:
        return  # already reported as damage on load; not this writer's to repair
    if files is None:
        return
    def rewritten(rel: str) -> bool:
        return is_model_file(rel) or rel.startswith("adapter/")

    present = [r for r in files_under(folder) if rewritten(r)]
    kept = {r: v for r, v in files.items() if not rewritten(r)}
    digests = _hash_all(folder, present)
    kept.update({r: {"size": os.path.getsize(os.path.join(folder, r)), ALGORITHM: digests[r]} for r in present})
    doc = {"algorithm": ALGORITHM, "files": kept, "manifest_" + ALGORITHM: _listing_digest(kept)}
    _C.core.write_file_atomic(os.path.join(folder, MANIFEST), (json.dumps(doc, indent=1) + "\n").encode())


def read_manifest(folder: str) -> Optional[Dict[str, Dict[str, object]]]:
    """The manifest's file table, or None when the checkpoint has none (written before tessera
    checksummed checkpoints). A manifest that cannot be read or whose own digest does not match
    is damage."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path):  # a FIFO would block the open, a link to /dev/zero never end
        raise CheckpointDamaged(path, "not a regular file (a folder, FIFO, device or broken link); the checkpoint "
                                      "is damaged")
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
        files = doc["files"]
        if not isinstance(files, dict):
            raise TypeError(f"'files' is a {type(files).__name__}, not an object")
        ok = doc.get("algorithm") == ALGORITHM and doc.get("manifest_" + ALGORITHM) == _listing_digest(files)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointDamaged(path, f"the checksum manifest cannot be read ({e}); the file is damaged") from None
    if not ok:
        raise CheckpointDamaged(path, "the checksum manifest does not match its own digest; the file is damaged")
    for rel, entry in files.items():  # a re-signed manifest of another shape is damage too, not a KeyError
        inside = isinstance(rel, str) and not os.path.isabs(rel) and ".." not in rel.split("/") and "\\" not in rel
        if not (inside and isinstance(entry, dict) and type(entry.get("size")) is int
                and entry["size"] >= 0 and isinstance(entry.get(ALGORITHM), str) and len(entry[ALGORITHM]) == 64):
            raise CheckpointDamaged(path, f"the checksum manifest's entry {rel!r} is not a path inside the "
                                          f"checkpoint with {{size, {ALGORITHM}}}; the file is damaged")
    return files


def verify_checkpoint(folder: str, only: Optional[Iterable[str]] = None, required: Iterable[str] = ()) -> bool:
    """Checks the files of `folder` against its manifest (all of them, or those of `only` that the
    manifest lists; `only` names relative paths). The `required` files, those about to be read,
    must be listed: a manifest that leaves one out vouches for nothing. Raises CheckpointDamaged
    naming the first bad file; returns False when there is no manifest to check against, True
    when all matched."""
    files = read_manifest(folder)
    if files is None:
        return False
    unlisted = sorted(set(required) - set(files))
    if unlisted:
        raise CheckpointDamaged(os.path.join(folder, unlisted[0]), f"present but not listed in the checkpoint's "
                                                                    f"{MANIFEST} ({len(unlisted)} such file(s)); the "
                                                                    f"manifest or the folder was altered")
    wanted = sorted(files) if only is None else sorted(set(only) & set(files))
    for rel in wanted:  # sizes first: cheap, and a truncated file is named without hashing
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            raise CheckpointDamaged(path, "listed in the checkpoint's checksums but missing; the checkpoint is "
                                          "incomplete")
        size = os.path.getsize(path)
        if size != files[rel]["size"]:
            raise CheckpointDamaged(path, f"size mismatch (expected {files[rel]['size']} bytes, got {size}); "
                                          f"the file is damaged")
    digests = _hash_all(folder, wanted)
    for rel in wanted:
        expected = files[rel][ALGORITHM]
        if digests[rel] != expected:
            raise CheckpointDamaged(os.path.join(folder, rel),
                                    f"checksum mismatch (expected {ALGORITHM} {expected[:16]}..., got "
                                    f"{digests[rel][:16]}...); the file is damaged")
    return True


def is_model_file(rel: str) -> bool:
    """What `save_pretrained` writes and model readers read: config.json, generation_config.json,
    the weights, and a Sugar model's retrieval projector (models/sugar.py) beside them."""
    return rel in ("config.json", "generation_config.json", "retrieval_projector.safetensors",
                   "retrieval_projector.json") or (
        "/" not in rel and rel.startswith("model") and rel.endswith((".safetensors", ".safetensors.index.json")))


def verify_model_files(folder: str) -> bool:
    """For every reader of a model folder (from_pretrained, load_weights: `init.*`, a teacher,
    create_model(pretrained=)): checks its model files against the folder's manifest when it has
    one (a tessera checkpoint), each of them listed; a plain HF folder has none and passes."""
    if not os.path.isdir(folder) or not os.path.exists(os.path.join(folder, MANIFEST)):
        return False
    present = [f for f in os.listdir(folder) if is_model_file(f)]
    return verify_checkpoint(folder, only=present, required=present)
