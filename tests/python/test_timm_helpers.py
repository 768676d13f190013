"""timm's helpers on tessera's image models, against timm's own models: the input pipeline
`timm.data.resolve_data_config` resolves (CLIP's mean and std, not ImageNet's), and the no-decay
groups of `timm.optim.create_optimizer_v2` (position embeddings, class tokens and relative
position tables kept out of weight decay, as timm's ViT and BEiT keep theirs)."""
from __future__ import annotations

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
