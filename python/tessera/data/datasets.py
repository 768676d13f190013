"""Datasets read in C++: Fashion-MNIST (IDX), an image folder, image-caption lists.

Indexing gives what torchvision's datasets give, with the image as a uint8 ``[H, W, C]``
tensor: ``(image, label)`` for class datasets, ``(image, caption)`` for caption lists. Their
real use is as the source of :class:`tessera.data.DataLoader`, which decodes in C++ threads.

    >>> from tessera.data import FashionMNIST
    >>> ds = FashionMNIST(split="test")
    >>> len(ds), ds.classes[9]
    (10000, 'Ankle boot')
"""
from __future__ import annotations

import errno
import os
from typing import List, Sequence, Tuple

import torch

from tessera import _C
from tessera.io import is_regular_file

__all__ = ["FashionMNIST", "ImageFolder", "CaptionDataset", "FASHION_MNIST_ROOT"]

_data = _C.data

#: Where Debian's fashion-mnist package installs the IDX files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def _require(path: str, is_dir: bool, what: str) -> str:
    path = os.fspath(path)
    if not (os.path.isdir(path) if is_dir else is_regular_file(path)):
        raise FileNotFoundError(errno.ENOENT, f"{what} not found", path)
    return path


class _Dataset:
    """Length, indexing and class names over a C++ ``tessera._C.data.Dataset``. A dataset pickles
    as its attributes without the C++ index, which `_open` rebuilds where it is unpickled (a
    subclass's own attributes travel too), so torch.utils.data.DataLoader workers can be spawned
    processes (macOS's and Windows' default)."""

    _cpp: "_data.Dataset"

    def _open(self) -> "_data.Dataset":
        raise NotImplementedError

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_cpp"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cpp = self._open()

    def __len__(self) -> int:
        return len(self._cpp)

    def _index(self, index: int) -> int:
        n = len(self._cpp)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        return index

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, object]:
        image, label, caption = self._cpp.get(self._index(index))
        return (image, caption) if self._cpp.has_captions else (image, label)

    @property
    def classes(self) -> List[str]:
        return list(self._cpp.classes)

    def source(self, index: int) -> str:
        """The file (or ``file#index``) sample ``index`` comes from."""
        return self._cpp.source(self._index(index))


class FashionMNIST(_Dataset):
    """Fashion-MNIST's 60,000 training or 10,000 test images (28 x 28, grayscale).

    ``root`` holds ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (or torchvision's
    ``root/FashionMNIST/raw``). ``data`` is uint8 ``[N, 28, 28]``, ``targets`` int64 ``[N]``.
    Malformed files raise ``ValueError`` naming the file.
    """

    def __init__(self, root: str | os.PathLike = FASHION_MNIST_ROOT, split: str = "train"):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.root = _require(root, True, "Fashion-MNIST folder")
        self.split = split
        self._cpp = self._open()

    def _open(self):
        return _data.FashionMNIST(self.root, self.split)

    @property
    def data(self) -> torch.Tensor:
        return self._cpp.images

    @property
    def targets(self) -> torch.Tensor:
        return self._cpp.labels


class ImageFolder(_Dataset):
    """``root/<class>/**/*.{jpg,jpeg,png,webp}``, classes and samples ordered as torchvision's
    ``ImageFolder`` orders them (so labels and indices agree with it)."""

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = (".jpg", ".jpeg", ".png", ".webp")):
        self.root = _require(root, True, "image folder")
        if isinstance(extensions, str):  # one extension, not its characters (".png" matched any name ending in "g")
            extensions = [extensions]
        self.extensions = [e.lower() for e in extensions]
        self._cpp = self._open()

    def _open(self):
        return _data.ImageFolder(os.fsencode(self.root), self.extensions)  # bytes: a name os gave with surrogates

    @property
    def samples(self) -> List[Tuple[str, int]]:
        return list(self._cpp.samples)

    @property
    def targets(self) -> List[int]:
        return [label for _, label in self._cpp.samples]

    @property
    def class_to_idx(self) -> dict:
        return {c: i for i, c in enumerate(self._cpp.classes)}


class CaptionDataset(_Dataset):
    """Image-caption pairs from a ``.jsonl`` (``{"image": ..., "caption": ...}`` per line) or
    ``.csv``/``.tsv`` file (header naming the columns); relative image paths are resolved
    against the file's folder."""

    def __init__(self, path: str | os.PathLike, image_key: str = "image", caption_key: str = "caption"):
        self.path = _require(path, False, "caption file")
        self.image_key, self.caption_key = image_key, caption_key
        self._cpp = self._open()

    def _open(self):
        return _data.CaptionDataset(os.fsencode(self.path), self.image_key, self.caption_key)

    @property
    def entries(self) -> List[Tuple[str, str]]:
        """(resolved image path, caption) of every pair."""
        return list(self._cpp.entries)
