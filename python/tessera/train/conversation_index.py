"""Conversation data at LLaVA's size: an index instead of tokenized tensors.

LLaVA-Pretrain (558K samples) tokenized up front into padded int64 rows would be ~9 GB before
step 1. Instead, one streaming pass records where each sample lies in the file (byte offset and
length, from the C++ scanner `_C.data.json_records`), its token count after rendering and
truncation, and its number of images; every check of `prepare_sample` runs in that pass, and its
problems are reported together (counts per check, the first offenders by id) before training.
A sample is read and rendered again when its batch is loaded (microseconds), so the memory of
the data side is ~16 bytes per sample.

The index is cached beside the data (`<file>.tessera-index`, a safetensors file; in the user's
cache folder when the data's folder is read-only). Its metadata holds a fingerprint of
everything it depends on: the data file's and tokenizer's bytes, the template, the image token
count, `max_length` and the image folder. An index with another fingerprint is rebuilt, never
trusted. Image files are checked when the index is built; one removed afterwards is an error
naming it when its batch loads."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import mmap
import os
import sys
import zlib
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from .. import _C
from ..chat import load_template
from .conversation_data import EncodedSamples, SampleProblem, pad_rows, prepare_sample, sample_name
from .._warn import warn
from ..io import is_regular_file

INDEX_VERSION = 5  # 3: a CRC-32 per record; 4: unlearned text between answers tokenized as one string;
                   # 5: a leading gpt turn left out, as LLaVA does
SUFFIX = ".tessera-index"
SHOWN = 3  # offenders shown per check


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # stdout may carry a command's JSON


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()


class CheckReport:
    """Problems found in a pass over the data: counted per check, the first few kept by name."""

    def __init__(self, path: str):
        self.path, self.read, self.counts, self.first = path, 0, {}, {}

    def add(self, problem: SampleProblem) -> None:
        self.counts[problem.check] = self.counts.get(problem.check, 0) + 1
        shown = self.first.setdefault(problem.check, [])
        if len(shown) < SHOWN:
            shown.append(str(problem))

    @property
    def refused(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.read} samples read, {self.read - self.refused} pass the checks, "
                 f"{self.refused} refused"]
        for check, n in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {check}: {n} sample(s), first:")
            lines += [f"    {m}" for m in self.first[check]]
        return "\n".join(lines)

    def as_dict(self) -> Dict[str, Any]:
        return {"read": self.read, "refused": self.refused, "counts": self.counts, "first": self.first}


class ConversationIndex:
    """Where each usable sample of a conversation file lies, and what it costs.

    `offsets`/`nbytes` locate the record in the file; `modality_lengths` are tokens after
    rendering and truncation (image tokens included), negative for a sample without an image
    (LLaVA's convention, stored so that length grouping reads the file's pages as they are);
    `images` the images per sample; `rows` the sample's position in the file (its number in error
    messages); `crc` each record's CRC-32 (signed), checked when it is read again."""

    def __init__(self, path: str, tensors: Dict[str, torch.Tensor], report: Dict[str, Any],
                 columns: Optional[Tuple[int, Dict[str, Tuple[int, int]]]] = None,
                 identity: Optional[Tuple[int, ...]] = None, cache_file: Optional[str] = None):
        self.path, self.cache_file = path, cache_file
        # The data file as it was indexed (size, mtime, inode, device): a record is read only
        # while the file is still that one; a file rewritten mid-run would otherwise hand out other
        # samples at the indexed offsets, silently.
        self.identity = identity
        self.offsets, self.nbytes = tensors["offsets"], tensors["nbytes"]
        self.modality_lengths, self.images = tensors["modality_lengths"], tensors["images"]
        self.rows, self.crc = tensors["rows"], tensors["crc"]
        self.report = report
        self._fd: Optional[int] = None
        # (index file descriptor, {column: (byte offset, item size)}): a sample's place is read from
        # the cached index with pread, so its columns are never paged in whole.
        self._columns = columns

    def __len__(self) -> int:
        return int(self.offsets.numel())

    def tensors(self) -> Dict[str, torch.Tensor]:
        return {"offsets": self.offsets, "nbytes": self.nbytes, "modality_lengths": self.modality_lengths,
                "images": self.images, "rows": self.rows, "crc": self.crc}

    @property
    def lengths(self) -> torch.Tensor:
        """Tokens per sample (a new tensor)."""
        return self.modality_lengths.abs()

    def record(self, i: int) -> Dict[str, Any]:
        """Sample i, parsed from its bytes (read with pread: no mapping of the whole file to count
        against the process's memory)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        if self.identity is not None and file_identity(os.fstat(self._fd)) != self.identity:
            raise ValueError(f"{self.path}: the file changed after it was indexed; start the run again to "
                             "rebuild the index")
        n = self.entry("nbytes", i)
        raw = os.pread(self._fd, n, self.entry("offsets", i))
        # The identity check above misses a same-size rewrite within the file system's mtime
        # resolution; the record's own checksum does not.
        if len(raw) != n or zlib.crc32(raw) != self.entry("crc", i) & 0xFFFFFFFF:
            raise ValueError(f"{self.path}: sample {self.entry('rows', i)} is not what was indexed (its checksum "
                             f"differs){self._discard()}")
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{self.path}: sample {self.entry('rows', i)} no longer parses ({str(e)[:120]})"
                             f"{self._discard()}") from None

    def _discard(self) -> str:
        """The data or its cached index changed under it: the index goes, so that the next start
        indexes the file anew (a fingerprint that still matches would bring it back)."""
        try:
            if self.cache_file and os.path.isfile(self.cache_file):
                os.remove(self.cache_file)
        except OSError as e:
            return f"; remove the data index {self.cache_file} ({e.strerror}) and start the run again"
        return "; the data index was removed: start the run again to index the file anew"

    def entry(self, column: str, i: int) -> int:
        """Element i of a column (offsets, nbytes, rows), read from the index file when cached."""
        if self._columns is None:
            return int(getattr(self, column)[i])
        fd, places = self._columns
        start, size = places[column]
        return int.from_bytes(os.pread(fd, size, start + size * i), "little", signed=True)

    def __getstate__(self):  # a worker process opens the files itself
        return {**self.__dict__, "_fd": None, "_columns": None}

    def __del__(self):
        for fd in (getattr(self, "_fd", None), (getattr(self, "_columns", None) or (None,))[0]):
            if fd is not None:
                os.close(fd)


def file_identity(st: os.stat_result) -> Tuple[int, ...]:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


_DTYPES = {"offsets": torch.int64, "nbytes": torch.int32, "rows": torch.int32, "modality_lengths": torch.int32,
           "images": torch.int16, "crc": torch.int32}


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _report_fits(report, kept: int) -> bool:
    """A cached report in the form `CheckReport.as_dict` writes, counting the index's rows."""
    if not isinstance(report, dict):
        return False
    counts, first = report.get("counts"), report.get("first")
    return (_count(report.get("read")) and _count(report.get("refused")) and isinstance(counts, dict)
            and all(isinstance(k, str) and _count(v) for k, v in counts.items())
            and sum(counts.values()) == report["refused"] and report["read"] - report["refused"] == kept
            and isinstance(first, dict) and all(isinstance(k, str) and isinstance(v, list)
                                                and all(isinstance(m, str) for m in v) for k, v in first.items()))


