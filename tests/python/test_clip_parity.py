"""CLIP parity with transformers 5.17 (CLIPModel, CLIPVisionModel, CLIPTextModel) and open_clip.

Tolerances (fp32, CPU):
- outputs: max abs diff <= 1e-4 (DESIGN.md, Tests);
- gradients: max |g - g_hf| <= 1e-4 * max(1, max |g_hf|) per parameter, after `loss.backward()`.
"""
from __future__ import annotations

import json

import pytest
import torch

import tessera
from _clip_reference import (assert_close, assert_grads_match, hf_clip, one_thread, pixel_batch, text_batch,
                             through_disk, tiny_config)

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

ATOL = 1e-4
IO_OUTPUTS = ["image_embeds", "text_embeds", "logits_per_image", "loss", "vision_last_hidden_state",
              "text_last_hidden_state"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


# --------------------------------------------------------------------------- golden fixture


def _fixture_io(fixture_dir):
    d = fixture_dir("clip")
    return d, safetensors_torch.load_file(str(d / "io.safetensors"))


def _clip_outputs(out):
    return {
        "image_embeds": out.image_embeds,
        "text_embeds": out.text_embeds,
        "logits_per_image": out.logits_per_image,
        "loss": out.loss,
        "vision_last_hidden_state": out.vision_model_output.last_hidden_state,
        "text_last_hidden_state": out.text_model_output.last_hidden_state,
    }


@pytest.mark.parametrize("loader", ["tessera.from_pretrained", "CLIPModel.from_pretrained"])
def test_fixture_parity(fixture_dir, loader):
    d, io = _fixture_io(fixture_dir)
    load = tessera.from_pretrained if loader == "tessera.from_pretrained" else tessera.CLIPModel.from_pretrained
    model = load(str(d))
    assert isinstance(model, tessera.CLIPModel)
    with torch.no_grad():
        out = model(input_ids=io["input_ids"], pixel_values=io["pixel_values"],
                    attention_mask=io["attention_mask"], return_loss=True)
    got = _clip_outputs(out)
    for name in IO_OUTPUTS:
        want = io[name]
        # HF documents loss as shape (1,) and stored it so; the value is a scalar either way.
        have = got[name].reshape(want.shape) if name == "loss" else got[name]
        assert have.dtype == torch.float32
        assert_close(have, want, ATOL, name)


# --------------------------------------------------------------------------- random configs vs HF

# Each entry varies sizes, heads, layers, patch/image size, projection_dim, activation, and the
# eos convention (an ordinary id, an eos that is also the pad id, and the legacy id 2 that pools
# at the largest token id).
RANDOM_CONFIGS = {
    "quick_gelu-eos_id": tiny_config(
        text=dict(vocab_size=80, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=12, hidden_act="quick_gelu", eos_token_id=79, bos_token_id=78),
        vision=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=3,
                    image_size=24, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=16),
    "gelu-legacy_eos2": tiny_config(
        text=dict(vocab_size=50, hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=6,
                  max_position_embeddings=10, hidden_act="gelu", eos_token_id=2, bos_token_id=1, pad_token_id=1),
        vision=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                    image_size=30, patch_size=5, num_channels=1, hidden_act="gelu"),
        projection_dim=8, logit_scale_init_value=1.5),
    "gelu_new-eos_is_pad": tiny_config(
        text=dict(vocab_size=40, hidden_size=24, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                  max_position_embeddings=9, hidden_act="gelu_new", eos_token_id=39, pad_token_id=39,
                  bos_token_id=38, layer_norm_eps=1e-6),
        vision=dict(hidden_size=40, intermediate_size=72, num_hidden_layers=2, num_attention_heads=5,
                    image_size=28, patch_size=14, hidden_act="gelu_new", layer_norm_eps=1e-6),
        projection_dim=12),
    "mixed_acts": tiny_config(
        text=dict(vocab_size=70, hidden_size=16, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
                  max_position_embeddings=16, hidden_act="gelu", eos_token_id=69),
        vision=dict(hidden_size=48, intermediate_size=32, num_hidden_layers=1, num_attention_heads=4,
                    image_size=32, patch_size=4, hidden_act="quick_gelu"),
        projection_dim=24),
}


