"""timm's `forward_head` on every image tower, standalone and inside a loaded parent:
`forward_head(forward_features(x))` equals transformers' pooler_output on the same weights (CLIP,
BLIP-2 and BEiT with and without mean pooling), the class token for MAE (timm's MAE ViTs pool with
'token'; transformers' ViTMAEModel has none), and the plain patch mean for BEiT's MIM encoder,
which has no pooler. References: transformers 5.17 on ../shared/fixtures/hf and on random BEiT
configurations written by transformers."""
from __future__ import annotations

import pytest
import torch

import tessera

transformers = pytest.importorskip("transformers")


def _pixels(size=32):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def _head(tower, px):
    with torch.no_grad():
        return tower.forward_head(tower.forward_features(px), pre_logits=True)


# (fixture, tessera: a class loaded standalone or a parent's node path, transformers: class, tower path)
@pytest.mark.parametrize("family, ours, hf_class, hf_path", [
    ("clip", "CLIPVisionModel", "CLIPVisionModel", ""),
    ("clip", "vision_model", "CLIPModel", "vision_model"),
    ("llava", "vision_tower", "LlavaForConditionalGeneration", "model.vision_tower"),
    ("blip2", "Blip2VisionModel", "Blip2ForConditionalGeneration", "vision_model"),
    ("blip2", "vision_model", "Blip2ForConditionalGeneration", "vision_model"),
    ("blip2_itr", "vision_model", "Blip2ForImageTextRetrieval", "vision_model"),
])
def test_pooled_features_equal_transformers_pooler_output(fixture_dir, family, ours, hf_class, hf_path):
    d = str(fixture_dir(family))
    hf = getattr(transformers, hf_class).from_pretrained(d).eval().get_submodule(hf_path)
    if hasattr(tessera, ours):
        tower = getattr(tessera, ours).from_pretrained(d)
    else:
        tower = tessera.from_pretrained(d).get_submodule(ours)
    px = _pixels()
    with torch.no_grad():
        want = hf(pixel_values=px).pooler_output
    torch.testing.assert_close(_head(tower, px), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mean_pooling", [True, False])
def test_beit_pools_as_its_pooler(tmp_path, mean_pooling):
    config = transformers.BeitConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     image_size=32, patch_size=8, use_mean_pooling=mean_pooling)
    torch.manual_seed(0)
    hf = transformers.BeitModel(config).eval()
    with torch.no_grad():  # a pooler norm that is not the identity it starts as
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    px = _pixels()
    with torch.no_grad():
        want = hf(pixel_values=px).pooler_output
    torch.testing.assert_close(_head(tessera.BeitModel.from_pretrained(str(tmp_path)), px), want, atol=1e-5, rtol=0)


def test_mae_and_beit_mim_encoders_pool_as_timm(fixture_dir):
    px = _pixels()
    mae = tessera.from_pretrained(str(fixture_dir("mae"))).vit
    features = mae.forward_features(px)
    torch.testing.assert_close(mae.forward_head(features), features[:, 0], atol=0, rtol=0)
    mim = tessera.from_pretrained(str(fixture_dir("beit")))
    features = mim.beit.forward_features(px)  # no pooler in the MIM model: timm's 'avg' without fc_norm
    want = features[:, 1:].mean(1) if mim.config["use_mean_pooling"] else features[:, 0]
    torch.testing.assert_close(mim.beit.forward_head(features), want, atol=0, rtol=0)


def test_gradients_flow_to_the_pooler(tmp_path):
    config = transformers.BeitConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                     image_size=16, patch_size=8, use_mean_pooling=True)
    transformers.BeitModel(config).save_pretrained(tmp_path)
    beit = tessera.BeitModel.from_pretrained(str(tmp_path))
    beit.forward_head(beit.forward_features(_pixels(16))).square().sum().backward()
    assert beit.pooler.layernorm.weight.grad is not None and beit.pooler.layernorm.weight.grad.abs().sum() > 0
    assert beit.embeddings.cls_token.grad is not None


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, "D"), (2, 0, "D")])
def test_features_of_another_shape_are_refused_by_name(fixture_dir, shape):
    clip = tessera.from_pretrained(str(fixture_dir("clip"))).vision_model
    width = clip.forward_features(_pixels()).shape[-1]
    shape = [width if s == "D" else s for s in shape]
    with pytest.raises(ValueError, match=rf"\[batch, tokens >= 1, {width}\].*\[{', '.join(map(str, shape))}\]"):
        clip.forward_head(torch.zeros(shape))
    with pytest.raises(TypeError, match="features must be a torch.Tensor"):
        clip.forward_head([[0.0]])