def _columns_fit(tensors: Dict[str, torch.Tensor], report, data_size: int, settings: Dict[str, Any]) -> bool:
    """A cached index agrees with itself, its report, its settings and its data file: the columns
    as built here, pointing inside the file, lengths within max_length holding their images'
    tokens, one row per sample the report says passed (the fingerprint is a hash of public inputs:
    anyone can write a file that carries it)."""
    if any(n not in tensors or tensors[n].dim() != 1 or tensors[n].dtype != t for n, t in _DTYPES.items()):
        return False
    if len({int(tensors[n].numel()) for n in _DTYPES}) != 1 or not _report_fits(report, int(tensors["rows"].numel())):
        return False
    offsets, nbytes, rows = tensors["offsets"].long(), tensors["nbytes"].long(), tensors["rows"].long()
    inside = bool(((offsets >= 0) & (nbytes >= 1) & (offsets + nbytes <= data_size)).all())
    # Records in file order, none overlapping the next (an index built here is so).
    ordered = bool((offsets[1:] >= offsets[:-1] + nbytes[:-1]).all()) and bool((rows[1:] > rows[:-1]).all())
    lengths, images = tensors["modality_lengths"].long(), tensors["images"].long()
    sized = bool(((lengths.abs() >= 1) & (lengths.abs() <= settings["max_length"]) & (images >= 0)
                  & ((images == 0) == (lengths < 0)) & (images * settings["image_tokens"] <= lengths.abs())).all())
    return inside and ordered and sized and bool(((rows >= 0) & (rows < report["read"])).all())


