"""Trainer checkpoints that describe themselves and survive a crash.

Layout: `<out>/checkpoints/step-00000100/` holding
- `dcp/`: model and optimizer as `torch.distributed.checkpoint` shards (each rank its own; loads
  onto another world size or strategy),
- `model.safetensors` + `config.json`: the consolidated HF export (`tessera.from_pretrained`,
  transformers),
- `trainer_state.pt`: scheduler, step, every rank's RNG states and data position, format version
  (plain data, read with `weights_only=True`),
- `recipe.json`,
- `checksums.json`: size and sha256 of every other file (`tessera.checksums`), written last.
A checkpoint is written into a hidden temp folder, every file fsynced, then renamed into place:
a folder named `step-*` is always complete. The last K are kept. Several nodes need the run
folder on a shared filesystem.

Reading one never runs code from it (`safe_dcp`: DCP's `.metadata` through a restricted
unpickler, byte items and the trainer state with `weights_only`), and its files are checked
against `checksums.json` first: `--resume` skips a damaged checkpoint for the newest intact one,
saying which and why, and moves it aside (`damaged-step-*`) so pruning never keeps it in place of
an intact one. A checkpoint without `checksums.json` (written by an older tessera) loads with a
warning.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import random
import shutil
import warnings
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from .. import _C
from ..checksums import (MANIFEST, CheckpointDamaged, files_under, is_model_file, read_manifest, verify_checkpoint,
                         write_manifest)
from ..models.weights import save_weights
from .distributed import rank0_decides, wait_for_rank0
from .strategy import unwrapped_name
from .._warn import warn
from ..io import is_regular_file

FORMAT_VERSION = 2  # checksums.json is an extra file, not a new format: older tessera still reads these
STATE_FILE = "trainer_state.pt"
DCP_DIR = "dcp"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def restoring(ckpt_dir: str, field: str):
    """Names the trainer_state.pt field whose restore failed: an edited state (its checksums
    rewritten) failed deep inside torch with a KeyError or an RNG size error."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise ValueError(f"{os.path.join(ckpt_dir, STATE_FILE)}: {field} cannot be restored "
                         f"({type(e).__name__}: {e})") from None


