"""Reading `torch.distributed.checkpoint` folders without running code found in them.

torch's own reader unpickles `.metadata` with no restriction, and its default load planner
unpickles every non-tensor item of a shard with no restriction either: a run folder someone else
wrote could execute anything on `--resume`. Here `.metadata` goes through an unpickler that admits
only the globals DCP's own metadata needs (the list was taken by recording the globals of real
DDP and FSDP2 checkpoints), and byte items through `torch.load(weights_only=True)` (tensors are
not pickled at all). `tessera.train.checkpoint.load_checkpoint` is the only caller of `dcp.load`
and passes both.

DCP's loader also swallows any exception of `read_metadata` and then fails with
"AssertionError: metadata is None"; `safe_reader` therefore reads the metadata before `dcp.load`,
so a missing or refused `.metadata` is reported as what it is.
"""
from __future__ import annotations

import io
from ..io import is_regular_file
import os
import pickle
from typing import Any, Tuple

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

METADATA_FILE = ".metadata"

# (module, name) -> what a DCP `.metadata` may construct. Every entry only builds plain data:
# dataclasses of DCP's metadata, its storage info, an enum, torch.Size, a path, a layout by name.
_ALLOWED_GLOBALS = frozenset({
    ("torch.distributed.checkpoint.metadata", "Metadata"),
    ("torch.distributed.checkpoint.metadata", "MetadataIndex"),
    ("torch.distributed.checkpoint.metadata", "StorageMeta"),
    ("torch.distributed.checkpoint.metadata", "TensorStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "BytesStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "ChunkStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "TensorProperties"),
    ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),  # torch.layout pickles as _get_layout("torch.strided")
    ("torch", "Size"),
    ("pathlib", "PosixPath"),                # StorageMeta.checkpoint_id
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
})


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)  # dtypes pickle as the global torch.<name>
        if (module, name) not in _ALLOWED_GLOBALS:
            raise ValueError(f"{self.path}: refused to load: it asks to import {module}.{name}, which is not part "
                             f"of torch.distributed.checkpoint's metadata (a DCP .metadata holds only "
                             f"plain data; this file was written by something else or altered)")
        return super().find_class(module, name)


def _check_paths(path: str, metadata: Metadata) -> None:
    """Every shard a metadata points at must be a file of the checkpoint folder itself."""
    for info in (metadata.storage_data or {}).values():
        rel = getattr(info, "relative_path", None)
        if not isinstance(rel, str) or not rel or os.sep in rel or "/" in rel or rel in (".", ".."):
            raise ValueError(f"{path}: refused to load: it points at the file {rel!r} outside the checkpoint folder")


def load_metadata_file(path: str) -> Metadata:
    """Unpickles a DCP `.metadata` with the restricted unpickler; ValueError names the file."""
    if not is_regular_file(path):
        raise FileNotFoundError(f"{path} is missing: this is not a complete torch.distributed.checkpoint folder")
    with open(path, "rb") as f:
        data = f.read()
    try:
        metadata = _MetadataUnpickler(io.BytesIO(data), path).load()
    except ValueError:
        raise
    except Exception as e:  # truncated or garbled pickle
        raise ValueError(f"{path}: cannot read the checkpoint's metadata ({type(e).__name__}: {e}); the file is "
                         f"damaged") from None
    if not isinstance(metadata, Metadata):
        raise ValueError(f"{path}: holds a {type(metadata).__name__}, not torch.distributed.checkpoint Metadata")
    _check_paths(path, metadata)
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader whose metadata comes through `load_metadata_file` (read once, cached)."""

    def __init__(self, path: str, *args, **kwargs):
        super().__init__(path, *args, **kwargs)
        self._metadata_cache: dict = {}

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        file = os.fspath(self._get_metadata_path(rank))
        if file not in self._metadata_cache:
            self._metadata_cache[file] = load_metadata_file(file)
        metadata = self._metadata_cache[file]
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner that reads a shard's byte items (optimizer hyperparameters and other
    non-tensor values) with `weights_only=True`."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(f"refused to load the item {read_item.dest_index.fqn!r} of a checkpoint shard: it holds "
                             f"objects other than tensors and plain data ({e})") from None
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def safe_reader(dcp_dir: str) -> Tuple[SafeFileSystemReader, Metadata]:
    """A reader for `dcp_dir` whose metadata has been read (and checked) already."""
    reader = SafeFileSystemReader(dcp_dir)
    return reader, reader.read_metadata()
