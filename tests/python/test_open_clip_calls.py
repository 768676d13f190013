"""open_clip's calls on tessera's CLIPModel, side by side with open_clip's own CLIP of the same
sizes: LiT's lock_image_tower / lock_text_tower leave the same parameters trainable for every
number of unlocked groups, model(image, text) returns what open_clip's returns (tuple, or dict with
output_dict, logit_bias for SigLIP), and the attributes its scripts read agree. Each of these
raised an AttributeError (or, for the call, a message about input_ids) before."""
from __future__ import annotations

import copy

import pytest
import torch

import tessera

open_clip = pytest.importorskip("open_clip")
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg  # noqa: E402

LAYERS = 3


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    theirs = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=LAYERS, width=64, head_width=32, patch_size=8,
                                                         image_size=32),
                  text_cfg=CLIPTextCfg(context_length=16, vocab_size=100, width=64, heads=2, layers=LAYERS))
    tower = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=LAYERS, num_attention_heads=2)
    ours = tessera.CLIPModel({"projection_dim": 32, "vision_config": dict(tower, patch_size=8, image_size=32),
                              "text_config": dict(tower, max_position_embeddings=16, vocab_size=100)})
    return ours, theirs


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("tower,arg", [("image", "unlocked_groups"), ("text", "unlocked_layers")])
def test_locking_a_tower_leaves_what_open_clip_leaves_trainable(pair, tower, arg):
    ours, theirs = pair
    assert _trainable(ours) == _trainable(theirs) > 0  # the same sizes: the counts below compare groups
    counts = set()
    for unlocked in range(LAYERS + 4):  # past the number of groups: everything unlocked, as open_clip
        a, b = copy.deepcopy(ours), copy.deepcopy(theirs)
        getattr(a, f"lock_{tower}_tower")(**{arg: unlocked})
        getattr(b, f"lock_{tower}_tower")(**{arg: unlocked})
        assert _trainable(a) == _trainable(b), unlocked
        counts.add(_trainable(a))
        assert a.logit_scale.requires_grad
    assert len(counts) == LAYERS + 3  # each group unlocks something: the comparison is not vacuous


def test_locking_refuses_what_open_clip_refuses(pair):
    ours, _ = pair
    model = copy.deepcopy(ours)
    with pytest.raises(ValueError, match="freeze_layer_norm=False"):
        model.lock_text_tower(freeze_layer_norm=False)
    with pytest.raises(ValueError, match="unlocked_groups must be >= 0"):
        model.lock_image_tower(-1)
    with pytest.raises(TypeError, match="unlocked_layers must be an int"):
        model.lock_text_tower(1.5)


def test_a_locked_tower_stays_unchanged_by_a_training_step(pair):
    model = copy.deepcopy(pair[0])
    model.lock_image_tower()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    image_features, text_features, scale = model(torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4, 16)))
    logits = scale * image_features @ text_features.T
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    opt.step()
    for name, p in model.named_parameters():
        image_side = name.startswith(("vision_model.", "visual_projection."))
        assert torch.equal(p, before[name]) == image_side, name  # the text side and logit_scale all moved


def test_the_call_returns_what_open_clips_returns(pair):
    ours, theirs = pair
    image, text = torch.randn(2, 3, 32, 32), torch.randint(0, 100, (2, 16))
    want = theirs(image, text)
    got = ours(image, text)
    assert isinstance(got, tuple) and len(got) == len(want) == 3
    image_features, text_features, scale = got
    torch.testing.assert_close(image_features, torch.nn.functional.normalize(ours.get_image_features(image), dim=-1))
    torch.testing.assert_close(text_features, torch.nn.functional.normalize(ours.get_text_features(text), dim=-1))
    torch.testing.assert_close(scale, ours.logit_scale.exp())
    for keywords in (dict(image=image), dict(text=text)):  # one side alone: None in the other's place
        got, want = ours(**keywords), theirs(**keywords)
        assert [x is None for x in got] == [x is None for x in want]
    model = copy.deepcopy(ours)
    model.output_dict = theirs.output_dict = True
    try:
        assert set(model(image, text)) == set(theirs(image, text))
    finally:
        theirs.output_dict = False


def test_the_call_carries_siglips_bias_as_open_clip():
    config = {"projection_dim": 16, "logit_bias_init_value": -10.0,
              "vision_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    patch_size=8, image_size=16),
              "text_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  max_position_embeddings=8, vocab_size=50)}
    siglip = tessera.CLIPModel(config)
    out = siglip(torch.randn(1, 3, 16, 16), torch.randint(0, 50, (1, 8)))
    assert len(out) == 4 and out[3] is siglip.logit_bias and float(out[3].detach()) == -10.0


def test_mixing_the_two_calls_is_refused(pair):
    ours, _ = pair
    image, text = torch.randn(2, 3, 32, 32), torch.randint(0, 100, (2, 16))
    with pytest.raises(TypeError, match="return_loss transformers' arguments"):
        ours(image, text, return_loss=True)
    with pytest.raises(TypeError, match="pixel_values"):
        ours(image=image, pixel_values=image)
    with pytest.raises(TypeError, match="text batch is given twice"):
        ours(image, text, text=text)
    with pytest.raises(ValueError, match="needs an image batch"):
        ours.open_clip_forward()
    out = ours(input_ids=text, pixel_values=image)  # transformers' call is unchanged
    assert out.logits_per_image.shape == (2, 2)


def test_attributes_open_clips_scripts_read(pair):
    ours, theirs = pair
    for name in ("context_length", "vocab_size", "logit_bias", "output_dict"):
        assert getattr(ours, name) == getattr(theirs, name), name
    model, *_ = tessera.create_model_and_transforms("ViT-B-32", output_dict=True)
    assert model.output_dict is True
    assert tessera.create_model("ViT-B-32", output_dict=True).output_dict is True  # open_clip's create_model too
    with pytest.raises(TypeError, match=r"output_dict=...\): open_clip.s flag"):
        tessera.create_model("llama-50m", output_dict=True)
