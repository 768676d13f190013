"""MAE against transformers' ViTMAEForPreTraining: the shared fixture, random configurations side by
side (forward and every gradient), both decoder key layouts, higher resolution, bad input."""
import os
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import tessera

sys.path.insert(0, os.path.dirname(__file__))
from _vit_names import hf_name  # noqa: E402

transformers = pytest.importorskip("transformers")


def test_fixture_parity(fixture_dir):
    d = fixture_dir("mae")
    io = load_file(str(d / "io.safetensors"))
    model = tessera.from_pretrained(str(d))
    assert isinstance(model, tessera.ViTMAEForPreTraining)
    out = model(io["pixel_values"], noise=io["noise"])
    torch.testing.assert_close(out.logits, io["logits"], atol=1e-4, rtol=0)
    assert torch.equal(out.mask, io["mask"]) and torch.equal(out.ids_restore, io["ids_restore"])
    torch.testing.assert_close(out.loss.reshape(1), io["loss"], atol=1e-5, rtol=0)


CONFIGS = [
    dict(norm_pix_loss=False, qkv_bias=True, mask_ratio=0.75),
    dict(norm_pix_loss=True, qkv_bias=False, mask_ratio=0.5, hidden_act="gelu_new"),
    dict(norm_pix_loss=True, qkv_bias=True, mask_ratio=0.6, num_channels=1, decoder_num_hidden_layers=2),
]


@pytest.mark.parametrize("extra", CONFIGS)
def test_side_by_side_with_transformers(extra, tmp_path):
    config = {**dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=24,
                     patch_size=6, decoder_hidden_size=24, decoder_num_hidden_layers=1, decoder_num_attention_heads=3,
                     decoder_intermediate_size=40), **extra}
    torch.manual_seed(0)
    hf = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**config)).train()
    with torch.no_grad():  # non-trivial values everywhere (HF zero-inits some)
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path)).train()
    c = config.get("num_channels", 3)
    px, noise = torch.randn(3, c, 24, 24), torch.rand(3, 16)
    a, b = hf(px, noise=noise), ours(px, noise=noise)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-4)
    assert torch.equal(b.mask, a.mask) and torch.equal(b.ids_restore, a.ids_restore)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=1e-5)
    a.loss.backward()
    b.loss.backward()
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        q = theirs[hf_name(name)]
        assert p.requires_grad == q.requires_grad, name
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_original_decoder_layout_loads_and_saves_loadable_by_transformers(fixture_dir, tmp_path):
    d = fixture_dir("mae")
    state = load_file(str(d / "model.safetensors"))
    v4 = {k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."): v for k, v in state.items()}
    assert any(k.startswith("decoder.decoder_layers.0.") for k in v4)
    (tmp_path / "v4").mkdir()
    save_file(v4, str(tmp_path / "v4" / "model.safetensors"))
    (tmp_path / "v4" / "config.json").write_text((d / "config.json").read_text())
    io = load_file(str(d / "io.safetensors"))
    model = tessera.from_pretrained(str(tmp_path / "v4"))
    torch.testing.assert_close(model(io["pixel_values"], noise=io["noise"]).logits, io["logits"], atol=1e-4, rtol=0)
    model.save_pretrained(str(tmp_path / "out"))
    hf = transformers.ViTMAEForPreTraining.from_pretrained(str(tmp_path / "out"))
    torch.testing.assert_close(hf(io["pixel_values"], noise=io["noise"]).logits, io["logits"], atol=1e-4, rtol=0)


def test_interpolate_pos_encoding_matches_transformers(fixture_dir):
    d = fixture_dir("mae")
    hf = transformers.ViTMAEForPreTraining.from_pretrained(str(d)).eval()
    ours = tessera.from_pretrained(str(d))
    px, noise = torch.randn(2, 3, 48, 48), torch.rand(2, 36)
    a = hf(px, noise=noise, interpolate_pos_encoding=True)
    b = ours(px, noise=noise, interpolate_pos_encoding=True)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.unpatchify(ours.patchify(px, True), (48, 48)), px)


def test_fresh_model_uses_fixed_sincos_tables_and_random_masking():
    model = tessera.ViTMAEForPreTraining(dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=32, image_size=8, patch_size=2, decoder_hidden_size=8,
                                              decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                              decoder_intermediate_size=16))
    pos = model.vit.embeddings.position_embeddings
    assert not pos.requires_grad and torch.equal(pos[0, 0], torch.zeros(16))
    # Row 1 is patch (row 0, col 1): [sin(col) | cos(col) | sin(row) | cos(row)] as the MAE release.
    omega = 1.0 / 10000 ** (torch.arange(4, dtype=torch.float64) / 4)
    expect = torch.cat([torch.sin(omega), torch.cos(omega), torch.zeros(4), torch.ones(4)]).float()
    torch.testing.assert_close(pos[0, 2], expect)
    out = model(torch.randn(2, 3, 8, 8))
    assert out.mask.sum(1).tolist() == [12.0, 12.0]  # int(16 * 0.25) = 4 kept of 16


@pytest.mark.parametrize("call, message", [
    (lambda m: m(torch.randn(2, 3, 30, 30)), "not a multiple of patch_size"),
    (lambda m: m(torch.randn(2, 3, 32, 32), noise=torch.rand(2, 5)), r"noise must be \[2, 16\]"),
    (lambda m: m(torch.randn(2, 3, 32, 32), noise=torch.ones(2, 16, dtype=torch.long)), "floating"),
    (lambda m: m(torch.randn(2, 1, 32, 32)), "channels"),
    (lambda m: m(torch.randn(2, 3, 48, 48)), "interpolate_pos_encoding=True"),
])
def test_bad_input_is_a_clear_error(fixture_dir, call, message):
    model = tessera.from_pretrained(str(fixture_dir("mae")))
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="image_size 30 must be a positive multiple of patch_size 8"):
        tessera.ViTMAEForPreTraining(dict(image_size=30, patch_size=8))
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        tessera.ViTMAEForPreTraining(dict(mask_ratio=1.0))