def fingerprint(path: str, tokenizer, template_name: str, settings: Dict[str, Any]) -> str:
    template = dataclasses.asdict(load_template(template_name))
    parts = {"version": INDEX_VERSION, "data": file_digest(path), "tokenizer": tokenizer.digest,
             "special_tokens": tokenizer.special_tokens, "template": template, **settings}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_path(path: str, cache_dir: str = "") -> str:
    """Beside the data, or under `cache_dir` (default: the user's cache) when its folder is read-only."""
    if not cache_dir and os.access(os.path.dirname(os.path.abspath(path)) or ".", os.W_OK):
        return path + SUFFIX
    folder = cache_dir or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                       "tessera", "index")
    os.makedirs(folder, exist_ok=True)
    key = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    return os.path.join(folder, f"{os.path.basename(path)}-{key}{SUFFIX}")


ITEM_SIZES = {"I64": 8, "I32": 4, "I16": 2}


def _load_cached(where: str, fp: str, data_size: int, settings: Dict[str, Any]):
    """(tensors, report, columns) of the cached index when its fingerprint is `fp`, else None.
    The file is validated by the safetensors reader; the descriptor kept for `columns` is checked
    to hold the same fingerprint (the file may have been replaced in between)."""
    if not os.path.isfile(where):
        return None
    try:
        tensors, meta = _C.core.load_safetensors(where)
    except (ValueError, RuntimeError) as e:
        warn(f"{where}: unreadable data index ({e}); rebuilding it")
        return None
    if meta.get("fingerprint") != fp:
        return None  # another file version, tokenizer or setting: rebuilt, never trusted
    try:
        report = json.loads(meta.get("report", "{}"))
    except ValueError:
        report = None
    if not _columns_fit(tensors, report, data_size, settings):
        warn(f"{where}: the data index does not fit its data file, settings or report; rebuilding it")
        return None
    fd = os.open(where, os.O_RDONLY)
    try:
        size = int.from_bytes(os.pread(fd, 8, 0), "little")
        header = json.loads(os.pread(fd, size, 8))
        if header.get("__metadata__", {}).get("fingerprint") != fp:
            raise ValueError("replaced while being read")
        places = {name: (8 + size + header[name]["data_offsets"][0], ITEM_SIZES[header[name]["dtype"]])
                  for name in ("offsets", "nbytes", "rows", "crc")}
    except (ValueError, KeyError, TypeError):
        os.close(fd)
        return None
    return dict(tensors), report, (fd, places)  # memory-mapped: paged as used


def build_index(path: str, tokenizer, template_name: str, image_token_id: int, image_tokens: int, max_length: int,
                image_folder: str = "", check_files: bool = True, limit: int = 0) -> Tuple[Dict[str, torch.Tensor],
                                                                                           CheckReport]:
    """One streaming pass: every record located, parsed, rendered and checked."""
    fmt, offsets, lengths = _C.data.json_records(path)
    if limit:
        offsets, lengths = offsets[:limit], lengths[:limit]
    if not len(offsets):
        raise ValueError(f"{path}: no conversation samples (an empty list)")
    template = load_template(template_name)
    folder = image_folder or os.path.dirname(os.path.abspath(path))
    report = CheckReport(path)
    keep, tokens, images, crcs = [], [], [], []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for i, (start, n) in enumerate(zip(offsets.tolist(), lengths.tolist())):
            report.read += 1
            where = f"{path}: sample {i}"
            try:
                try:
                    sample = json.loads(data[start:start + n])
                except (ValueError, RecursionError) as e:  # syntax, encoding, a huge number, deep nesting
                    raise SampleProblem("JSON", f"{where} (byte {start}): not valid JSON ({str(e)[:120]})") from None
                if isinstance(sample, dict):
                    where = sample_name(path, i, sample)
                ids, _, paths = prepare_sample(sample, where, template, tokenizer, image_token_id, image_tokens,
                                               max_length, folder, check_files)
            except SampleProblem as problem:
                report.add(problem)
                continue
            keep.append(i)
            crcs.append(zlib.crc32(data[start:start + n]))
            tokens.append(len(ids))
            images.append(len(paths))
    rows = torch.tensor(keep, dtype=torch.long)
    tensors = {"offsets": offsets[rows], "nbytes": lengths[rows].int(), "rows": rows.int(),
               "modality_lengths": torch.tensor([t if n else -t for t, n in zip(tokens, images)], dtype=torch.int32),
               "images": torch.tensor(images, dtype=torch.int16),
               "crc": torch.tensor(crcs, dtype=torch.int64).to(torch.int32)}  # wraps: read back masked
    return tensors, report