def _compare_clip(tm, hf, ids, mask, px, only_kept_tokens=False):
    out_t = tm(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    out_h = hf(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    for name in ["loss", "logits_per_image", "logits_per_text", "text_embeds", "image_embeds"]:
        assert_close(out_t[name], out_h[name], ATOL, name)
    # transformers 5 reports the towers' pooler_output after the projections.
    assert_close(out_t.vision_model_output.pooler_output, out_h.vision_model_output.pooler_output, ATOL,
                 "vision pooler_output")
    assert_close(out_t.text_model_output.pooler_output, out_h.text_model_output.pooler_output, ATOL,
                 "text pooler_output")
    keep = mask.bool() if only_kept_tokens else torch.ones_like(mask, dtype=torch.bool)
    # With left padding, rows of padded queries attend to nothing; what they hold is arbitrary
    # (and never read), so only the kept positions are compared.
    assert_close(out_t.text_model_output.last_hidden_state[keep], out_h.text_model_output.last_hidden_state[keep],
                 ATOL, "text last_hidden_state")
    assert_close(out_t.vision_model_output.last_hidden_state, out_h.vision_model_output.last_hidden_state, ATOL,
                 "vision last_hidden_state")
    out_t.loss.backward()
    out_h.loss.backward()
    assert_grads_match(tm, hf, rel=1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", sorted(RANDOM_CONFIGS))
def test_random_config_matches_transformers(tmp_path, name, attn):
    config = RANDOM_CONFIGS[name]
    hf = hf_clip(config, attn, seed=len(name))
    tm = through_disk(hf, tmp_path)
    assert isinstance(tm, tessera.CLIPModel)
    ids, mask = text_batch(config["text_config"], batch=4, seq_len=config["text_config"]["max_position_embeddings"])
    assert (mask == 0).any(), "the batch must exercise padding"
    px = pixel_batch(config["vision_config"], batch=4)
    _compare_clip(tm, hf, ids, mask, px)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_left_padding_matches_transformers(tmp_path, attn):
    config = RANDOM_CONFIGS["quick_gelu-eos_id"]
    hf = hf_clip(config, attn, seed=3)
    tm = through_disk(hf, tmp_path)
    ids, mask = text_batch(config["text_config"], batch=3, seq_len=12, pad="left")
    px = pixel_batch(config["vision_config"], batch=3)
    _compare_clip(tm, hf, ids, mask, px, only_kept_tokens=True)


def test_no_attention_mask_and_shorter_text(tmp_path):
    config = RANDOM_CONFIGS["gelu-legacy_eos2"]
    hf = hf_clip(config, "sdpa", seed=5)
    tm = through_disk(hf, tmp_path)
    ids, _ = text_batch(config["text_config"], batch=2, seq_len=6)  # shorter than max_position_embeddings
    px = pixel_batch(config["vision_config"], batch=2)
    with torch.no_grad():
        a = tm(input_ids=ids, pixel_values=px)
        b = hf(input_ids=ids, pixel_values=px)
    assert a.loss is None
    for name in ["logits_per_image", "text_embeds", "image_embeds"]:
        assert_close(a[name], b[name], ATOL, name)
    assert_close(tm.get_text_features(ids), hf.get_text_features(input_ids=ids).pooler_output, ATOL, "text features")
    assert_close(tm.get_image_features(px), hf.get_image_features(pixel_values=px).pooler_output, ATOL,
                 "image features")


def test_attention_mask_dtypes_match_transformers(tmp_path):
    config = RANDOM_CONFIGS["quick_gelu-eos_id"]
    hf = hf_clip(config, "sdpa", seed=9)
    tm = through_disk(hf, tmp_path)
    ids, mask = text_batch(config["text_config"], batch=3, seq_len=12)
    with torch.no_grad():
        want = hf.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        for m in (mask, mask.bool(), mask.int(), mask.float()):
            assert_close(tm.get_text_features(ids, m), want, ATOL, f"mask {m.dtype}")


def test_output_hidden_states_match(tmp_path):
    config = RANDOM_CONFIGS["gelu_new-eos_is_pad"]
    hf = hf_clip(config, "eager", seed=7)
    tm = through_disk(hf, tmp_path)
    ids, mask = text_batch(config["text_config"], batch=3, seq_len=9)
    px = pixel_batch(config["vision_config"], batch=3)
    with torch.no_grad():
        a = tm(input_ids=ids, pixel_values=px, attention_mask=mask, output_hidden_states=True)
        b = hf(input_ids=ids, pixel_values=px, attention_mask=mask, output_hidden_states=True)
    for tower, layers in [("vision_model_output", 2), ("text_model_output", 1)]:
        hs_t, hs_h = a[tower].hidden_states, b[tower].hidden_states
        assert isinstance(hs_t, tuple) and len(hs_t) == len(hs_h) == layers + 1
        for i, (x, y) in enumerate(zip(hs_t, hs_h)):
            assert_close(x, y, ATOL, f"{tower}.hidden_states[{i}]")


def test_clip_output_tower_pooler_is_projected_as_in_transformers_5(tmp_path):
    config = RANDOM_CONFIGS["quick_gelu-eos_id"]
    hf = hf_clip(config, "sdpa", seed=4)
    tm = through_disk(hf, tmp_path)
    ids, mask = text_batch(config["text_config"], batch=2, seq_len=12)
    px = pixel_batch(config["vision_config"], batch=2)
    with torch.no_grad():
        a = tm(input_ids=ids, pixel_values=px, attention_mask=mask)
        b = hf(input_ids=ids, pixel_values=px, attention_mask=mask)
    assert_close(a.vision_model_output.pooler_output, b.vision_model_output.pooler_output, ATOL, "vision pooler")
    assert_close(a.text_model_output.pooler_output, b.text_model_output.pooler_output, ATOL, "text pooler")


# --------------------------------------------------------------------------- single towers


VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=24,
              patch_size=8, hidden_act="quick_gelu", num_channels=3)
TEXT = dict(vocab_size=60, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=10, hidden_act="gelu", eos_token_id=59, bos_token_id=58, pad_token_id=0)


def _hf_vision(attn="sdpa", **overrides):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(11)
    return CLIPVisionModel._from_config(CLIPVisionConfig(**{**VISION, **overrides}), attn_implementation=attn).eval()


def _hf_text(attn="sdpa", **overrides):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(12)
    return CLIPTextModel._from_config(CLIPTextConfig(**{**TEXT, **overrides}), attn_implementation=attn).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_vision_model_matches_transformers(tmp_path, attn):
    hf = _hf_vision(attn)
    tm = through_disk(hf, tmp_path)
    assert isinstance(tm, tessera.CLIPVisionModel)
    assert set(tm.state_dict()) == set(hf.state_dict())
    px = pixel_batch(VISION, batch=3)
    a = tm(px, output_hidden_states=True)
    b = hf(pixel_values=px, output_hidden_states=True)
    assert_close(a.last_hidden_state, b.last_hidden_state, ATOL, "last_hidden_state")
    assert_close(a.pooler_output, b.pooler_output, ATOL, "pooler_output")
    assert isinstance(a.hidden_states, tuple) and len(a.hidden_states) == len(b.hidden_states) == 3
    for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        assert_close(x, y, ATOL, f"hidden_states[{i}]")
    a.pooler_output.square().sum().backward()
    b.pooler_output.square().sum().backward()
    assert_grads_match(tm, hf)


@pytest.mark.parametrize("size", [(40, 40), (16, 32), (32, 24)], ids=["up", "non-square", "mixed"])
def test_vision_interpolate_pos_encoding_matches_transformers(tmp_path, size):
    hf = _hf_vision()
    tm = through_disk(hf, tmp_path)
    px = pixel_batch(VISION, batch=2, size=size)
    a = tm(px, interpolate_pos_encoding=True)
    b = hf(pixel_values=px, interpolate_pos_encoding=True)
    assert_close(a.last_hidden_state, b.last_hidden_state, ATOL, "last_hidden_state")
    assert_close(a.pooler_output, b.pooler_output, ATOL, "pooler_output")


def test_clip_model_interpolate_pos_encoding_matches_transformers(tmp_path):
    config = RANDOM_CONFIGS["quick_gelu-eos_id"]
    hf = hf_clip(config, "sdpa", seed=2)
    tm = through_disk(hf, tmp_path)
    px = pixel_batch(config["vision_config"], batch=2, size=(40, 32))
    ids, mask = text_batch(config["text_config"], batch=2, seq_len=12)
    with torch.no_grad():
        a = tm(input_ids=ids, pixel_values=px, attention_mask=mask, interpolate_pos_encoding=True)
        b = hf(input_ids=ids, pixel_values=px, attention_mask=mask, interpolate_pos_encoding=True)
        assert_close(a.logits_per_image, b.logits_per_image, ATOL, "logits_per_image")
        assert_close(tm.get_image_features(px, interpolate_pos_encoding=True),
                     hf.get_image_features(pixel_values=px, interpolate_pos_encoding=True).pooler_output, ATOL,
                     "image features")


def test_vision_interpolate_same_patch_count_non_square(tmp_path):
    hf = _hf_vision()
    tm = through_disk(hf, tmp_path)
    px = pixel_batch(VISION, batch=2, size=(8, 72))
    with torch.no_grad():
        a = tm(px, interpolate_pos_encoding=True)
        b = hf(pixel_values=px, interpolate_pos_encoding=True)
    assert_close(a.last_hidden_state, b.last_hidden_state, ATOL, "last_hidden_state")


def test_vision_wrong_size_same_patch_count_is_rejected(tmp_path):
    hf = _hf_vision()
    tm = through_disk(hf, tmp_path)
    px = pixel_batch(VISION, batch=1, size=(8, 72))
    with pytest.raises(ValueError):
        hf(pixel_values=px)  # the reference refuses it
    try:
        tm(px)
    except ValueError as e:
        assert "8" in str(e) and "72" in str(e)
    else:
        raise AssertionError("tessera accepted an 8x72 image on a 24x24 model without interpolate_pos_encoding")


@pytest.mark.parametrize("eos", [59, 2], ids=["eos_id", "legacy_eos2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_text_model_matches_transformers(tmp_path, eos, attn):
    hf = _hf_text(attn, eos_token_id=eos)
    tm = through_disk(hf, tmp_path)
    assert isinstance(tm, tessera.CLIPTextModel)
    assert set(tm.state_dict()) == set(hf.state_dict())
    ids, mask = text_batch({**TEXT, "eos_token_id": eos}, batch=4, seq_len=10)
    a = tm(ids, attention_mask=mask, output_hidden_states=True)
    b = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert_close(a.last_hidden_state, b.last_hidden_state, ATOL, "last_hidden_state")
    assert_close(a.pooler_output, b.pooler_output, ATOL, "pooler_output")
    assert isinstance(a.hidden_states, tuple) and len(a.hidden_states) == len(b.hidden_states) == 3
    for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        assert_close(x, y, ATOL, f"hidden_states[{i}]")
    (a.pooler_output * torch.linspace(-1, 1, a.pooler_output.shape[-1])).sum().backward()
    (b.pooler_output * torch.linspace(-1, 1, b.pooler_output.shape[-1])).sum().backward()
    assert_grads_match(tm, hf)


@pytest.mark.parametrize("cls_name", ["CLIPVisionModel", "CLIPTextModel"])
def test_tower_loads_transformers_4_layout(tmp_path, cls_name):
    """transformers 4.x wrote tower checkpoints with a `vision_model.` / `text_model.` prefix on
    every key; transformers 5 drops it. Both layouts load, to the same weights."""
    hf = _hf_vision() if cls_name == "CLIPVisionModel" else _hf_text()
    hf.save_pretrained(str(tmp_path))
    prefix = "vision_model." if cls_name == "CLIPVisionModel" else "text_model."
    plain = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    assert not any(k.startswith(prefix) for k in plain)
    safetensors_torch.save_file({prefix + k: v for k, v in plain.items()}, str(tmp_path / "model.safetensors"),
                                metadata={"format": "pt"})
    model = tessera.from_pretrained(str(tmp_path))
    assert type(model).__name__ == cls_name
    ours = model.state_dict()
    assert set(ours) == set(plain)
    for k, v in plain.items():
        assert torch.equal(ours[k], v), k


def test_text_model_int32_ids_match_int64():
    tm = tessera.CLIPTextModel(TEXT)
    ids, mask = text_batch(TEXT, batch=2, seq_len=10)
    with torch.no_grad():
        a = tm(ids, attention_mask=mask).pooler_output
        b = tm(ids.int(), attention_mask=mask).pooler_output
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- save / load round trip


def test_round_trip_is_bit_exact_and_readable_by_transformers(fixture_dir, tmp_path):
    d, io = _fixture_io(fixture_dir)
    first = tessera.from_pretrained(str(d))
    first.save_pretrained(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    second = tessera.from_pretrained(str(tmp_path))
    a, b = first.state_dict(), second.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k

    # The file holds exactly the original checkpoint's tensors, bit for bit.
    original = safetensors_torch.load_file(str(d / "model.safetensors"))
    written = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    assert set(original) == set(written)
    for k in original:
        assert torch.equal(original[k], written[k]), k

    # transformers reads tessera's folder and reproduces the golden outputs.
    from transformers import CLIPModel

    hf = CLIPModel.from_pretrained(str(tmp_path)).eval()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "clip" and config["architectures"] == ["CLIPModel"]
    with torch.no_grad():
        out = hf(input_ids=io["input_ids"], pixel_values=io["pixel_values"], attention_mask=io["attention_mask"],
                 return_loss=True)
    got = _clip_outputs(out)
    for name in IO_OUTPUTS:
        assert_close(got[name].reshape(io[name].shape), io[name], ATOL, name)


@pytest.mark.parametrize("cls_name", ["CLIPVisionModel", "CLIPTextModel"])
def test_tower_round_trip_readable_by_transformers(tmp_path, cls_name):
    import transformers as tr

    config = VISION if cls_name == "CLIPVisionModel" else TEXT
    model = getattr(tessera, cls_name)(dict(config))
    model.save_pretrained(str(tmp_path))
    hf = getattr(tr, cls_name).from_pretrained(str(tmp_path)).eval()
    again = tessera.from_pretrained(str(tmp_path))
    assert type(again) is type(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    with torch.no_grad():
        if cls_name == "CLIPVisionModel":
            px = pixel_batch(VISION, batch=2)
            a, b = model(px), hf(pixel_values=px)
        else:
            ids, mask = text_batch(TEXT, batch=2, seq_len=10)
            a, b = model(ids, attention_mask=mask), hf(input_ids=ids, attention_mask=mask)
    assert_close(a.pooler_output, b.pooler_output, ATOL, "pooler_output")


# --------------------------------------------------------------------------- named models


def test_list_models_has_open_clip_names():
    names = tessera.list_models()
    for name in ["ViT-B-32", "ViT-B-16", "ViT-L-14"]:
        assert name in names


def _open_clip_param_count(name: str) -> int:
    open_clip = pytest.importorskip("open_clip")
    # Build open_clip's model class from its own config on the meta device: the same modules
    # `open_clip.create_model(name)` makes, without allocating or initialising ~400M weights.
    # (create_model itself cannot target meta: it moves the model with .to()).
    cfg = open_clip.get_model_config(name)
    assert cfg is not None, name
    with torch.device("meta"):
        model = open_clip.model.CLIP(**cfg)
    return sum(p.numel() for p in model.parameters())


def test_open_clip_meta_count_is_create_model_count():
    """Pins the meta-device shortcut above to open_clip.create_model on one (small) name."""
    open_clip = pytest.importorskip("open_clip")
    model = open_clip.create_model("ViT-B-32")
    assert sum(p.numel() for p in model.parameters()) == _open_clip_param_count("ViT-B-32")


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16", "ViT-L-14"])
def test_named_model_param_count_equals_open_clip(name):
    """Equal totals: open_clip's extra state (the text `attn_mask`) is a buffer, not a parameter,
    and its `positional_embedding` tensors have HF counterparts (`position_embedding.weight`)
    of the same size, so the two parameter totals agree exactly."""
    model = tessera.create_model(name)
    assert isinstance(model, tessera.CLIPModel)
    ours = sum(p.numel() for p in model.parameters())
    assert ours == _open_clip_param_count(name)

    # Every tensor also has the shape transformers gives it for the same config.
    from transformers import CLIPConfig, CLIPModel

    with torch.device("meta"):
        hf = CLIPModel(CLIPConfig(**tessera.get_model_config(name)))
    want = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert have == want


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16", "ViT-L-14"])
def test_named_model_activation_follows_open_clip(name):
    """open_clip's plain names use exact GELU; the `-quickgelu` names set quick_gelu."""
    open_clip = pytest.importorskip("open_clip")
    for variant, act in [(name, "gelu"), (name + "-quickgelu", "quick_gelu")]:
        assert bool(open_clip.get_model_config(variant).get("quick_gelu", False)) == (act == "quick_gelu")
        config = tessera.get_model_config(variant)
        assert config["text_config"]["hidden_act"] == act
        assert config["vision_config"]["hidden_act"] == act


def test_create_model_with_overrides_matches_transformers(tmp_path):
    """A shrunken ViT-B-32 from the registry saves a folder transformers loads and agrees with."""
    overrides = {"projection_dim": 16,
                 "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "vocab_size": 49408},
                 "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "image_size": 64}}
    model = tessera.create_model("ViT-B-32", config_overrides=overrides).eval()
    model.save_pretrained(str(tmp_path))
    from transformers import CLIPModel

    hf = CLIPModel.from_pretrained(str(tmp_path)).eval()
    assert hf.config.vision_config.patch_size == 32 and hf.config.text_config.hidden_act == "gelu"
    ids = torch.full((2, 77), 0, dtype=torch.long)
    ids[:, 0] = 49406
    ids[0, 1:4] = torch.tensor([320, 1125, 49407])
    ids[1, 1:6] = torch.tensor([320, 1125, 539, 2368, 49407])
    mask = (torch.arange(77) < torch.tensor([[4], [6]])).long()
    px = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
        b = hf(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    for name in ["loss", "logits_per_image", "text_embeds", "image_embeds"]:
        assert_close(a[name], b[name], ATOL, name)


@pytest.mark.parametrize("eos", [59, 2], ids=["eos_id", "legacy_eos2"])
def test_trimmed_trailing_padding_gives_transformers_features_of_the_padded_batch(tmp_path, eos):
    """The CLIP task cuts the columns after every row's end-of-text before the forward: causal
    attention keeps them from the pooled token, so the features and their gradients are
    transformers' on the full padded batch."""
    from tessera.train.clip_task import trim_trailing_padding

    hf = _hf_text("sdpa", eos_token_id=eos)
    tm = through_disk(hf, tmp_path)
    end = 59  # the end-of-text id in both configs (the largest id for the legacy pooling)
    ids = torch.zeros(3, 10, dtype=torch.long)
    for row, n in enumerate((3, 6, 4)):
        ids[row, :n] = torch.randint(1, 58, (n,), generator=torch.Generator().manual_seed(row))
        ids[row, n] = end
    trimmed = trim_trailing_padding(ids)
    assert trimmed.shape == (3, 7) and torch.equal(trimmed, ids[:, :7])
    ours, theirs = tm(trimmed).pooler_output, hf(input_ids=ids).pooler_output
    assert_close(ours, theirs, ATOL, "pooler_output")
    ours.sum().backward()
    theirs.sum().backward()
    assert_grads_match(tm, hf)
    assert torch.equal(trim_trailing_padding(torch.zeros(2, 4, dtype=torch.long)), torch.zeros(2, 4, dtype=torch.long))


def test_a_logit_bias_makes_clip_a_sigmoid_loss_model(fixture_dir, tmp_path):
    """`logit_bias_init_value` (tessera's key; open_clip's init_logit_bias) adds SigLIP's learned
    bias: logits are scale * cos + b and return_loss is SiglipModel's loss, checked against the
    formula and tessera.losses.SigLipLoss. transformers' CLIPModel reads the folder without the
    bias (it has no such parameter): its logits are ours less b."""
    import json
    import math

    import transformers
    from safetensors.torch import load_file

    folder = fixture_dir("clip")
    config = {**json.loads((folder / "config.json").read_text()), "logit_bias_init_value": -10.0,
              "logit_scale_init_value": math.log(10)}
    model = tessera.CLIPModel(config)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    io = load_file(str(folder / "io.safetensors"))
    n = min(len(io["input_ids"]), len(io["pixel_values"]))
    inputs = dict(input_ids=io["input_ids"][:n], attention_mask=io["attention_mask"][:n], pixel_values=io["pixel_values"][:n])
    out = model(**inputs, return_loss=True)
    cos = out.text_embeds @ out.image_embeds.T
    torch.testing.assert_close(out.logits_per_text, cos * model.logit_scale.exp() + model.logit_bias)
    signs = 2 * torch.eye(n) - 1
    torch.testing.assert_close(out.loss, -torch.nn.functional.logsigmoid(signs * out.logits_per_text).sum(-1).mean())
    ref = tessera.losses.SigLipLoss()(out.image_embeds, out.text_embeds, model.logit_scale.exp(), model.logit_bias)
    torch.testing.assert_close(out.loss, ref)  # open_clip's normalisation (sum / B) is the same number
    out.loss.backward()
    assert model.logit_bias.grad is not None and model.logit_bias.grad.abs() > 0
    model.save_pretrained(str(tmp_path))
    again = tessera.from_pretrained(str(tmp_path))
    assert again.config["logit_bias_init_value"] == -10.0 and torch.equal(again.logit_bias, model.logit_bias)
    theirs = transformers.CLIPModel.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(**inputs).logits_per_text + model.logit_bias, again(**inputs).logits_per_text,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_a_tower_with_its_projection_equals_transformers_from_either_folder(tmp_path, kind):
    """transformers' CLIPTextModelWithProjection / CLIPVisionModelWithProjection (an
    AttributeError before): from a CLIPModel folder (that tower and its projection) and from their
    own folder, embeddings equal transformers'; saved by tessera, transformers loads them."""
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=16)
    torch.manual_seed(0)
    full = transformers.CLIPModel(transformers.CLIPConfig(
        projection_dim=16, text_config=dict(tower, vocab_size=99, max_position_embeddings=12),
        vision_config=dict(tower, image_size=16, patch_size=8)))
    full.save_pretrained(tmp_path / "clip")
    name = "CLIPTextModelWithProjection" if kind == "text" else "CLIPVisionModelWithProjection"
    ours_cls, theirs_cls = getattr(tessera, name), getattr(transformers, name)
    x = torch.randint(0, 99, (2, 7)) if kind == "text" else torch.randn(2, 3, 16, 16)
    key = "text_embeds" if kind == "text" else "image_embeds"
    theirs = theirs_cls.from_pretrained(str(tmp_path / "clip")).eval()
    want = theirs(x)[key]
    torch.testing.assert_close(ours_cls.from_pretrained(str(tmp_path / "clip"))(x)[key], want, atol=1e-6, rtol=0)
    theirs.save_pretrained(tmp_path / "own")
    ours = ours_cls.from_pretrained(str(tmp_path / "own"))
    torch.testing.assert_close(ours(x)[key], want, atol=1e-6, rtol=0)
    ours.save_pretrained(str(tmp_path / "ours"))
    back = theirs_cls.from_pretrained(str(tmp_path / "ours")).eval()
    torch.testing.assert_close(back(x)[key], want, atol=1e-6, rtol=0)
