"""`config_fields()`: every config key a model class reads, declared once in C++ (the options
tables of csrc/tessera/models/*/*_options.h) with its default and a one-line meaning."""
from __future__ import annotations

import pytest

import tessera
from tessera import registry


def _cpp_classes():
    return [cls for cls in registry.registered_classes() if cls._cpp_type() is not None]


@pytest.mark.parametrize("cls", _cpp_classes(), ids=lambda c: c.__name__)
def test_every_field_has_a_meaning_and_the_resolved_default(cls):
    fields = cls.config_fields()
    assert fields, cls.__name__
    for key, doc in fields.items():
        assert isinstance(doc["meaning"], str) and doc["meaning"].strip(), key
    if not hasattr(cls, "resolve_config"):
        return
    resolved = cls.resolve_config({})
    for key, doc in fields.items():
        node = resolved
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict):
            assert node == doc["default"], key  # the documented default is what an empty config resolves to


def test_sub_configs_are_dotted_and_every_family_is_covered():
    clip = tessera.CLIPModel.config_fields()
    assert clip["projection_dim"]["default"] == 512
    assert clip["text_config.eos_token_id"]["default"] == 49407
    assert "argmax" in clip["text_config.eos_token_id"]["meaning"]
    assert clip["vision_config.patch_size"]["default"] == 32
    assert tessera.CLIPVisionModel.config_fields()["patch_size"]["default"] == 32
    assert tessera.ViTMAEForPreTraining.config_fields()["mask_ratio"]["default"] == 0.75
    assert tessera.BeitModel.config_fields()["vocab_size"]["default"] == 8192
    llama = tessera.LlamaForCausalLM.config_fields()
    assert llama["rope_parameters"]["default"]["rope_type"] == "default"
    assert llama["pad_token_id"]["default"] is None  # null in the file
    assert tessera.LlavaForConditionalGeneration.config_fields()["text_config.hidden_size"]["default"] == 4096
    blip2 = tessera.Blip2ForConditionalGeneration.config_fields()
    assert blip2["qformer_config.cross_attention_frequency"]["default"] == 2
    assert blip2["image_token_index"]["default"] is None
    assert {c.model_type for c in _cpp_classes()} >= {"clip", "vit_mae", "beit", "llama", "llava", "blip-2"}


def test_a_python_only_model_says_so():
    with pytest.raises(NotImplementedError, match="VQKD"):
        tessera.VQKD.config_fields()
