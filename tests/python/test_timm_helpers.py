"""timm's helpers on tessera's image models, against timm's own models: the input pipeline
`timm.data.resolve_data_config` resolves (CLIP's mean and std, not ImageNet's), and the no-decay
groups of `timm.optim.create_optimizer_v2` (position embeddings, class tokens and relative
position tables kept out of weight decay, as timm's ViT and BEiT keep theirs)."""
from __future__ import annotations

import json

import pytest
from torch import nn

import tessera

timm = pytest.importorskip("timm")
import timm.data  # noqa: E402
import timm.optim  # noqa: E402


def _decayed(model) -> set:
    groups = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05).param_groups
    ids = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def _linear_and_conv_weights(model) -> set:
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def test_clip_resolves_clips_pipeline_as_timms_clip_vit():
    ours = timm.data.resolve_data_config({}, model=tessera.create_model("ViT-B-32"))
    theirs = timm.data.resolve_data_config({}, model=timm.create_model("vit_base_patch32_clip_224.openai",
                                                                       pretrained=False))
    for key in ("input_size", "interpolation", "mean", "std", "crop_mode"):
        assert ours[key] == pytest.approx(theirs[key]) if key in ("mean", "std") else ours[key] == theirs[key], key
    assert ours["crop_pct"] == 1.0  # open_clip's evaluation crop (timm's CLIP config says 0.9)


@pytest.mark.parametrize("name,kwargs", [("vit_base_patch32_clip_224", dict(depth=2, embed_dim=64, num_heads=2)),
                                         ("beit_base_patch16_224", dict(depth=2, embed_dim=64, num_heads=2))])
def test_timm_decays_only_linear_and_conv_weights_as_in_its_own_model(fixture_dir, name, kwargs):
    reference = timm.create_model(name, pretrained=False, **kwargs)
    assert _decayed(reference) == _linear_and_conv_weights(reference)  # the rule timm's own model follows
    ours = (tessera.CLIPVisionModel.from_pretrained(str(fixture_dir("clip"))) if "clip" in name  # timm's is a tower
            else tessera.from_pretrained(str(fixture_dir("beit"))))
    decayed = _decayed(ours)
    # BEiT's pretraining code (unilm) lists pos_embed and cls_token only: its mask token is decayed.
    assert decayed - {"beit.embeddings.mask_token"} == _linear_and_conv_weights(ours)
    assert not any("position_embedding" in n or "cls_token" in n or "relative_position_bias_table" in n
                   for n in decayed)


_PARENTS: list = []  # the parts' models, kept alive while the parts are used


def _towers(fixture_dir):
    """Every image tower, as a model and as a part inside its parent."""
    clip, llava, mae, beit, blip2 = _PARENTS[:] = [tessera.from_pretrained(str(fixture_dir(f)))
                                                   for f in ("clip", "llava", "mae", "beit", "blip2")]
    return {"CLIPVisionModel": tessera.CLIPVisionModel.from_pretrained(str(fixture_dir("clip"))),
            "clip.vision_model": clip.vision_model, "llava.vision_tower": llava.vision_tower,
            "blip2.vision_model": blip2.vision_model, "mae.vit": mae.vit, "beit.beit": beit.beit,
            "BeitModel": tessera.BeitModel.from_pretrained(str(fixture_dir("beit")))}


def test_every_image_tower_resolves_its_familys_pipeline_as_timms_port(fixture_dir):
    """A tower inside a parent (`clip.vision_model`, LLaVA's) and BEiT got ImageNet's mean and std
    at 224 px from timm's resolve_data_config, silently."""
    timm_port = {"clip": "vit_base_patch32_clip_224.openai", "beit": "beit_base_patch16_224.in22k_ft_in22k_in1k",
                 "mae": "vit_base_patch16_224.mae"}
    family = {"CLIPVisionModel": "clip", "clip.vision_model": "clip", "llava.vision_tower": "clip",
              "blip2.vision_model": "clip", "mae.vit": "mae", "beit.beit": "beit", "BeitModel": "beit"}
    sizes = {f: json.loads((fixture_dir(f) / "config.json").read_text()) for f in ("clip", "mae", "beit")}
    sizes = {f: c.get("vision_config", c)["image_size"] for f, c in sizes.items()}
    for name, tower in _towers(fixture_dir).items():
        ours = timm.data.resolve_data_config({}, model=tower)
        theirs = timm.data.resolve_data_config({}, model=timm.create_model(timm_port[family[name]], pretrained=False))
        for key in ("mean", "std", "interpolation"):
            assert ours[key] == pytest.approx(theirs[key]) if key != "interpolation" else ours[key] == theirs[key], \
                (name, key)
        assert ours["input_size"] == (3, sizes[family[name]], sizes[family[name]]), name  # the fixture's, not 224


def test_layer_decay_scales_each_layer_as_in_timms_own_model(fixture_dir):
    """`create_optimizer_v2(..., layer_decay=)` had no effect on tessera's towers (no
    group_matcher): every parameter kept the full learning rate."""
    def scales(model):
        groups = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
        return {id(p): g["lr_scale"] for g in groups.param_groups for p in g["params"]}

    for name, tower in _towers(fixture_dir).items():
        got = scales(tower)
        layers = len(tower.encoder.layers if hasattr(tower.encoder, "layers") else tower.encoder.layer)
        reference = timm.create_model("vit_base_patch16_224", pretrained=False, depth=layers, embed_dim=32,
                                      num_heads=2, num_classes=0)
        assert sorted(set(got.values())) == pytest.approx(sorted(set(scales(reference).values()))), name
        for pname, p in tower.named_parameters():
            if not p.requires_grad:  # MAE's fixed sin-cos table: in no group
                continue
            if ".layer." in pname or ".layers." in pname:
                index = int(pname.split(".")[2])
                assert got[id(p)] == pytest.approx(0.75 ** (layers - 1 - index)), (name, pname)
            elif pname.startswith("embeddings"):  # one step below the first layer, as timm's ViT
                assert got[id(p)] == pytest.approx(0.75 ** layers), (name, pname)


def test_beits_layer_decay_matches_timms_beit_with_mean_pooling_and_a_shared_table(fixture_dir):
    """The shared relative position table goes with the stem and the mean-pooling norm above the
    last layer, as in timm's BEiT: the table was given the full learning rate."""
    config = json.loads((fixture_dir("beit") / "config.json").read_text())
    ours = tessera.BeitModel({**config, "use_shared_relative_position_bias": True, "use_relative_position_bias": False,
                              "use_mean_pooling": True, "use_mask_token": False})
    layers = config["num_hidden_layers"]
    theirs = timm.create_model("beit_base_patch16_224", pretrained=False, depth=layers, num_classes=0,
                               embed_dim=config["hidden_size"], num_heads=config["num_attention_heads"],
                               mlp_ratio=config["intermediate_size"] / config["hidden_size"],
                               use_shared_rel_pos_bias=True, use_rel_pos_bias=False, img_size=config["image_size"],
                               patch_size=config["patch_size"])

    def numel_by_scale(model):
        groups = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
        out = {}
        for g in groups.param_groups:
            out[g["lr_scale"]] = out.get(g["lr_scale"], 0) + sum(p.numel() for p in g["params"])
        return out

    assert numel_by_scale(ours) == numel_by_scale(theirs)