def list_checkpoints(out_dir: str) -> List[str]:
    root = os.path.join(out_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    names = sorted(n for n in os.listdir(root) if n.startswith("step-") and os.path.isdir(os.path.join(root, n)))
    return [os.path.join(root, n) for n in names]


def discard_checkpoints(out_dir: str) -> None:
    """`--overwrite`: the earlier run's checkpoints go before the new run writes its own."""
    for ckpt in list_checkpoints(out_dir):
        _discard(ckpt)


def _discard(ckpt_dir: str) -> None:
    """Renames a checkpoint out of the `step-*` namespace before deleting it: a kill during the
    delete then leaves a hidden folder, never a half-deleted checkpoint that resume would pick."""
    head, name = os.path.split(ckpt_dir)
    trash = os.path.join(head, f".old-{name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.rename(ckpt_dir, trash)
    _fsync_dir(head)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _single_process_quiet():
    """DCP runs as one process when torch.distributed is not initialised, and warns that it
    assumes so; that is what a single-process run means."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _barrier(info) -> None:
    wait_for_rank0(info)  # rank 0 may have cleaned, renamed or pruned alone before it


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, ...); the previous ones are untouched."""


def _causes(exc: BaseException):
    """The exception, its causes and contexts, and the per-rank failures a DCP
    CheckpointException carries."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]
        failures = getattr(e, "failures", None)
        if isinstance(failures, dict):
            todo += [f[0] if isinstance(f, tuple) else f for f in failures.values()]


def _is_disk_full(exc: BaseException) -> bool:
    codes = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    texts = [os.strerror(c) for c in codes]  # C++ writers report strerror() in a RuntimeError
    return any((isinstance(e, OSError) and e.errno in codes) or any(t in str(e) for t in texts)
               for e in _causes(exc))


def _root_message(exc: BaseException) -> str:
    """The innermost useful message: a DCP CheckpointException's str is every rank's traceback."""
    for e in _causes(exc):
        failures = getattr(e, "failures", None)
        if isinstance(failures, dict) and failures:
            rank, f = sorted(failures.items())[0]
            inner = f[0] if isinstance(f, tuple) else f
            return f"{type(inner).__name__} on rank {rank}: {inner}"
    return f"{type(exc).__name__}: {exc}"


def _folder_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, name))
    return total


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _write_error(exc: BaseException, out_dir: str, tmp: str, final: str) -> CheckpointWriteError:
    root = os.path.dirname(final)
    previous = [c for c in list_checkpoints(out_dir) if c != final]
    kept = f"{previous[-1]} is intact" if previous else "no earlier checkpoint exists"
    if _is_disk_full(exc):
        free = shutil.disk_usage(root).free if os.path.isdir(root) else 0
        need = (f"the previous checkpoint takes {_mb(_folder_bytes(previous[-1]))}" if previous
                else "this is the run's first checkpoint")
        return CheckpointWriteError(
            f"{root}: disk full while writing checkpoint {os.path.basename(final)} ({_mb(free)} free; {need}); the "
            f"partial checkpoint was removed and {kept}. Free space on that disk or use another --out, then "
            f"resume with --resume")
    return CheckpointWriteError(f"{final}: writing the checkpoint failed ({_root_message(exc)}); the partial "
                                f"checkpoint was removed and {kept}")


def save_checkpoint(out_dir: str, wrapped, optimizer, trainer_state: Dict[str, Any], recipe: Dict[str, Any],
                    keep: int, info, beside=None) -> str:
    """Every rank calls this. Model and optimizer go through `torch.distributed.checkpoint` (each
    rank writes its shard; replicated tensors once), rank 0 adds the consolidated HF export, the
    trainer state, the recipe, `beside(folder)`'s files (the task's tokenizer and image processor)
    and last the checksums, then renames the folder into place and
    prunes all but `keep`. A failure (disk full: with the free and needed space) removes the
    partial folder and raises CheckpointWriteError on every rank; earlier checkpoints stay."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict

    step = int(trainer_state["step"])
    root = os.path.join(out_dir, "checkpoints")
    final = os.path.join(root, f"step-{step:08d}")
    tmp = os.path.join(root, f".tmp-step-{step:08d}")  # one name on every rank (shared folder)
    if info.is_main:
        os.makedirs(root, exist_ok=True)
        for stale in os.listdir(root):  # left by a run killed while writing or pruning
            if stale.startswith((".tmp-step-", ".old-step-")):
                shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
        os.makedirs(tmp)
    _barrier(info)
    model_sd, optim_sd = get_state_dict(wrapped.model, optimizer)
    try:
        with _single_process_quiet():
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=os.path.join(tmp, DCP_DIR))
    except (Exception, CheckpointException) as e:  # DCP reports every rank's failure on every rank
        if info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(e, out_dir, tmp, final) from None
    full = wrapped.full_state_dict()  # a collective when sharded

    def write_rank0_files() -> None:
        try:
            if hasattr(wrapped.model, "save_pretrained"):  # HF layout: config.json + model.safetensors
                wrapped.model.save_pretrained(tmp, state_dict=full)
            else:  # a task's plain nn.Module: its tensors under their names
                save_weights(tmp, {k: v.contiguous() for k, v in full.items()})
            buf = io.BytesIO()
            torch.save({"format_version": FORMAT_VERSION, **trainer_state}, buf)
            _C.core.write_file_atomic(os.path.join(tmp, STATE_FILE), buf.getvalue())
            _C.core.write_file_atomic(os.path.join(tmp, "recipe.json"),
                                      (json.dumps(recipe, indent=2) + "\n").encode())
            if beside is not None:
                beside(tmp)
            write_manifest(tmp)  # last: it vouches for every file above
            for dirpath, _, _ in os.walk(tmp):
                _fsync_dir(dirpath)
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _write_error(e, out_dir, tmp, final) from None

    rank0_decides(info, write_rank0_files, (CheckpointWriteError,))  # every rank raises when rank 0 failed
    if info.is_main:
        if os.path.exists(final):
            _discard(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
            _discard(old)
    _barrier(info)
    return final


def _read_on_resume(rel: str) -> bool:
    return rel in (STATE_FILE, "recipe.json") or rel.startswith(DCP_DIR + "/") or is_model_file(rel)


def check_files(ckpt_dir: str) -> bool:
    """Verifies every file of a checkpoint against its checksums.json (CheckpointDamaged names
    the first bad one); every file resume reads must be listed. Any other file (a tokenizer saved
    beside the weights, a README, an NFS leftover) is named and left alone: resume reads none of
    them. Without a manifest (written by an older tessera) it warns and returns False."""
    present = files_under(ckpt_dir)
    for rel in present:  # a FIFO blocks the open() that reads it, a device never ends: before any read
        if _read_on_resume(rel) and not os.path.isfile(os.path.join(ckpt_dir, rel)):
            raise CheckpointDamaged(os.path.join(ckpt_dir, rel), "not a regular file (a FIFO, device or broken "
                                                                 "link); the checkpoint is damaged")
    if verify_checkpoint(ckpt_dir, required=[f for f in present if _read_on_resume(f)]):
        extra = sorted(set(present) - set(read_manifest(ckpt_dir) or {}))
        if extra:
            warn(f"{ckpt_dir}: {len(extra)} file(s) not in its {MANIFEST}, not read on resume: "
                 f"{', '.join(extra[:3])}")
        return True
    warn(f"{ckpt_dir} has no {MANIFEST} (written before tessera checksummed checkpoints): its files "
         f"are loaded unverified")
    return False


def load_checkpoint(ckpt_dir: str, wrapped, optimizer, verify: bool = True) -> Dict[str, Any]:
    """Restores model and optimizer from the DCP shards (resharded to this run's world size and
    strategy) and returns the trainer state. `verify`: check the checksums first (the trainer
    verifies on rank 0 alone while choosing the checkpoint, and passes False)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from .safe_dcp import SafeLoadPlanner, safe_reader

    if verify:
        check_files(ckpt_dir)
    state = load_trainer_state(ckpt_dir)
    # Read (and vet) the metadata before DCP does: dcp.load hides why it could not.
    reader, metadata = safe_reader(os.path.join(ckpt_dir, DCP_DIR))
    _check_shards_hold_their_items(os.path.join(ckpt_dir, DCP_DIR), metadata)
    model_sd, optim_sd = get_state_dict(wrapped.model, optimizer)
    # DCP loads only the keys asked for: a smaller model would resume from a larger one's
    # checkpoint, train on part of it and prune the rest away.
    extra = sorted(k[len("model."):] for k in metadata.state_dict_metadata
                   if k.startswith("model.") and k[len("model."):] not in model_sd)
    if extra:
        raise ValueError(f"{ckpt_dir}: the checkpoint holds {len(extra)} model tensor(s) this model lacks "
                         f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}): it was written by another "
                         f"configuration; resume with the recipe it was trained with")
    saved_groups = {k.split(".")[2] for k in metadata.state_dict_metadata if k.startswith("optim.param_groups.")}
    if saved_groups and len(saved_groups) != len(optimizer.param_groups):
        # DCP would restore a merged group's settings from one of the saved ones, or refuse a new
        # group by key; the scheduler then failed a step later (zip() of unequal lengths).
        raise ValueError(f"{ckpt_dir}: the recipe's optimizer has {len(optimizer.param_groups)} parameter group(s), the "
                         f"checkpoint's {len(saved_groups)}: optim.weight_decay (0 merges decayed and undecayed "
                         "parameters), optim.lr_scales or optim.layer_decay changed; resume with the values it was "
                         "trained with")
    later = _added_since(wrapped.model, model_sd, metadata)
    groups_now = [list(g["params"]) for g in optim_sd["param_groups"]]
    try:
        with _single_process_quiet():
            dcp.load({"model": model_sd, "optim": optim_sd}, storage_reader=reader, planner=SafeLoadPlanner())
    except (Exception, CheckpointException) as e:  # DCP names missing keys or shapes; say which checkpoint
        raise ValueError(f"{ckpt_dir}: cannot restore model/optimizer from {DCP_DIR}/: {_root_message(e)}") from None
    _check_same_groups(ckpt_dir, groups_now, [list(g["params"]) for g in optim_sd["param_groups"]])
    set_state_dict(wrapped.model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    with torch.no_grad():
        for tensor, value in later:
            tensor.fill_(value)
    return state


def _check_same_groups(ckpt_dir: str, now: List[List[str]], saved: List[List[str]]) -> None:
    """Every parameter in the parameter group it was trained in. Groups are restored by their
    parameters' names and the scheduler's base LRs by position: with optim.lr_scales moved to
    other modules (the group count unchanged), a layer's weight and bias trained at different
    scales, and the projections at one neither recipe gave them."""
    where = {name: i for i, names in enumerate(saved) for name in names}
    for i, names in enumerate(now):
        moved = [n for n in names if n in where and where[n] != i]
        if moved:
            raise ValueError(f"{ckpt_dir}: parameter {moved[0]!r} ({len(moved)} in all) was trained in optimizer group "
                             f"{where[moved[0]]}, the recipe puts it in group {i}: optim.lr_scales, optim.layer_decay "
                             "or optim.weight_decay changed which parameters share settings; resume with the values "
                             "it was trained with")


def _added_since(model, model_sd: Dict[str, Any], metadata) -> list:
    """Buffers a module added after checkpoints were written without them (a module's
    `checkpoint_defaults`: VQ-KD's EMA update count) are taken out of the load and set to their
    default: DCP refuses a key the checkpoint lacks. Returns (tensor, default) pairs."""
    have = {k[len("model."):] for k in metadata.state_dict_metadata if k.startswith("model.")}
    later = []
    for prefix, module in model.named_modules():
        for name, value in (getattr(module, "checkpoint_defaults", None) or {}).items():
            key = unwrapped_name(f"{prefix}.{name}" if prefix else name)
            if key in model_sd and key not in have:
                later.append((getattr(module, name), value))
                model_sd.pop(key)
    return later


def _check_shards_hold_their_items(dcp_dir: str, metadata) -> None:
    """Each shard file the metadata points into exists and is long enough for the items it holds:
    a truncated or empty shard failed inside DCP as a bare EOFError without naming the file."""
    need: Dict[str, int] = {}
    for info in getattr(metadata, "storage_data", {}).values():
        rel = getattr(info, "relative_path", None)
        if isinstance(rel, str):
            need[rel] = max(need.get(rel, 0), int(info.offset) + int(info.length))
    for rel, size in sorted(need.items()):
        path = os.path.join(dcp_dir, rel)
        if not is_regular_file(path):
            raise ValueError(f"{path}: missing; the checkpoint's .metadata points into it")
        have = os.path.getsize(path)
        if have < size:
            raise ValueError(f"{path}: {have} bytes, but the checkpoint's .metadata places items up to byte "
                             f"{size}; the shard is truncated or belongs to another checkpoint")


def load_trainer_state(ckpt_dir: str) -> Dict[str, Any]:
    path = os.path.join(ckpt_dir, STATE_FILE)
    if not is_regular_file(path, "the trainer state"):
        raise FileNotFoundError(f"{ckpt_dir} is not a tessera checkpoint: {STATE_FILE} is missing")
    # weights_only: opening a checkpoint someone else wrote must never run their code.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused to load: it holds objects other than tensors and plain data ({e})") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise ValueError(f"{path}: not a tessera trainer state (a mapping with a format_version)")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version!r} is newer than this tessera reads "
                         f"({FORMAT_VERSION}); upgrade tessera (pip install -U tessera) to resume it")
    if version < FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version} (model + optimizer without "
                         f"torch.distributed.checkpoint shards) is older than this tessera resumes "
                         f"({FORMAT_VERSION}); its weights still load with tessera.from_pretrained")
    _check_state_fields(state, path)
    return state


def _check_state_fields(state: Dict[str, Any], path: str) -> None:
    """The fields resume reads, by type and range: an edited state (its checksums rewritten) trained
    from step -5, or failed with a KeyError or IndexError deep in the resume."""
    def count(key: str, least: int) -> None:
        value = state.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{path}: {key} must be an integer >= {least}, got {value!r}")

    count("step", 0)
    count("skipped_steps", 0)
    count("world_size", 1)
    if not isinstance(state.get("scheduler"), dict):
        raise ValueError(f"{path}: scheduler must be the LR scheduler's state dict, got {type(state.get('scheduler')).__name__}")
    for key in ("rng", "data"):
        value = state.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            raise ValueError(f"{path}: {key} must be a non-empty list with one mapping per process, got {value!r:.80}")


def recipe_changes(ckpt_dir: str, recipe: Dict[str, Any], defaults: Optional[Dict[str, Any]] = None) -> List[str]:
    """The recipe's fields that differ from the checkpoint's recipe.json, as "key: old -> new"
    (nothing when it cannot be read: damage is the checksums' business). A key the file lacks (it
    was written before the key existed) reads as its default in `defaults` (config.recipe_defaults)."""
    def flat(d: Any, prefix: str = "") -> Dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix[:-1]: d}
        return {k: v for key, value in d.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    try:
        if not is_regular_file(os.path.join(ckpt_dir, "recipe.json")):
            return []
        with open(os.path.join(ckpt_dir, "recipe.json"), encoding="utf-8") as f:
            saved = flat(json.load(f))
    except (OSError, ValueError):
        return []
    now = flat(json.loads(json.dumps(recipe)))  # tuples as lists, as the file holds them
    for key, value in flat(json.loads(json.dumps(defaults or {}, default=str))).items():
        saved.setdefault(key, value)
        if key.endswith(("image_mean", "image_std")):  # empty statistics are the family's (pipeline_settings)
            saved[key], now[key] = saved[key] or value, now.get(key) or value
    return [f"{k}: {saved.get(k, '(unset)')!r} -> {now.get(k, '(unset)')!r}" for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)]


def run_identity(ckpt_dir: str) -> Dict[str, Optional[str]]:
    """The task (recipe.json) and model type (config.json) a checkpoint was written by; None for
    what it does not say or cannot be read (damage is the checksums' business)."""
    def field(name: str, key: str) -> Optional[str]:
        try:
            if not is_regular_file(os.path.join(ckpt_dir, name)):
                return None
            with open(os.path.join(ckpt_dir, name), encoding="utf-8") as f:
                value = json.load(f).get(key)
            return value if isinstance(value, str) else None
        except (OSError, ValueError, AttributeError):
            return None
    return {"task": field("recipe.json", "task"), "model_type": field("config.json", "model_type")}


def check_same_run(out_dir: str, ckpt_dir: str, task: str, model_type: Optional[str]) -> None:
    """Refuses a run folder whose checkpoint was written by another task or model type."""
    saved = run_identity(ckpt_dir)
    clash = (saved["task"] is not None and saved["task"] != task) or (
        saved["model_type"] is not None and model_type is not None and saved["model_type"] != model_type)
    if clash:
        def describe(t, m):
            return f"task {t!r}" + (f" (model type {m!r})" if m else "")
        raise ValueError(f"{out_dir} was written by {describe(saved['task'], saved['model_type'])} "
                         f"({os.path.basename(ckpt_dir)}); this recipe is {describe(task, model_type)}: use another "
                         f"--out, or pass --overwrite to start over there (its checkpoints are deleted)")


def _move_aside(ckpt_dir: str) -> str:
    head, name = os.path.split(ckpt_dir)
    target, n = os.path.join(head, f"damaged-{name}"), 1
    while os.path.exists(target):
        n += 1
        target = os.path.join(head, f"damaged-{name}.{n}")
    os.rename(ckpt_dir, target)
    _fsync_dir(head)
    return target


def resume_checkpoint(out_dir: str, log=print) -> Optional[str]:
    """The newest intact checkpoint of a run folder (None: there is none to resume). A damaged
    one is reported, moved aside to `damaged-step-*` and skipped; call on one rank and share the
    answer. Other errors (format, poisoned metadata) are raised: they are not damage."""
    from .safe_dcp import load_metadata_file

    found = list_checkpoints(out_dir)
    skipped = []
    for ckpt in reversed(found):
        try:
            check_files(ckpt)
            load_trainer_state(ckpt)
            load_metadata_file(os.path.join(ckpt, DCP_DIR, ".metadata"))
        except CheckpointDamaged as e:
            aside = _move_aside(ckpt)
            log(f"resume: skipping {ckpt}: {e}; moved it to {aside}")
            skipped.append(ckpt)
            continue
        if skipped:
            log(f"resume: falling back to {ckpt}, the newest intact checkpoint")
        return ckpt
    if skipped:
        raise CheckpointDamaged(out_dir, f"no intact checkpoint to resume: all {len(skipped)} are damaged (moved to "
                                         f"damaged-step-*); start without --resume or restore them")
    log(f"resume: {out_dir} holds no checkpoint yet; starting at step 0")  # a mistyped --out would start over
    return None


def check_eval_checkpoint(folder: str, task) -> None:
    """Before `tessera eval` loads `folder` with `task`: the files it reads match their checksums
    (HF-layout folders are checked by from_pretrained itself), and the checkpoint holds the model
    the task evaluates. Raises ValueError in one line."""
    saved = run_identity(folder)
    if not is_regular_file(os.path.join(folder, "config.json")):
        files = read_manifest(folder)
        if files is not None:
            verify_checkpoint(folder, only=[f for f in files if not f.startswith(DCP_DIR + "/") and f != STATE_FILE])
        if saved["task"] is not None and saved["task"] != task.recipe.task:
            raise ValueError(f"{folder} was written by task {saved['task']!r}; this recipe is task "
                             f"{task.recipe.task!r}: evaluate it with the recipe it was trained with")
        return
    expected = getattr(task, "model_class", None)
    if expected is None:
        return
    from ..models.pretrained import read_config
    from ..registry import model_class

    found = model_class(read_config(folder), folder)
    if not issubclass(found, expected):
        by = f", trained by task {saved['task']!r}" if saved["task"] else ""
        raise ValueError(f"{folder} holds a {getattr(found, 'model_type', found.__name__)!r} model ({found.__name__}"
                         f"{by}); recipe task {task.recipe.task!r} evaluates "
                         f"{getattr(expected, 'model_type', expected.__name__)!r} models ({expected.__name__}): "
                         f"pass a checkpoint of that model, or the recipe the checkpoint was trained with")


def latest_checkpoint(out_dir: str) -> Optional[str]:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str, what: str = "checkpoint", hint: str = "") -> str:
    """A checkpoint folder (config.json, or the trainer state of a task's plain module) as is, or
    a run folder's newest checkpoint."""
    if any(os.path.isfile(os.path.join(path, f)) for f in ("config.json", STATE_FILE)):
        return path
    newest = latest_checkpoint(path)
    if newest is None:
        raise FileNotFoundError(f"{what} {path}: neither a checkpoint folder (config.json or {STATE_FILE}) nor a "
                                f"run folder with checkpoints/" + (f" ({hint})" if hint else ""))
    return newest
