"""BEiT against transformers' BeitForMaskedImageModeling / BeitModel: the shared fixture, random
configurations side by side (shared or per-layer relative bias, layer scale on/off, absolute
positions, mean pooling; forward and every gradient), other resolutions, save/load both ways,
bad input."""
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

import tessera

sys.path.insert(0, os.path.dirname(__file__))
from _vit_names import hf_name  # noqa: E402

transformers = pytest.importorskip("transformers")


def test_fixture_parity(fixture_dir):
    d = fixture_dir("beit")
    io = load_file(str(d / "io.safetensors"))
    model = tessera.from_pretrained(str(d))
    assert isinstance(model, tessera.BeitForMaskedImageModeling)
    out = model(io["pixel_values"], bool_masked_pos=io["bool_masked_pos"], output_hidden_states=True)
    torch.testing.assert_close(out.logits, io["logits"], atol=1e-4, rtol=0)
    # The fixture's last_hidden_state is transformers' hidden_states[-1] (the last layer's output).
    torch.testing.assert_close(out.hidden_states[-1], io["last_hidden_state"], atol=1e-4, rtol=0)


SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48, image_size=16,
             patch_size=4, vocab_size=24, use_mask_token=True, drop_path_rate=0.0)
CONFIGS = [
    dict(use_relative_position_bias=True, layer_scale_init_value=0.1),
    dict(use_shared_relative_position_bias=True, layer_scale_init_value=0.0, use_absolute_position_embeddings=True),
    dict(use_absolute_position_embeddings=True, layer_scale_init_value=0.5, use_mean_pooling=False,
         hidden_act="gelu_new", num_channels=1),
    dict(use_relative_position_bias=True, use_shared_relative_position_bias=True, use_mean_pooling=True),
]


def _perturbed(hf):
    with torch.no_grad():  # non-trivial values everywhere (HF zero-inits tokens and bias tables)
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return hf


@pytest.mark.parametrize("extra", CONFIGS)
def test_side_by_side_with_transformers(extra, tmp_path):
    config = {**SMALL, **extra}
    torch.manual_seed(0)
    hf = _perturbed(transformers.BeitForMaskedImageModeling(transformers.BeitConfig(**config))).train()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path)).train()
    assert sorted(hf_name(n) for n, _ in ours.named_parameters()) == sorted(n for n, _ in hf.named_parameters())
    c = config.get("num_channels", 3)
    px = torch.randn(3, c, 16, 16)
    mask = torch.rand(3, 16) < 0.4
    labels = torch.randint(0, 24, (int(mask.sum()),))
    a = hf(px, bool_masked_pos=mask, labels=labels, output_hidden_states=True)
    b = ours(px, bool_masked_pos=mask, labels=labels, output_hidden_states=True)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=1e-5)
    assert len(b.hidden_states) == len(a.hidden_states) == config["num_hidden_layers"] + 1
    for x, y in zip(b.hidden_states, a.hidden_states):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    a.loss.backward()
    b.loss.backward()
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        q = theirs[hf_name(name)]
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad if q.grad is not None else torch.zeros_like(p), atol=1e-6,
                                   rtol=1e-4, msg=name)


@pytest.mark.parametrize("extra", CONFIGS[1:3])
def test_encoder_and_pooler_match_beit_model(extra, tmp_path):
    config = {**SMALL, **extra}
    torch.manual_seed(1)
    hf = _perturbed(transformers.BeitModel(transformers.BeitConfig(**config))).eval()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path))
    assert isinstance(ours, tessera.BeitModel)
    px = torch.randn(2, config.get("num_channels", 3), 16, 16)
    a, b = hf(px), ours(px)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size", [(24, 24), (16, 24)])
def test_other_resolutions_match_transformers(size, tmp_path):
    config = {**SMALL, **CONFIGS[3], "use_absolute_position_embeddings": True}
    torch.manual_seed(2)
    hf = _perturbed(transformers.BeitForMaskedImageModeling(transformers.BeitConfig(**config))).eval()
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path))
    px = torch.randn(2, 3, *size)
    n = (size[0] // 4) * (size[1] // 4)
    mask = torch.rand(2, n) < 0.5
    a = hf(px, bool_masked_pos=mask, interpolate_pos_encoding=True)
    b = ours(px, bool_masked_pos=mask, interpolate_pos_encoding=True)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-4, rtol=1e-4)


