"""One registry (named variants are JSON files, overrides are checked strictly, Python's config
comes from C++) and loading that scales (key aliases, tied weights, sharded saves that
transformers reads, memory-mapped loading by assignment)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import tessera
from tessera import registry
from tessera.models.pretrained import PreTrainedModel
from tessera.models.weights import apply_key_aliases, parse_size
from _clip_reference import hf_clip, pixel_batch, text_batch, tiny_config

CONFIG = tiny_config()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_variants_are_json_files_in_the_family_folder():
    import glob

    files = {os.path.basename(p)[:-5]: p for p in glob.glob(os.path.join(ROOT, "csrc", "tessera", "models", "*",
                                                                         "configs", "*.json"))}
    assert sorted(files) == sorted(tessera.list_models())
    for name, path in files.items():
        with open(path) as f:
            assert tessera.get_model_config(name) == json.load(f)
        family = os.path.basename(os.path.dirname(os.path.dirname(path)))
        assert tessera.registry.variant(name)[0] == family
    mae = tessera.create_model("mae-vit-base-patch16", config_overrides={"num_hidden_layers": 1,
                                                                         "decoder_num_hidden_layers": 1})
    assert isinstance(mae, tessera.ViTMAEForPreTraining) and mae.config["hidden_size"] == 768


def test_overrides_are_checked_and_config_comes_from_cpp():
    with pytest.raises(ValueError, match=r"unknown key 'patch_sise' \(valid keys: .*patch_size"):
        tessera.create_model("ViT-B-32", config_overrides={"vision_config": {"patch_sise": 8}})
    # Config fields as keywords, as timm's and open_clip's create_model take them (a TypeError before).
    small = dict(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2)
    clip = tessera.create_model("ViT-B-32", projection_dim=64, vision_config=small, text_config=small)
    assert clip.config["projection_dim"] == 64 and clip.config["vision_config"]["patch_size"] == 32
    with pytest.raises(ValueError, match=r"unknown key 'projection_dimm'"):
        tessera.create_model("ViT-B-32", projection_dimm=64)
    model = tessera.CLIPModel(CONFIG)
    # Defaults the caller left out are filled in by C++ (one source of truth for every field).
    assert model.config["vision_config"]["layer_norm_eps"] == 1e-5
    assert model.config["text_config"]["hidden_size"] == CONFIG["text_config"]["hidden_size"]
    assert registry.model_class({"model_type": "clip"}) is tessera.CLIPModel
    # Past int64 a JSON integer wrapped (2^64 - 1 read as -1, a valid-looking token id); a size check
    # named the keys without the value at fault.
    with pytest.raises(ValueError, match=r"eos_token_id 18446744073709551615 does not fit in int64"):
        tessera.create_model("ViT-B-32", text_config={**small, "eos_token_id": 2 ** 64 - 1})
    with pytest.raises(ValueError, match=r"text_config: vocab_size \d+, .*num_hidden_layers -1 >= 0"):
        tessera.create_model("ViT-B-32", text_config={**small, "num_hidden_layers": -1})


def test_info_lists_families_types_and_variants():
    r = subprocess.run([sys.executable, "-m", "tessera.cli", "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "clip: model types clip (CLIPModel)" in r.stdout and "ViT-L-14-quickgelu" in r.stdout


@pytest.fixture
def scratch_registry():
    saved = dict(registry.ARCHITECTURES), dict(registry.MODEL_TYPES)
    yield
    for table, before in zip((registry.ARCHITECTURES, registry.MODEL_TYPES), saved):
        table.clear()
        table.update(before)


def test_an_architecture_belongs_to_one_class_and_a_model_type_has_one_default(scratch_registry):
    assert registry.model_class({"architectures": ["BeitModel"]}) is tessera.BeitModel
    assert registry.model_class({"architectures": ["ViTMAEModel"]}) is tessera.ViTMAEModel
    assert registry.model_class({"model_type": "beit"}) is tessera.BeitForMaskedImageModeling
    assert registry.model_class({"model_type": "vit_mae"}) is tessera.ViTMAEForPreTraining
    arch = [c.architecture for c in registry.registered_classes()]
    assert arch == sorted(arch) and {"BeitModel", "ViTMAEModel", "CLIPVisionModel"} <= set(arch)

    registry.register_model(tessera.BeitModel)  # the same class again is fine
    reloaded = type("BeitModel", (tessera.BeitModel,), {"__module__": tessera.BeitModel.__module__,
                                                        "__qualname__": "BeitModel"})
    registry.register_model(reloaded)  # what a module reload registers: it replaces the old class
    assert registry.ARCHITECTURES["BeitModel"] is reloaded

    class BeitModel(tessera.BeitModel):  # a different class under a taken architecture
        pass

    with pytest.raises(ValueError, match=r"'BeitModel' is already registered by tessera\.models\.beit\.BeitModel; "
                                         r"test_registry_loading\..*BeitModel needs an architecture"):
        registry.register_model(BeitModel)

    class Second(tessera.BeitModel):
        architecture = "TesseraTestBeit"
        default_for_model_type = True

    with pytest.raises(ValueError, match="BeitForMaskedImageModeling and .*Second both set default_for_model_type"):
        registry.register_model(Second)
    assert "TesseraTestBeit" not in registry.ARCHITECTURES
    with pytest.raises(ValueError, match="CLIPModel is registered under model_type 'clip'"):
        tessera.register_model_type("tessera_test", tessera.CLIPModel)
    assert tessera.CLIPModel.model_type == "clip"


def test_registered_classes_are_exported_by_name():
    import tessera.models

    for cls in registry.registered_classes():
        for module in (tessera, tessera.models):
            assert getattr(module, cls.__name__) is cls and cls.__name__ in module.__all__
    for module in (tessera, tessera.models):
        assert all(hasattr(module, name) for name in module.__all__)


@pytest.mark.parametrize("tower, key", [("CLIPVisionModel", "vision_config"), ("CLIPTextModel", "text_config")])
def test_a_tower_loads_from_its_parents_folder_as_transformers_does(tmp_path, tower, key):
    transformers = pytest.importorskip("transformers")
    hf_clip(CONFIG).save_pretrained(str(tmp_path))
    ours = getattr(tessera, tower).from_pretrained(str(tmp_path))
    theirs = getattr(transformers, tower).from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    assert ours.config["hidden_size"] == CONFIG[key]["hidden_size"]
    if key == "vision_config":
        inputs = dict(pixel_values=pixel_batch(CONFIG[key], batch=2))
    else:
        ids, mask = text_batch(CONFIG[key], batch=2, seq_len=CONFIG[key]["max_position_embeddings"])
        inputs = dict(input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        got, want = ours(**inputs), theirs(**inputs)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize("parent", [{"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
                                    {"model_type": "llava", "vision_config": {"model_type": "siglip_vision_model"}}])
def test_a_tower_refuses_a_folder_without_its_config(tmp_path, parent):
    (tmp_path / "config.json").write_text(json.dumps(parent))
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path / 'config.json'))}: a '{parent['model_type']}' "
                                         "checkpoint, with no "
                                         "'vision_config' of model_type 'clip_vision_model'"):
        tessera.CLIPVisionModel.from_pretrained(str(tmp_path))


def test_key_aliases_rename_only_what_the_model_lacks():
    out = apply_key_aliases({"decoder.decoder_layers.0.w": 1, "x": 2, "y.z": 3}, {"decoder.decoder_encoder.layer.0.w", "x"},
                            [(r"^decoder\.decoder_layers\.", "decoder.decoder_encoder.layer.")])
    assert out == {"decoder.decoder_encoder.layer.0.w": 1, "x": 2, "y.z": 3}


def test_transformers_4_tower_layout_loads_through_an_alias(tmp_path):
    model = tessera.CLIPVisionModel(CONFIG["vision_config"])
    old = {"vision_model." + k: v for k, v in model.state_dict().items()}
    fresh = tessera.CLIPVisionModel(CONFIG["vision_config"])
    fresh.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


class _TiedLM(PreTrainedModel):
    model_type = "tessera_test_tied"
    architecture = "TesseraTestTied"
    tied_weights = {"head.weight": "embed.weight"}

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        self.embed = nn.Embedding(7, 3)
        self.head = nn.Linear(3, 7, bias=False)
        self.head.weight = self.embed.weight


def test_tied_weights_are_stored_once_and_restored(tmp_path):
    model = _TiedLM({})
    model.save_pretrained(str(tmp_path))
    stored, _ = tessera._C.core.load_safetensors(str(tmp_path / "model.safetensors"))
    assert set(stored) == {"embed.weight"}
    loaded = _TiedLM.from_pretrained(str(tmp_path))
    assert torch.equal(loaded.head.weight, model.embed.weight)


def test_sharded_save_round_trips_and_transformers_reads_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2KiB") == 2048 and parse_size(10) == 10
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size("lots")
    model = tessera.CLIPModel(CONFIG)
    model.save_pretrained(str(tmp_path))  # first a single file: the sharded save must replace it
    model.save_pretrained(str(tmp_path), max_shard_size="20KB")
    files = sorted(os.listdir(tmp_path))
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 1 and "model.safetensors" not in files and "model.safetensors.index.json" in files
    loaded = tessera.from_pretrained(str(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    hf = transformers.CLIPModel.from_pretrained(str(tmp_path))
    ids, mask = text_batch(CONFIG["text_config"], batch=2, seq_len=CONFIG["text_config"]["max_position_embeddings"])
    px = pixel_batch(CONFIG["vision_config"], batch=2)
    with torch.no_grad():
        want = hf(input_ids=ids, pixel_values=px, attention_mask=mask).logits_per_image
        got = loaded(input_ids=ids, pixel_values=px, attention_mask=mask).logits_per_image
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    model.save_pretrained(str(tmp_path))  # back to one file: the shards and index go
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_from_pretrained_assigns_and_cpp_sees_it_before_any_forward(tmp_path):
    model = tessera.CLIPModel(CONFIG)
    model.save_pretrained(str(tmp_path))
    loaded = tessera.from_pretrained(str(tmp_path))
    cpp = dict(loaded.cpp.named_parameters())
    assert all(cpp[k] is p for k, p in loaded.named_parameters())
    assert all(p.requires_grad for p in loaded.parameters())
    # Training writes to the copy-on-write mapping, never to the file.
    with torch.no_grad():
        next(loaded.parameters()).add_(1.0)
    again = tessera.from_pretrained(str(tmp_path))
    assert torch.equal(next(again.parameters()), next(model.parameters()))


def test_add_model_config_registers_a_checked_variant(tmp_path):
    """open_clip's add_model_config: a user's variant file (or folder) is checked strictly by its
    family and then built by name; a typo, a second file of the same name, or an unknown model
    type is refused naming the file."""
    import json

    tiny = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=40, hidden_size=16,
                intermediate_size=24, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32)
    (tmp_path / "tiny-llama-user.json").write_text(json.dumps(tiny))
    assert tessera.add_model_config(str(tmp_path)) == ["tiny-llama-user"]
    assert "tiny-llama-user" in tessera.list_models()
    model = tessera.create_model("tiny-llama-user")
    assert isinstance(model, tessera.LlamaForCausalLM) and model.config["hidden_size"] == 16
    with pytest.raises(ValueError, match="registered twice"):
        tessera.add_model_config(str(tmp_path / "tiny-llama-user.json"))
    typo = tmp_path / "typo" / "tiny-llama-typo.json"
    typo.parent.mkdir()
    typo.write_text(json.dumps(dict(tiny, hiden_size=16)))
    with pytest.raises(ValueError, match=r"tiny-llama-typo\.json.*hiden_size"):
        tessera.add_model_config(str(typo))
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(model_type="not-a-model")))
    with pytest.raises(ValueError, match=r"other\.json.*not-a-model"):
        tessera.add_model_config(str(other))


def test_add_model_config_takes_a_clip_variant_as_open_clip_does(tmp_path):
    """The first thing an open_clip user adds is a CLIP config: CLIPModel named no family, so every
    CLIP file was refused ("not a C++ family model")."""
    import json
    import pathlib

    shipped = pathlib.Path(tessera.__file__).parent / "share" / "tessera" / "models" / "clip" / "configs"
    config = json.loads((shipped / "ViT-B-32.json").read_text())
    config["vision_config"].update(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2)
    config["text_config"].update(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2)
    config["projection_dim"] = 16
    (tmp_path / "ViT-tiny-user.json").write_text(json.dumps(config))
    assert tessera.add_model_config(str(tmp_path)) == ["ViT-tiny-user"]
    model = tessera.create_model("ViT-tiny-user")
    assert isinstance(model, tessera.CLIPModel) and model.config["projection_dim"] == 16


def test_a_saved_config_json_is_a_variant_file(tmp_path):
    """A config.json written by save_pretrained or transformers carries keys tessera does not read
    (dtype, transformers_version, a tower's projection_dim): the strict variant check refused them,
    so a real config could not be registered, and a typo in it could not be found."""
    import json

    transformers = pytest.importorskip("transformers")
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16).save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert {"dtype", "transformers_version"} & set(config) and "projection_dim" in config["text_config"]
    (tmp_path / "clip-saved-by-hf.json").write_text(json.dumps(config))
    (tmp_path / "config.json").unlink()
    assert tessera.add_model_config(str(tmp_path / "clip-saved-by-hf.json")) == ["clip-saved-by-hf"]
    assert tessera.create_model("clip-saved-by-hf").config["projection_dim"] == 16
    config["text_config"]["hiden_size"] = 32  # a typo is still found
    (tmp_path / "clip-typo.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"clip-typo\.json.*text_config: unknown key 'hiden_size'"):
        tessera.add_model_config(str(tmp_path / "clip-typo.json"))


def test_add_model_config_is_all_or_none_and_names_are_usable(tmp_path):
    """A folder was registered file by file: a bad second file left the first registered, and
    the retry then failed with "registered twice". Names nobody could type (`.json`, ` a .json`)
    were accepted. A pathlib.Path failed in pybind's argument matching."""
    import json
    import pathlib

    tiny = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=40, hidden_size=16,
                intermediate_size=24, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32)
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "all-or-none-a.json").write_text(json.dumps(tiny))
    (folder / "all-or-none-b.json").write_text(json.dumps(dict(tiny, foo=1)))
    with pytest.raises(ValueError, match="foo"):
        tessera.add_model_config(str(folder))
    assert "all-or-none-a" not in tessera.list_models()
    (folder / "all-or-none-b.json").write_text(json.dumps(tiny))
    assert tessera.add_model_config(pathlib.Path(folder)) == ["all-or-none-a", "all-or-none-b"]
    for odd in (".json", " spaced .json", "a b.json"):
        (tmp_path / odd).write_text(json.dumps(tiny))
        with pytest.raises(ValueError, match="not a usable model name"):
            tessera.add_model_config(str(tmp_path / odd))
    with pytest.raises(TypeError, match="file or folder path"):
        tessera.add_model_config(3)


