"""What a LLaVA checkpoint folder needs beside its weights for transformers' LlavaProcessor: the
run's tokenizer (SentencePieceTokenizer.save_pretrained: transformers 5 gives its ids), its
conversation template (chat_template.jinja, for apply_chat_template) and its image pipeline as
an image processor (the size, statistics and aspect rule the run trained on), so
`AutoProcessor.from_pretrained(checkpoint)` prepares what the model was trained on, image tokens
included. Before, a checkpoint held the weights alone and a transformers user rebuilt the
processor by hand (and with transformers 5's own conversion of the tokenizer, other ids)."""
from __future__ import annotations

import os
from typing import Any, Dict

from ..data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..io import write_json
from ..models.image_processor import image_processor_settings
from .conversation_data import ASPECT_MODES


def image_processor(data) -> Dict[str, Any]:
    """transformers' image processor settings for `data` (a ConversationData): its size,
    statistics (OpenAI CLIP's where it names none) and aspect rule."""
    return image_processor_settings(int(data.image_size), list(data.image_mean) or list(OPENAI_CLIP_MEAN),
                                    list(data.image_std) or list(OPENAI_CLIP_STD), ASPECT_MODES[data.image_aspect_ratio])


def save_chat_template(folder: str, tokenizer, template: str) -> None:
    """chat_template.jinja: the run's conversation template, which transformers' tokenizer and
    processor read for `apply_chat_template`; said and left out where no Jinja spelling gives
    tessera's ids (`chat_template`)."""
    from .._warn import warn
    from ..chat import load_template
    from ..chat_template import chat_template
    from ..io import write_atomic

    source = chat_template(load_template(template), tokenizer, tokenizer.special_tokens["<image>"])
    path = os.path.join(folder, "chat_template.jinja")
    if source is None:
        warn(f"template {template!r}: no Jinja chat template gives the ids tessera trains with (answers that end "
             "without an end-of-sequence token before another turn); the checkpoint has none")
        if os.path.isfile(path):
            os.remove(path)  # a copied folder's, of another template
        return
    write_atomic(path, source)


def save_processor(folder: str, tokenizer, data, config: Dict[str, Any], image_tokens: int, template: str) -> None:
    """The tokenizer, chat_template.jinja (from `template`, the run's conversation template),
    preprocessor_config.json and processor_config.json of a LLaVA checkpoint; the last only where LlavaProcessor's count of image tokens (patches, plus the class token
    under "full") is the model's `image_tokens` (a Q-Former projector's are its queries)."""
    tokenizer.save_pretrained(folder)
    save_chat_template(folder, tokenizer, template)
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
