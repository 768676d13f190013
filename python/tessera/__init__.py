"""tessera: multimodal foundation models in C++/LibTorch with a PyTorch-native Python surface.

    import tessera
    model = tessera.create_model("ViT-B-32")            # or tessera.from_pretrained(dir)
    ids = tessera.tokenize(["a photo of a cat"])
    feats = model.get_text_features(ids)
"""
from __future__ import annotations

import os as _os

import torch as _torch  # loads LibTorch before the extension

from . import _C  # noqa: E402
from .cpp_module import CppModule
from .factory import (create_model, create_model_and_transforms, create_model_from_pretrained, from_pretrained,
                      get_model_config, get_tokenizer, list_models, register_model_type)
from .registry import add_model_config
from .models import MODEL_CLASSES as _MODEL_CLASSES
from .text import BertTokenizer, ClipTokenizer, SentencePieceTokenizer, tokenize
from . import chat, lora  # noqa: E402  (conversation templates, LoRA adapters)

globals().update(_MODEL_CLASSES)  # every registered class, by name: a family adds no line here

__version__ = "0.1.0"

_HERE = _os.path.dirname(_os.path.abspath(__file__))


def include_paths() -> list:
    """Header folders for building a C++ extension against tessera (installed or in-tree)."""
    installed = _os.path.join(_HERE, "include")
    if _os.path.isdir(installed):
        return [installed]
    csrc = _os.path.normpath(_os.path.join(_HERE, "..", "..", "csrc"))
    return [csrc, _os.path.join(csrc, "python")]


def library_dir() -> str:
    """Folder holding libtessera.so."""
    return _os.path.join(_HERE, "lib")


_SUBPACKAGES = ("data", "eval", "losses", "ops", "train", "viz", "cli", "quantization", "plan")


def __getattr__(name: str):
    # Subpackages load on first use, as torch does: `import tessera; tessera.losses.ClipLoss`.
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tessera' has no attribute {name!r}")


#: Add to CMAKE_PREFIX_PATH so `find_package(tessera)` finds the package (lib/cmake/tessera).
cmake_prefix_path = _HERE

__all__ = [
    "CppModule", "add_model_config", "create_model", "create_model_and_transforms", "create_model_from_pretrained",
    "from_pretrained", "get_model_config", "get_tokenizer", "list_models", "register_model_type",
    *_MODEL_CLASSES, "BertTokenizer", "ClipTokenizer", "SentencePieceTokenizer", "tokenize",
    "include_paths", "library_dir", "cmake_prefix_path",
]
