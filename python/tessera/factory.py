"""One entry point per way of making a model, as open_clip and timm have:
`create_model(name)` from a named variant, `from_pretrained(dir)` from a Hugging Face checkpoint
folder; `list_models()` lists the names. All read tessera.registry. open_clip's
`create_model_and_transforms`, `create_model_from_pretrained` and `get_tokenizer` are here too."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Type, Union

import torch

from . import registry
from .models.pretrained import PreTrainedModel, checkpoint_config, merge_config, newest_checkpoint_of_run, refuse_file
from .models.open_clip_weights import force_overrides, is_checkpoint_file, load_open_clip
from .models.weights import load_fitting, load_weights


def register_model_type(model_type: str, cls: Type[PreTrainedModel]) -> None:
    """Lets an extension plug its model class into from_pretrained under `model_type` (see
    registry.register_model). A class registered already keeps its model_type: changing it would
    change what the registry built for the old one."""
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel)):
        raise TypeError(f"register_model_type({model_type!r}): {cls!r} is not a tessera PreTrainedModel subclass "
                        "(it needs model_type, architecture, from_pretrained)")
    if cls in registry.registered_classes() and cls.model_type != model_type:
        raise ValueError(f"{cls.__name__} is registered under model_type {cls.model_type!r}: "
                         f"register a subclass under {model_type!r}")
    had = cls.__dict__.get("model_type")
    cls.model_type = model_type
    try:
        registry.register_model(cls)
    except ValueError:
        if had is None:
            del cls.model_type
        else:
            cls.model_type = had
        raise


def from_pretrained(path: str, **kwargs) -> PreTrainedModel:
    """Loads a Hugging Face folder (config.json + model.safetensors) into the matching class; a
    training run's folder loads its newest checkpoint."""
    refuse_file(path)
    path = newest_checkpoint_of_run(os.path.join(path, kwargs.pop("subfolder", None) or ""))
    config = checkpoint_config(path, kwargs.get("config"))
    return registry.model_class(config, path).from_pretrained(path, **kwargs)


def list_models() -> List[str]:
    """Names accepted by create_model (open_clip's names: ViT-B-32, ViT-B-16, ViT-L-14, ...)."""
    return registry.list_variants()


def get_model_config(name: str) -> Dict[str, Any]:
    """The Hugging Face style config dict registered under `name`."""
    return registry.variant(name)[1]


def create_model(name: str, pretrained: Optional[str] = None, config_overrides: Optional[Dict[str, Any]] = None,
                 **kwargs) -> PreTrainedModel:
    """A model of a named variant, randomly initialised, or loaded from `pretrained` (a checkpoint
    folder, a run folder, or for CLIP open_clip's checkpoint file). `config_overrides` updates the config recursively; other keywords are the class's
    own arguments (BeitModel's `add_pooling_layer`, for a variant of that architecture) or, as in
    timm and open_clip, config fields
    (`create_model("ViT-B-32", projection_dim=64)`), and open_clip's `force_image_size`,
    `force_context_length` and `force_quick_gelu` (a checkpoint file's position embeddings are then
    resampled as open_clip resamples them). An unknown key is an error that lists the valid ones."""
    from .models.load_keywords import class_arguments

    family, config = registry.variant(name)
    output_dict = kwargs.pop("output_dict", None)  # open_clip's flag of a CLIP model's call
    if config_overrides is not None and not isinstance(config_overrides, dict):
        raise TypeError(f"create_model({name!r}): config_overrides must be a dict, got {type(config_overrides).__name__}")
    cls = registry.model_class(config, name)
    forced = force_overrides(kwargs, name, cls)
    own = class_arguments(cls, kwargs)
    config_overrides = {**kwargs, **(config_overrides or {})}  # the rest: config fields, as timm and open_clip
    config_overrides = merge_config(config_overrides, forced) if forced else config_overrides
    config = merge_config(config, config_overrides)
    if config_overrides:
        registry.validate(family, config, f"create_model({name!r}) config_overrides")
    if output_dict is not None and not hasattr(cls, "output_dict"):
        raise TypeError(f"create_model({name!r}, output_dict=...): open_clip's flag of a CLIP model's call; "
                        f"{cls.__name__} has no such call")
    model = cls(config, **own)
    if output_dict is not None:
        model.output_dict = bool(output_dict)
    if pretrained and is_checkpoint_file(pretrained):  # open_clip's: a file of its own layout
        load_open_clip(model, os.fspath(pretrained))
    elif pretrained:
        pretrained = newest_checkpoint_of_run(pretrained)
        load_fitting(model, load_weights(pretrained), f"{pretrained} (for create_model({name!r}))")
    return model


# ---- open_clip's entry points -------------------------------------------------------------------
_PRECISIONS = {"fp32": torch.float32, "amp": torch.float32, "amp_bf16": torch.float32, "amp_bfloat16": torch.float32,
               "bf16": torch.bfloat16, "pure_bf16": torch.bfloat16, "fp16": torch.float16, "pure_fp16": torch.float16}