def test_saved_model_loads_in_transformers(fixture_dir, tmp_path):
    d = fixture_dir("beit")
    io = load_file(str(d / "io.safetensors"))
    tessera.from_pretrained(str(d)).save_pretrained(str(tmp_path))
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(load_file(str(d / "model.safetensors")))
    hf = transformers.BeitForMaskedImageModeling.from_pretrained(str(tmp_path)).eval()
    torch.testing.assert_close(hf(io["pixel_values"], bool_masked_pos=io["bool_masked_pos"]).logits, io["logits"],
                               atol=1e-4, rtol=0)


def test_labels_for_every_patch_equal_labels_for_masked_patches(fixture_dir):
    model = tessera.from_pretrained(str(fixture_dir("beit")))
    torch.manual_seed(3)
    px, mask = torch.randn(2, 3, 32, 32), torch.rand(2, 16) < 0.5
    tokens = torch.randint(0, 512, (2, 16))
    full = model(px, bool_masked_pos=mask, labels=tokens).loss
    picked = model(px, bool_masked_pos=mask, labels=tokens[mask]).loss
    logits = model(px, bool_masked_pos=mask).logits
    expect = torch.nn.functional.cross_entropy(logits[mask], tokens[mask])  # the plain formula
    torch.testing.assert_close(full, expect)
    torch.testing.assert_close(picked, expect)


def test_drop_path_drops_whole_samples_in_training_only():
    model = tessera.BeitModel({**SMALL, "use_relative_position_bias": True, "drop_path_rate": 0.5})
    px = torch.randn(4, 3, 16, 16)
    model.eval()
    torch.testing.assert_close(model(px).last_hidden_state, model(px).last_hidden_state)
    model.train()
    torch.manual_seed(0)
    runs = [model(px).last_hidden_state for _ in range(4)]
    assert any(not torch.allclose(runs[0], r) for r in runs[1:])


@pytest.mark.parametrize("call, message", [
    (lambda m: m(torch.randn(2, 3, 30, 30)), "not a multiple of patch_size"),
    (lambda m: m(torch.randn(2, 3, 32, 32), bool_masked_pos=torch.zeros(2, 5, dtype=torch.bool)), r"\[2, 16\]"),
    (lambda m: m(torch.randn(2, 3, 32, 32), bool_masked_pos=torch.zeros(2, 16)), "bool tensor"),
    (lambda m: m(torch.randn(2, 1, 32, 32)), "channels"),
    (lambda m: m(torch.randn(2, 3, 32, 32), labels=torch.zeros(3, dtype=torch.long)), "without bool_masked_pos"),
    (lambda m: m(torch.randn(2, 3, 32, 32), bool_masked_pos=torch.ones(2, 16, dtype=torch.bool),
                 labels=torch.zeros(5, dtype=torch.long)), r"labels must be \[32\]"),
    (lambda m: m(torch.randn(2, 3, 32, 32), bool_masked_pos=torch.ones(2, 16, dtype=torch.bool),
                 labels=torch.full((32,), 512)), r"visual-token ids in \[0, 512\)"),
])
def test_bad_input_is_a_clear_error(fixture_dir, call, message):
    model = tessera.from_pretrained(str(fixture_dir("beit")))
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="vocab_size"):
        tessera.BeitForMaskedImageModeling(dict(vocab_size=0))
    with pytest.raises(ValueError, match="image_size 30 must be a positive multiple of patch_size 8"):
        tessera.BeitForMaskedImageModeling(dict(image_size=30, patch_size=8))
    with pytest.raises(ValueError, match="no mask token"):
        tessera.BeitModel(SMALL | {"use_mask_token": False})(torch.randn(1, 3, 16, 16),
                                                            bool_masked_pos=torch.ones(1, 16, dtype=torch.bool))


def test_the_backbone_loads_from_a_mean_pooling_pretraining_folder_as_transformers(tmp_path):
    """BeitModel from a BeitForMaskedImageModeling folder with use_mean_pooling (the shipped
    variant's setting, transformers' default) was refused for its pooler norm, which the
    pretraining model lacks; transformers initialises it. So does tessera, said, equal outputs."""
    transformers = pytest.importorskip("transformers")
    tiny = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                patch_size=8, vocab_size=64, use_mean_pooling=True)
    torch.manual_seed(0)
    mim = tessera.BeitForMaskedImageModeling(tiny)
    with torch.no_grad():
        for p in mim.parameters():
            p.add_(0.1 * torch.randn_like(p))
    mim.save_pretrained(str(tmp_path))
    with pytest.warns(UserWarning, match="pooler.layernorm.weight, pooler.layernorm.bias are not in this task"):
        ours = tessera.BeitModel.from_pretrained(str(tmp_path))
    theirs = transformers.BeitModel.from_pretrained(str(tmp_path)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixel_values=pixels).pooler_output, theirs(pixel_values=pixels).pooler_output,
                                   atol=1e-5, rtol=0)