def load_index(path: str, tokenizer, template_name: str, image_token_id: int, image_tokens: int, max_length: int,
               image_folder: str = "", check_files: bool = True, limit: int = 0, skip_invalid: bool = False,
               cache_dir: str = "", log=log_to_stderr) -> ConversationIndex:
    """The cached index when its fingerprint matches, else a new one (written atomically). Problems
    stop the run with the report unless `skip_invalid`, which leaves those samples out."""
    if not is_regular_file(path):
        raise FileNotFoundError(f"conversation data not found: {path}")
    folder = os.path.abspath(image_folder or os.path.dirname(os.path.abspath(path)))
    settings = {"image_token_id": image_token_id, "image_tokens": image_tokens, "max_length": max_length,
                "image_folder": folder, "check_files": check_files, "limit": limit}
    identity = file_identity(os.stat(path))
    fp = fingerprint(path, tokenizer, template_name, settings)
    if file_identity(os.stat(path)) != identity:
        raise ValueError(f"{path}: the file changed while it was being indexed; start again once it is written")
    where = cache_path(path, cache_dir)
    cached, columns = _load_cached(where, fp, identity[0], settings), None
    if cached is not None and cached[1].get("counts", {}).get("image file"):
        # Images are not part of the fingerprint: refusals for missing or unreadable image files
        # may be stale (the files fetched since, as the report asks), so such an index is rebuilt.
        os.close(cached[2][0])
        cached = None
    if cached is None:
        log(f"indexing {path} (once; cached in {where})")
        tensors, report = build_index(path, tokenizer, template_name, image_token_id, image_tokens, max_length,
                                      image_folder, check_files, limit)
        summary = report.as_dict()
        try:
            _C.core.save_safetensors(where, tensors, {"fingerprint": fp, "report": json.dumps(summary)})
            columns = (_load_cached(where, fp, identity[0], settings) or (None, None, None))[2]
        except (OSError, RuntimeError, ValueError) as e:
            warn(f"{where}: could not cache the data index ({e}); it is rebuilt next time")
        text = str(report)
    else:
        tensors, summary, columns = cached
        text = str(_report_from(path, summary))
    if summary["refused"] and not skip_invalid:
        raise ValueError(f"{text}\n(fix these samples, or set data.skip_invalid: true to train without them)")
    if summary["refused"]:
        warn(text + "\n(data.skip_invalid: these samples are left out)")
    if not len(tensors["offsets"]):
        raise ValueError(f"{text}\nno sample passes the checks")
    return ConversationIndex(path, tensors, summary, columns, identity, where)


def _report_from(path: str, summary: Dict[str, Any]) -> CheckReport:
    report = CheckReport(path)
    report.read, report.counts, report.first = summary["read"], summary["counts"], summary["first"]
    return report


class ConversationSet:
    """The training samples of a conversation file, rendered when loaded: what `encode_samples`
    gives for a list, for any number of samples."""

    def __init__(self, index: ConversationIndex, tokenizer, template_name: str, image_token_id: int,
                 image_tokens: int, max_length: int, image_folder: str = ""):
        self.index, self.tokenizer = index, tokenizer
        self.template = load_template(template_name)
        self.image_token_id, self.image_tokens, self.max_length = image_token_id, image_tokens, max_length
        self.folder = image_folder or os.path.dirname(os.path.abspath(index.path))

    def __len__(self) -> int:
        return len(self.index)

    def encoded(self, rows: Sequence[int], width: Optional[int] = None) -> EncodedSamples:
        """Samples `rows`, padded to `width` (default: their longest). Files were checked when the
        index was built; here only a record that changed since is refused."""
        samples, ids, labels, images = [], [], [], []
        for r in rows:
            sample = self.index.record(r)
            where = sample_name(self.index.path, self.index.entry("rows", r), sample)
            i, lab, paths = prepare_sample(sample, where, self.template, self.tokenizer, self.image_token_id,
                                           self.image_tokens, self.max_length, self.folder, check_files=False)
            samples.append(sample)
            ids.append(i)
            labels.append(lab)
            images.append(paths)
        width = width or max(len(i) for i in ids)
        return EncodedSamples(*pad_rows(ids, labels, width), images, samples, self.template)
