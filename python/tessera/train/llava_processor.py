"""What a LLaVA checkpoint folder needs beside its weights for transformers' LlavaProcessor: the
run's tokenizer (SentencePieceTokenizer.save_pretrained: transformers 5 gives its ids) and its
image pipeline as an image processor (the size, statistics and aspect rule the run trained on),
so `AutoProcessor.from_pretrained(checkpoint)` prepares what the model was trained on, image
tokens included. Before, a checkpoint held the weights alone and a transformers user rebuilt the
processor by hand (and with transformers 5's own conversion of the tokenizer, other ids)."""
from __future__ import annotations

import os
from typing import Any, Dict

from ..data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..io import write_json


def image_processor(data) -> Dict[str, Any]:
    """transformers' image processor settings for `data` (a ConversationData): CLIP's resize of
    the short side and center crop ("square"), LlavaImageProcessor's padding to a square of the
    mean colour first ("pad", LLaVA-1.5's expand2square), or a resize to the square ("squash")."""
    size = int(data.image_size)
    mean = list(data.image_mean) or list(OPENAI_CLIP_MEAN)
    std = list(data.image_std) or list(OPENAI_CLIP_STD)
    squash = data.image_aspect_ratio == "squash"
    return {
        "image_processor_type": "LlavaImageProcessor" if data.image_aspect_ratio == "pad" else "CLIPImageProcessor",
        "do_resize": True, "resample": 3, "do_convert_rgb": True,
        "size": {"height": size, "width": size} if squash else {"shortest_edge": size},
        "do_center_crop": not squash, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": mean, "image_std": std,
        **({"do_pad": True} if data.image_aspect_ratio == "pad" else {}),
    }


def save_processor(folder: str, tokenizer, data, config: Dict[str, Any], image_tokens: int) -> None:
    """The tokenizer, preprocessor_config.json and processor_config.json of a LLaVA checkpoint;
    the last only where LlavaProcessor's count of image tokens (patches, plus the class token
    under "full") is the model's `image_tokens` (a Q-Former projector's are its queries)."""
    tokenizer.save_pretrained(folder)
    images = image_processor(data)
    write_json(os.path.join(folder, "preprocessor_config.json"), images)
    vision = config["vision_config"]
    strategy = config.get("vision_feature_select_strategy", "default")
    if (int(data.image_size) // int(vision["patch_size"])) ** 2 + (strategy == "full") != image_tokens:
        return
    write_json(os.path.join(folder, "processor_config.json"), {
        "processor_class": "LlavaProcessor", "image_token": "<image>",
        "patch_size": int(vision["patch_size"]), "vision_feature_select_strategy": strategy,
        "num_additional_image_tokens": 1,  # the tower's class token; "default" drops it again
        "image_processor": images,
    })
