"""`model.config` reads as transformers' config does (`config.vision_config.hidden_size`, the
attribute aliases), beside the dict tessera builds from and saves: code written against a
transformers model (a head sized from the config) ran into "'dict' object has no attribute"."""
from __future__ import annotations

import copy
import json
import pickle

import pytest

import tessera

transformers = pytest.importorskip("transformers")


def _leaves(config, prefix=""):
    """(dotted key, value) of every scalar in a config dict, nested configs included."""
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _attr(config, dotted):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("family,cls", [("clip", "CLIPModel"), ("llava", "LlavaForConditionalGeneration"),
                                        ("llama", "LlamaForCausalLM"), ("beit", "BeitForMaskedImageModeling")])
def test_attributes_read_as_transformers_config(fixture_dir, family, cls):
    d = str(fixture_dir(family))
    ours, theirs = tessera.from_pretrained(d), getattr(transformers, cls).from_pretrained(d)
    checked = 0
    for dotted, value in _leaves(ours.config):
        assert _attr(ours.config, dotted) == value
        try:
            reference = _attr(theirs.config, dotted)
        except AttributeError:
            continue  # a key transformers does not keep as an attribute (or tessera's own)
        # image_seq_length: tessera's is the tower's count (16 here); transformers keeps the file's
        # value for its processor (576, LLaVA-1.5's, in this tiny fixture).
        if isinstance(reference, (int, float, str, bool)) and dotted not in ("dtype", "transformers_version",
                                                                             "image_seq_length"):
            assert value == reference, dotted
            checked += 1
    assert checked >= 8


def test_an_attribute_alias_reads_its_key(fixture_dir):
    ours = tessera.from_pretrained(str(fixture_dir("llava")))
    theirs = transformers.LlavaForConditionalGeneration.from_pretrained(str(fixture_dir("llava")))
    assert ours.config.image_token_id == ours.config["image_token_index"] == theirs.config.image_token_id


def test_it_stays_the_dict_it_was(fixture_dir, tmp_path):
    model = tessera.from_pretrained(str(fixture_dir("clip")))
    config = model.config
    assert isinstance(config, dict) and isinstance(config["vision_config"], dict)
    assert json.loads(json.dumps(config)) == config.to_dict()
    assert type(config.to_dict()["vision_config"]) is dict
    assert copy.deepcopy(config) == config and pickle.loads(pickle.dumps(config)) == config
    assert copy.deepcopy(model).config.vision_config.hidden_size == config.vision_config.hidden_size
    model.save_pretrained(str(tmp_path))
    assert tessera.from_pretrained(str(tmp_path)).config == config


def test_a_value_set_afterwards_is_refused_by_name(fixture_dir):
    config = tessera.from_pretrained(str(fixture_dir("llama"))).config
    with pytest.raises(AttributeError, match=r"config.pad_token_id = \.\.\.: .*config_overrides=\{'pad_token_id': \.\.\.\}"):
        config.pad_token_id = 0
    config.use_cache = False  # transformers' Trainer sets it on every model: taken, as it changes nothing here
    assert config["use_cache"] is False
    with pytest.raises(AttributeError, match=r"the config has no 'hidden_sise' \(keys: .*hidden_size"):
        config.hidden_sise
    assert not hasattr(config, "hidden_sise") and getattr(config, "use_return_dict", True) is True


def test_it_serialises_as_plain_data(fixture_dir, tmp_path):
    """Saved beside a state_dict, the config loads under torch.load's default weights_only=True in
    a process that never imported tessera; YAML's safe dumper writes it; copies keep attributes."""
    import subprocess
    import sys

    import torch
    import yaml

    config = tessera.from_pretrained(str(fixture_dir("clip"))).config
    torch.save({"config": config}, tmp_path / "ckpt.pt")
    loaded = subprocess.run([sys.executable, "-c", "import sys, torch; "
                             f"c = torch.load({str(tmp_path / 'ckpt.pt')!r})['config']; "
                             "print(type(c).__name__, c['vision_config']['hidden_size'], 'tessera' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert loaded == ["OrderedDict", str(config.vision_config.hidden_size), "False"]
    assert yaml.safe_load(yaml.safe_dump(config)) == config.to_dict()
    for copied in (config.copy(), copy.copy(config), copy.deepcopy(config)):
        assert copied == config and copied.vision_config.hidden_size == config.vision_config.hidden_size
    edited = config.copy()
    edited.update(extra={"depth": 3})
    edited.setdefault("more", {"width": 4})
    edited |= {"merged": {"size": 5}}
    assert edited.extra.depth == 3 and edited.more.width == 4 and edited.merged.size == 5 and "extra" not in config