def test_create_model_names_misfit_weights_and_bad_arguments(fixture_dir):
    """create_model(pretrained=) surfaced torch's key-by-key RuntimeError; config_overrides that
    is not a dict and a class that is not a tessera model failed with AttributeError (the latter
    leaving model_type set on it)."""
    with pytest.raises(ValueError, match=r"for create_model\('llama-50m'\)\): its tensors do not fit LlamaForCausalLM"):
        tessera.create_model("llama-50m", pretrained=str(fixture_dir("clip")))
    with pytest.raises(TypeError, match="config_overrides must be a dict"):
        tessera.create_model("llama-50m", config_overrides=[1])

    class Foo:
        pass

    with pytest.raises(TypeError, match="not a tessera PreTrainedModel subclass"):
        tessera.register_model_type("foo", Foo)
    assert not hasattr(Foo, "model_type")


def test_a_base_model_loads_from_its_pretraining_checkpoint_as_transformers(tmp_path):
    """Fine-tuning starts from MAE's or BEiT's pretraining checkpoint: transformers loads
    ViTMAEModel / BeitModel from it (base_model_prefix `vit` / `beit`, the head left out); tessera
    refused both (70 missing, 110 unexpected keys)."""
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, image_size=16,
                 patch_size=4)
    cases = [(tessera.ViTMAEForPreTraining(dict(small, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                                 decoder_num_attention_heads=2, decoder_intermediate_size=24)),
              tessera.ViTMAEModel, "vit", {}, "decoder"),
             (tessera.BeitForMaskedImageModeling(dict(small, vocab_size=24, use_mask_token=True)),
              tessera.BeitModel, "beit", {"add_pooling_layer": False}, "lm_head")]
    for i, (pretrained, base, prefix, kwargs, head) in enumerate(cases):
        pretrained.save_pretrained(str(tmp_path / str(i)))
        with pytest.warns(UserWarning, match=f"{head}.* weights are not used") as said:
            model = base.from_pretrained(str(tmp_path / str(i)), **kwargs)
        assert said[0].filename == __file__  # the caller's line, not tessera's (tessera/_warn.py)
        want = {k[len(prefix) + 1:]: v for k, v in pretrained.state_dict().items() if k.startswith(prefix + ".")}
        got = model.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_a_run_folder_loads_its_newest_checkpoint(tmp_path):
    """chat, eval and init.* take a run folder; from_pretrained and create_model(pretrained=)
    failed on one with "no config.json"."""
    torch.manual_seed(0)
    tiny = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=32)
    old, new = tessera.LlamaForCausalLM(tiny), tessera.LlamaForCausalLM(tiny)
    old.save_pretrained(str(tmp_path / "run" / "checkpoints" / "step-00000010"))
    new.save_pretrained(str(tmp_path / "run" / "checkpoints" / "step-00000020"))
    for model in (tessera.from_pretrained(str(tmp_path / "run")),
                  tessera.LlamaForCausalLM.from_pretrained(str(tmp_path / "run"))):
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), new.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        tessera.from_pretrained(str(tmp_path / "run" / "checkpoints"))