def _clip_model(name: str, pretrained: Optional[str], precision: str, device: Union[str, torch.device],
                kwargs) -> PreTrainedModel:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
    model = create_model(name, pretrained=pretrained, **kwargs)
    if not hasattr(model, "encode_image"):
        raise ValueError(f"{name!r} is a {type(model).__name__}: open_clip's entry points make CLIP models "
                         "(create_model makes any family)")
    # amp keeps fp32 weights (autocast runs in the training loop), as open_clip does.
    return model.to(device=device, dtype=_PRECISIONS[precision])


_OPEN_CLIP_TRANSFORM_KEYS = ("image_interpolation", "image_resize_mode", "aug_cfg")


def _transforms(model: PreTrainedModel, image_mean=None, image_std=None, image_interpolation=None,
                image_resize_mode=None, aug_cfg=None):
    """open_clip's (preprocess_train, preprocess_val) with its keywords: mean, std, interpolation
    (bicubic, bilinear) and resize mode (shortest, squash; open_clip's 'longest' pads, which
    tessera's pipeline does not)."""
    from .data import ImageTransform, clip_transform

    if aug_cfg:
        raise ValueError(f"aug_cfg={aug_cfg!r}: open_clip's training augmentations (color jitter, grayscale, "
                         "timm's RandAugment) are not tessera's; its training transform crops 90-100 % of the image")
    if image_resize_mode not in (None, "shortest", "squash"):
        raise ValueError(f"image_resize_mode={image_resize_mode!r}: tessera's transforms resize 'shortest' (and "
                         "center-crop) or 'squash'; open_clip's 'longest' pads, which they do not")
    from .models.timm_compat import model_transform_settings

    size = model.config["vision_config"]["image_size"]
    # the model's own (a folder's preprocessor_config.json; else OpenAI's), as open_clip's pretrained cfg
    stats = {**model_transform_settings(model), **{k: v for k, v in (
        ("mean", image_mean), ("std", image_std), ("interpolation", image_interpolation),
        ("resize_mode", image_resize_mode)) if v is not None}}
    # open_clip's defaults: training crops 90-100 % of the image, no flip; evaluation resizes and crops.
    train = ImageTransform(clip_transform(size, train=True, scale=(0.9, 1.0), hflip_prob=0.0, **stats))
    return train, ImageTransform(clip_transform(size, train=False, **stats))


def _transform_keys(model_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """open_clip's preprocessing keywords, taken out of what goes to the model (they read as
    unknown config keys there)."""
    return {k: model_kwargs.pop(k) for k in _OPEN_CLIP_TRANSFORM_KEYS if k in model_kwargs}


def create_model_and_transforms(model_name: str, pretrained: Optional[str] = None, precision: str = "fp32",
                                device: Union[str, torch.device] = "cpu", image_mean=None, image_std=None,
                                **model_kwargs):
    """open_clip's call: (model, preprocess_train, preprocess_val) for a CLIP variant; `pretrained`
    is a checkpoint or run folder. The transforms take a PIL image or a uint8 [H, W, C] tensor
    (PIL images are converted to RGB first, as transformers and torchvision's loader do; open_clip
    resizes RGBA, palette and 1-bit images in their own mode and converts last, so those differ).
    `precision` "bf16"/"fp16" cast the whole model, as open_clip's "pure_bf16"/"pure_fp16" do
    (open_clip's plain "bf16" keeps the LayerNorms in fp32; tessera's C++ modules run in one
    dtype); "amp*" keep fp32 weights for autocast. open_clip's `image_interpolation` and
    `image_resize_mode` ('shortest', 'squash') are taken."""
    keys = _transform_keys(model_kwargs)
    model = _clip_model(model_name, pretrained, precision, device, model_kwargs)
    return (model, *_transforms(model, image_mean, image_std, **keys))


def create_model_from_pretrained(model_name: str, pretrained: Optional[str] = None, precision: str = "fp32",
                                 device: Union[str, torch.device] = "cpu", return_transform: bool = True,
                                 image_mean=None, image_std=None, **model_kwargs):
    """open_clip's call: (model, preprocess) for evaluation, or the model alone."""
    keys = _transform_keys(model_kwargs)
    model = _clip_model(model_name, pretrained, precision, device, model_kwargs)
    return (model, _transforms(model, image_mean, image_std, **keys)[1]) if return_transform else model


def get_tokenizer(model_name: str, context_length: Optional[int] = None):
    """open_clip's call: the tokenizer of a CLIP variant, rows of the text tower's context length."""
    from .text import ClipTokenizer

    config = get_model_config(model_name)
    if "text_config" not in config:
        raise ValueError(f"{model_name!r} has no text tower: get_tokenizer is for CLIP variants")
    return ClipTokenizer(context_length=context_length or config["text_config"].get("max_position_embeddings", 77))
