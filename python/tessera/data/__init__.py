"""tessera.data: image decoding, CLIP transforms, datasets and a C++-threaded DataLoader.

    >>> from tessera.data import DataLoader, ImageFolder, clip_transform
    >>> loader = DataLoader(ImageFolder("/data/train"), batch_size=64,
    ...                     transform=clip_transform(224, train=True), seed=0)
    >>> batch = next(iter(loader))    # {"pixel_values": [64, 3, 224, 224], "labels", "indices"}
"""
from .datasets import FASHION_MNIST_ROOT, CaptionDataset, FashionMNIST, ImageFolder
from .loader import DataLoader
from .masking import BlockMaskGenerator
from .transforms import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageTransform,
    Interpolation,
    TransformOptions,
    clip_transform,
    decode_image,
    image_decode_available,
    read_image,
)

__all__ = [
    "BlockMaskGenerator", "DataLoader", "FashionMNIST", "ImageFolder", "CaptionDataset", "FASHION_MNIST_ROOT",
    "TransformOptions", "ImageTransform", "Interpolation", "clip_transform", "decode_image",
    "read_image", "image_decode_available", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD",
]
