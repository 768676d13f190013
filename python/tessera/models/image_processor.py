"""A Hugging Face folder's preprocessor_config.json (transformers' image processors: CLIP's,
BLIP's, BEiT's, ViT's), read as the data config (timm's names: mean, std, interpolation,
crop_mode) that tessera's image pipeline takes. LLaVA reads its tower's processor this way
(`CLIPImageProcessor.from_pretrained(vision_tower)`), and transformers' users normalise with it:
a folder whose statistics differ from its family's (SigLIP's 0.5, a tower trained on other data)
must not be fed another family's. transformers 5's processors save theirs inside
processor_config.json; a key the file leaves out takes its processor class's default. A resampling
filter the pipeline lacks (Lanczos) is said and bicubic used; a value that cannot be read is refused
by key."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional

FILE = "preprocessor_config.json"
#: transformers 5's processors (CLIPProcessor, LlavaProcessor) save their image processor's
#: settings inside this one, under "image_processor".
PROCESSOR_FILE = "processor_config.json"
#: PIL's resampling codes, which transformers' processors store.
RESAMPLE = {2: "bilinear", 3: "bicubic"}
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 4: "box", 5: "hamming"}
_OPENAI = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
_HALF = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
#: What each processor class takes for a key its file leaves out (transformers 5.17's defaults).
CLASS_DEFAULTS = {
    "CLIPImageProcessor": {**_OPENAI, "resample": 3, "size": {"shortest_edge": 224}, "do_center_crop": True},
    "BlipImageProcessor": {**_OPENAI, "resample": 3, "size": {"height": 384, "width": 384}},
    "ViTImageProcessor": {**_HALF, "resample": 2, "size": {"height": 224, "width": 224}},
    "BeitImageProcessor": {**_HALF, "resample": 3, "size": {"height": 224, "width": 224}, "do_center_crop": False},
    "SiglipImageProcessor": {**_HALF, "resample": 3, "size": {"height": 224, "width": 224}},
}


def _triple(value: Any, path: str, key: str) -> tuple:
    values = [value] * 3 if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if (not isinstance(values, (list, tuple)) or len(values) != 3
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values)):
        raise ValueError(f"{path}: {key} must be three finite numbers (or one), got {value!r}")
    return tuple(float(v) for v in values)


def read_image_processor(folder: str) -> Optional[Dict[str, Any]]:
    """The folder's image processor as a data config ({mean, std, interpolation, crop_mode}), or
    None when it has no preprocessor_config.json. `crop_mode` is "squash" for a processor that
    resizes to a height and width without a crop (BLIP's), "center" otherwise."""
    from .._warn import warn
    from ..io import is_regular_file, read_json

    path = os.path.join(folder, FILE)
    if is_regular_file(path, "the image processor's settings"):
        cfg = read_json(path, "an image processor's settings")
    elif is_regular_file(os.path.join(folder, PROCESSOR_FILE), "the processor's settings"):
        path = os.path.join(folder, PROCESSOR_FILE)
        cfg = read_json(path, "a processor's settings")
        cfg = cfg.get("image_processor") if isinstance(cfg, dict) else cfg
        if cfg is None:  # a processor without images
            return None
    else:
        return None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: an object of image processor settings was expected, got {type(cfg).__name__}")
    kind = str(cfg.get("image_processor_type") or "").removesuffix("Fast")
    cfg = {**CLASS_DEFAULTS.get(kind, {}), **cfg}
    if cfg.get("do_rescale", True) and not math.isclose(float(cfg.get("rescale_factor", 1 / 255)), 1 / 255,
                                                         rel_tol=1e-6):
        raise ValueError(f"{path}: rescale_factor {cfg.get('rescale_factor')!r}: tessera's pipeline scales pixels "
                         "to [0, 1] (1/255)")
    if cfg.get("do_rescale") is False:
        raise ValueError(f"{path}: do_rescale false: tessera's pipeline scales pixels to [0, 1]")
    resample = cfg.get("resample", 3)
    if resample not in RESAMPLE:
        warn(f"{path}: resample {resample!r} ({RESAMPLE_NAMES.get(resample, 'unknown')}): tessera's pipeline resizes "
             "bicubic (3) or bilinear (2); it resizes bicubic")
        resample = 3
    if cfg.get("do_normalize", True):
        mean = _triple(cfg.get("image_mean"), path, "image_mean")
        std = _triple(cfg.get("image_std"), path, "image_std")
        if min(std) <= 0:
            raise ValueError(f"{path}: image_std must be > 0, got {list(std)}")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    size = cfg.get("size")
    squash = isinstance(size, dict) and "height" in size and not cfg.get("do_center_crop", False)
    return {"mean": mean, "std": std, "interpolation": RESAMPLE[resample], "crop_mode": "squash" if squash else "center"}


def image_processor_settings(size: int, mean, std, resize_mode: str = "shortest",
                             interpolation: str = "bicubic") -> Dict[str, Any]:
    """preprocessor_config.json settings under which transformers' image processor prepares pixels
    as tessera's evaluation pipeline (`clip_transform(size, mean=, std=, resize_mode=,
    interpolation=)`) does; `read_image_processor` reads them back. "shortest" and
    "shortest_floor" are CLIPImageProcessor's resize of the short side and center crop
    (transformers rounds an odd margin's offset down, as "shortest_floor" does; "shortest" rounds
    it half to even, one pixel over where they differ), "squash" its resize to the square, "pad"
    LlavaImageProcessor's padding to a square of the mean colour first (LLaVA-1.5)."""
    if resize_mode not in ("shortest", "shortest_floor", "squash", "pad"):
        raise ValueError(f"resize_mode must be shortest, shortest_floor, squash or pad, got {resize_mode!r}")
    squash = resize_mode == "squash"
    return {
        "image_processor_type": "LlavaImageProcessor" if resize_mode == "pad" else "CLIPImageProcessor",
        "do_resize": True, "resample": {v: k for k, v in RESAMPLE.items()}[interpolation], "do_convert_rgb": True,
        "size": {"height": size, "width": size} if squash else {"shortest_edge": size},
        "do_center_crop": not squash, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [float(v) for v in mean], "image_std": [float(v) for v in std],
        **({"do_pad": True} if resize_mode == "pad" else {}),
    }
