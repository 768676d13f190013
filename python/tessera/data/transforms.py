"""CLIP image transforms in C++, after open_clip's ``image_transform`` and torchvision v2.

The evaluation pipeline is ``Resize(S, BICUBIC) -> CenterCrop(S) -> ToTensor -> Normalize``
and the training one ``RandomResizedCrop(S, scale, ratio, BICUBIC) -> RandomHorizontalFlip ->
ToTensor -> Normalize``, run on ATen's antialiased kernels (torchvision's tensor path) and
drawing their random numbers exactly as torchvision does, so the same seed gives the same crop.

    >>> from tessera.data import clip_transform, ImageTransform, read_image
    >>> t = ImageTransform(clip_transform(224, train=True))
    >>> x = t(read_image("cat.jpg"), torch.Generator().manual_seed(0))   # float [3, 224, 224]
"""
from __future__ import annotations

import copy
import copyreg
import errno
import os
from typing import Optional, Sequence, Tuple

import torch

from tessera import _C
from tessera.io import is_regular_file

__all__ = [
    "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "Interpolation", "TransformOptions", "ImageTransform",
    "clip_transform", "decode_image", "read_image", "image_decode_available",
]

_data = _C.data

#: OpenAI CLIP's normalisation constants (open_clip's OPENAI_DATASET_MEAN / _STD).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Interpolation = _data.Interpolation
TransformOptions = _data.TransformOptions


def clip_transform(
    image_size: int = 224,
    train: bool = False,
    *,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    scale: Tuple[float, float] = (0.08, 1.0),
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    hflip_prob: float = 0.5,
    resize_size: int = 0,
    interpolation: str = "bicubic",
    expand_grayscale: bool = True,
    resize_mode: str = "shortest",
) -> TransformOptions:
    """Options of CLIP's evaluation (``train=False``) or training pipeline.

    ``resize_size`` (evaluation) resizes the shorter side to it before the ``image_size``
    center crop (0: ``image_size``, CLIP's choice). ``scale``/``ratio``/``hflip_prob``
    configure training; open_clip trains with ``scale=(0.9, 1.0)`` and ``hflip_prob=0``.
    ``resize_mode="squash"`` (evaluation) resizes the whole image to the square, as BLIP-2's
    processor does, instead of the shorter side and a center crop; ``"shortest_floor"`` crops
    as transformers' CLIPImageProcessor does (an odd margin's offset rounded down, where
    torchvision rounds it half to even); ``"pad"`` centers the image on a square of the mean
    colour first (LLaVA-1.5).
    """
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
    return TransformOptions(
        image_size=image_size, resize_size=resize_size, mean=list(mean), std=list(std), train=train,
        scale=tuple(scale), ratio=tuple(ratio), hflip_prob=hflip_prob,
        expand_grayscale=expand_grayscale, interpolation=getattr(Interpolation, interpolation),
        resize_mode=resize_mode,
    )


def _as_image_tensor(image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image
    try:  # a PIL image, converted as torchvision's loader converts it
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL is optional
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        import numpy as np

        return torch.from_numpy(np.array(image.convert("RGB")))
    raise TypeError(f"expected a uint8 [H, W, C] tensor or a PIL image, got {type(image).__name__}")


class ImageTransform:
    """A callable pipeline: uint8 ``[H, W, C]`` tensor (or PIL image) -> float ``[3, S, S]``.

    ``generator`` supplies every random draw (``torch.default_generator`` when omitted, like
    torchvision); a seeded ``torch.Generator`` makes the output reproducible.
    """

    def __init__(self, options: Optional[TransformOptions] = None):
        # A copy: the C++ pipeline is built from these values, and pickling sends them.
        self.options = copy.copy(options) if options is not None else clip_transform()
        self._cpp = _data.ImageTransform(self.options)

    def __call__(self, image, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        gen = generator if generator is not None else torch.default_generator
        return self._cpp(_as_image_tensor(image), gen)

    def __repr__(self) -> str:
        return f"ImageTransform({self.options!r})"

    def __getstate__(self) -> dict:  # pickles without the C++ pipeline (DataLoader workers in spawned processes)
        return {k: v for k, v in self.__dict__.items() if k != "_cpp"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cpp = _data.ImageTransform(self.options)


_OPTION_FIELDS = ("image_size", "resize_size", "mean", "std", "train", "scale", "ratio", "hflip_prob",
                  "expand_grayscale", "resize_mode")


def _options(fields: dict, interpolation: str) -> TransformOptions:
    return TransformOptions(**fields, interpolation=getattr(Interpolation, interpolation))


def _reduce_options(o: TransformOptions):
    return _options, ({k: getattr(o, k) for k in _OPTION_FIELDS}, o.interpolation.name)


copyreg.pickle(TransformOptions, _reduce_options)


def decode_image(data: bytes, source: str = "<bytes>", max_pixels: int = 1 << 26) -> torch.Tensor:
    """JPEG/PNG bytes -> uint8 ``[H, W, 3]`` RGB, as ``PIL.Image.open(f).convert("RGB")``.

    The format is told by the magic bytes; an unknown format, an image over ``max_pixels``
    or corrupt/truncated data raises ``ValueError`` naming ``source``.
    """
    return _data.decode_image(data, source, max_pixels)


def read_image(path: str | os.PathLike, max_pixels: int = 1 << 26) -> torch.Tensor:
    """Reads and decodes an image file (see :func:`decode_image`)."""
    path = os.fspath(path)
    if not is_regular_file(path):
        raise FileNotFoundError(errno.ENOENT, "image file not found", path)
    return _data.read_image(os.fsencode(path), max_pixels)  # bytes: a name os gave with surrogates


def image_decode_available() -> bool:
    """False when tessera was built without OpenCV (IDX datasets and transforms still work)."""
    return _data.image_decode_available()
