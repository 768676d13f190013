"""timm's feature API (forward_features, forward_intermediates) on every encoder, also inside a
loaded parent: the node's result equals the standalone tower's on the same weights and
transformers' hidden_states (output_hidden_states=True); gradients reach the parent's
parameters, layer hooks fire, bad indices are refused by name, rebound parameters are honoured.
References: transformers 5.17 on the fixtures in ../shared/fixtures/hf."""
from __future__ import annotations

import copy
import gc
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import tessera
from tessera.cpp_module import CppLayer

transformers = pytest.importorskip("transformers")


def _pixels(channels=3, size=32):
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))


def _own(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# ---- one case per (parent, node): the tessera parent and tower, transformers' reference ---------
def _clip_vision(d):
    parent = tessera.from_pretrained(str(d))
    hf = transformers.CLIPModel.from_pretrained(str(d)).eval().vision_model
    px = _pixels()
    return SimpleNamespace(parent=parent, path="vision_model", tower=tessera.CLIPVisionModel.from_pretrained(str(d)),
                           inputs=(px,), hf=lambda: hf(px, output_hidden_states=True).hidden_states,
                           hf_norm=hf.post_layernorm)


def _clip_text(d):
    parent = tessera.from_pretrained(str(d))
    hf = transformers.CLIPModel.from_pretrained(str(d)).eval().text_model
    io = load_file(str(d / "io.safetensors"))
    ids, mask = io["input_ids"], io["attention_mask"]
    return SimpleNamespace(parent=parent, path="text_model", tower=tessera.CLIPTextModel.from_pretrained(str(d)),
                           inputs=(ids, mask), hf=lambda: hf(ids, mask, output_hidden_states=True).hidden_states,
                           hf_norm=hf.final_layer_norm)


def _llava(d):
    parent = tessera.from_pretrained(str(d))
    tower = tessera.CLIPVisionModel(parent.config["vision_config"])
    tower.load_state_dict(_own(parent.state_dict(), "vision_tower."))
    tower.eval()
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(d)).eval().model.vision_tower
    px = _pixels()
    return SimpleNamespace(parent=parent, path="vision_tower", tower=tower, inputs=(px,),
                           hf=lambda: hf(px, output_hidden_states=True).hidden_states,
                           hf_norm=hf.post_layernorm)


def _blip2(cls_name):
    def make(d):
        parent = tessera.from_pretrained(str(d))
        hf = getattr(transformers, cls_name).from_pretrained(str(d)).eval().vision_model
        px = _pixels()
        return SimpleNamespace(parent=parent, path="vision_model", tower=tessera.Blip2VisionModel.from_pretrained(str(d)),
                               inputs=(px,), hf=lambda: hf(px, output_hidden_states=True).hidden_states,
                               hf_norm=hf.post_layernorm)
    return make


def _mae(d):
    parent = tessera.from_pretrained(str(d))
    tower = tessera.ViTMAEModel(parent.config)
    tower.load_state_dict(_own(parent.state_dict(), "vit."))
    tower.eval()
    # transformers keeps every patch with mask_ratio 0, in the order of its noise: increasing
    # noise keeps them in place, which is what the (unmasked) feature API computes.
    hf = transformers.ViTMAEModel.from_pretrained(str(d), mask_ratio=0.0).eval()
    px = _pixels()
    noise = torch.arange(hf.config.image_size ** 2 // hf.config.patch_size ** 2, dtype=torch.float).expand(2, -1)
    return SimpleNamespace(parent=parent, path="vit", tower=tower, inputs=(px,), call={"noise": noise}, hf_call=False,
                           hf=lambda: hf(px, noise=noise, output_hidden_states=True).hidden_states,
                           hf_norm=hf.layernorm)


def _beit(d):
    parent = tessera.from_pretrained(str(d))
    tower = tessera.BeitModel(parent.config, add_pooling_layer=False)
    tower.load_state_dict(_own(parent.state_dict(), "beit."))
    tower.eval()
    hf = transformers.BeitForMaskedImageModeling.from_pretrained(str(d)).eval().beit
    px = _pixels()
    return SimpleNamespace(parent=parent, path="beit", tower=tower, inputs=(px,),
                           hf=lambda: hf(px, output_hidden_states=True).hidden_states, hf_norm=hf.layernorm)


CASES = {
    "clip.vision_model": ("clip", _clip_vision),
    "clip.text_model": ("clip", _clip_text),
    "llava.vision_tower": ("llava", _llava),
    "blip2.vision_model": ("blip2", _blip2("Blip2ForConditionalGeneration")),
    "blip2_itr.vision_model": ("blip2_itr", _blip2("Blip2ForImageTextRetrieval")),
    "mae.vit": ("mae", _mae),
    "beit.beit": ("beit", _beit),
}


@pytest.fixture(params=list(CASES))
def case(request, fixture_dir):
    family, make = CASES[request.param]
    c = make(fixture_dir(family))
    c.node = c.parent.get_submodule(c.path)
    c.call, c.hf_call = getattr(c, "call", {}), getattr(c, "hf_call", True)  # a call's extra arguments
    c.layers = [m for m in c.node.modules() if isinstance(m, CppLayer)]
    return c


def test_a_loaded_parent_offers_the_feature_api_on_its_node(case):
    assert callable(case.node.forward_intermediates) and callable(case.node.forward_features)
    with pytest.raises(RuntimeError, match="run by C\\+\\+ inside its parent"):
        case.node.embeddings(*case.inputs)  # a part that is no model of its own still refuses


def test_calling_the_node_is_the_towers_forward_as_transformers_calls_it(case):
    """`clip.vision_model(pixel_values)` as in transformers: the standalone tower's forward on
    the parent's tensors (it refused before); gradients reach every parameter it uses."""
    with torch.no_grad():
        tower = case.tower(*case.inputs, output_hidden_states=True, **case.call)
        want = case.hf()
    case.parent.zero_grad()
    ours = case.node(*case.inputs, output_hidden_states=True, **case.call)
    assert type(ours) is type(tower) and list(ours) == list(tower)
    for key in tower:
        torch.testing.assert_close(ours[key], tower[key], atol=1e-5, rtol=0)  # with grad vs no_grad kernels
    if case.hf_call:  # MAE's reference runs unmasked; its masked call is compared in test_mae
        for h, ref in zip(ours.hidden_states, want, strict=True):
            torch.testing.assert_close(h, ref, atol=1e-4, rtol=0)
    weights = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=weights)).sum() for t in (ours.last_hidden_state,
                                                                           ours.get("pooler_output")) if t is not None)
    loss.backward()
    for name, p in case.node.named_parameters():
        if p.requires_grad and "mask_token" not in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_checkpointing_the_node_alone(case):
    """timm's `set_grad_checkpointing` on a tower inside its parent: that tower's forward saves
    less for backward (its layers keep their inputs only), the gradients are unchanged, a deep
    copy of the parent keeps it, and the parent's own switch sets every part again."""
    def run(parent, saved=None):
        torch.manual_seed(0)  # BEiT's drop path: the same masks in every run
        parent.zero_grad()
        node = parent.get_submodule(case.path)
        params = {p.untyped_storage().data_ptr() for p in parent.parameters()}

        def pack(t):  # the storages the forward keeps for backward (parameters aside)
            if saved is not None and t.untyped_storage().data_ptr() not in params:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = node(*case.inputs, **case.call).last_hidden_state
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
        return {n: p.grad.clone() for n, p in node.named_parameters() if p.grad is not None}

    def saved_bytes(parent):
        saved = {}
        run(parent, saved)
        return sum(saved.values())

    case.parent.train()
    try:
        plain, plain_bytes = run(case.parent), saved_bytes(case.parent)
        case.node.set_grad_checkpointing(True)
        checkpointed, checkpointed_bytes = run(case.parent), saved_bytes(case.parent)
        assert checkpointed_bytes < plain_bytes
        for name, g in plain.items():  # to the gradient's scale (BEiT's reach 1e5 here)
            assert (checkpointed[name] - g).abs().max() <= 1e-5 * g.abs().max(), name
        assert saved_bytes(copy.deepcopy(case.parent)) == checkpointed_bytes
        case.parent.set_gradient_checkpointing(False)
        assert saved_bytes(case.parent) == plain_bytes
        assert saved_bytes(copy.deepcopy(case.parent)) == plain_bytes
    finally:
        case.parent.set_gradient_checkpointing(False)
        case.parent.eval()


def test_timms_head_attributes(case):
    if not isinstance(case.node, tessera.models.features.VisionFeatures):
        pytest.skip("timm's head attributes are an image model's")
    with torch.no_grad():
        pooled = case.node.forward_head(case.node.forward_features(*case.inputs))
    assert case.node.num_features == case.node.embed_dim == case.tower.num_features == pooled.shape[-1]
    assert case.node.num_classes == 0 and isinstance(case.node.get_classifier(), nn.Identity)
    case.node.reset_classifier(0)  # timm's "features only" holds already
    with pytest.raises(NotImplementedError, match="nn.Linear\\(model.num_features, n\\)"):
        case.node.reset_classifier(10)


def test_node_equals_the_standalone_tower_and_transformers(case):
    n = len(case.layers)
    with torch.no_grad():
        want = case.hf()
        final, picked = case.node.forward_intermediates(*case.inputs)
        tower_final, tower_picked = case.tower.forward_intermediates(*case.inputs)
        normed = case.node.forward_intermediates(*case.inputs, indices=[-1, 0], norm=True, intermediates_only=True)
        last_n = case.node.forward_intermediates(*case.inputs, indices=1, intermediates_only=True)
        features = case.node.forward_features(*case.inputs)
        hf_final = case.hf_norm(want[-1])
    assert len(picked) == n and len(want) == n + 1
    torch.testing.assert_close(final, tower_final, atol=0, rtol=0)
    for ours, tower, ref in zip(picked, tower_picked, want[1:]):  # layer k is hidden_states[k + 1]
        torch.testing.assert_close(ours, tower, atol=0, rtol=0)
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(final, hf_final, atol=1e-4, rtol=0)
    torch.testing.assert_close(features, final, atol=0, rtol=0)
    torch.testing.assert_close(normed[0], hf_final, atol=1e-4, rtol=0)
    torch.testing.assert_close(normed[1], case.hf_norm(want[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(last_n[0], want[-1], atol=1e-4, rtol=0)


def test_gradients_reach_the_parents_parameters(case):
    case.parent.zero_grad()
    f = case.node.forward_features(*case.inputs)
    # Weighted: the plain sum of a LayerNorm's outputs does not depend on its input.
    (f * torch.randn(f.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    params = dict(case.parent.named_parameters())
    unused = ("mask_token",)  # BEiT's: features use no mask
    for name, p in case.node.named_parameters():
        full = f"{case.path}.{name}"
        if not p.requires_grad or any(u in name for u in unused):
            continue
        assert params[full] is p
        assert p.grad is not None and p.grad.abs().sum() > 0, full


def test_layer_hooks_fire_and_stop_early_runs_no_later_layer(case):
    calls = []
    handles = [layer.register_forward_hook(lambda m, a, out, i=i: calls.append(i)) for i, layer in enumerate(case.layers)]
    try:
        with torch.no_grad():
            (first,) = case.node.forward_intermediates(*case.inputs, indices=[0], stop_early=True,
                                                       intermediates_only=True)
            assert calls == [0]
            case.node.forward_features(*case.inputs)
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, *range(len(case.layers))]


def test_a_bad_index_is_a_value_error_naming_it(case):
    n = len(case.layers)
    with pytest.raises(ValueError, match=f"layer index {n + 3} is out of range for {n} layers"):
        case.node.forward_intermediates(*case.inputs, indices=[0, n + 3])
    with pytest.raises(ValueError, match=f"layer index {-n - 1} is out of range"):
        case.node.forward_intermediates(*case.inputs, indices=[-n - 1])
    with pytest.raises(ValueError, match=f"indices={n + 1} asks for the last {n + 1} layers"):
        case.node.forward_intermediates(*case.inputs, indices=n + 1)
    with pytest.raises(TypeError, match="indices must be"):
        case.node.forward_intermediates(*case.inputs, indices=[0.5])


class _Features(nn.Module):
    """A plain module around the parent, so functional_call can rebind the parent's parameters
    while the node's feature method runs."""

    def __init__(self, parent, path):
        super().__init__()
        self.parent, self.path = parent, path

    def forward(self, *inputs):
        return self.parent.get_submodule(self.path).forward_intermediates(*inputs, indices=[-1], norm=True)


def test_parameters_rebound_by_functional_call_are_honoured(case):
    wrapper = _Features(case.parent, case.path)
    node_params = {n: p for n, p in case.node.named_parameters() if p.requires_grad}
    scaled = {f"parent.{case.path}.{n}": p.detach() * 1.5 for n, p in node_params.items()}
    with torch.no_grad():
        before = wrapper(*case.inputs)
        got = torch.func.functional_call(wrapper, scaled, case.inputs)
        saved = {n: p.clone() for n, p in node_params.items()}
        for p in node_params.values():  # the same change, in place: what C++ must have used
            p.mul_(1.5)
        want = wrapper(*case.inputs)
        for n, p in node_params.items():
            p.copy_(saved[n])
        after = wrapper(*case.inputs)
    assert not torch.allclose(got[0], before[0])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(after, before, atol=0, rtol=0)  # the originals are back in C++


# ---- the mechanism itself ---------------------------------------------------------------------
def test_model_and_node_share_one_implementation():
    from tessera.models import beit, blip2, clip, mae

    pairs = [(tessera.CLIPVisionModel, "CLIPVisionTransformer", clip.CLIPVisionFeatures),
             (tessera.CLIPTextModel, "CLIPTextTransformer", clip.CLIPTextFeatures),
             (tessera.Blip2VisionModel, "Blip2VisionModel", blip2.Blip2VisionFeatures),
             (tessera.ViTMAEModel, "ViTMAEModel", mae.ViTMAEFeatures),
             (tessera.BeitModel, "BeitModel", beit.BeitFeatures)]
    for model_cls, node_name, mixin in pairs:
        node_cls = tessera.cpp_module.node_class(node_name)
        assert issubclass(model_cls, mixin) and issubclass(node_cls, mixin)
        assert model_cls.forward_intermediates is node_cls.forward_intermediates is mixin.forward_intermediates
        assert model_cls.forward is node_cls.forward is mixin.forward


def test_node_methods_reach_classes_made_before_and_refuse_a_second_mixin():
    from tessera.cpp_module import node_class, node_methods

    early = node_class("FeatureApiTestNode")

    @node_methods("FeatureApiTestNode")
    class Extra:
        def hello(self):
            return "hi"

    assert early().hello() == "hi" and node_class("FeatureApiTestNode") is early
    with pytest.raises(ValueError, match="already take their methods from"):
        node_methods("FeatureApiTestNode")(type("Other", (), {}))


def test_a_node_of_a_freed_model_or_a_copied_node_refuses(fixture_dir):
    d = fixture_dir("clip")
    px = _pixels()
    model = tessera.from_pretrained(str(d))
    orphan_copy = copy.deepcopy(model.vision_model)
    with pytest.raises(RuntimeError, match="not the module at vision_model"):
        orphan_copy.forward_features(px)
    with pytest.raises(RuntimeError, match="not the module at vision_model"):
        orphan_copy(px)
    clone = copy.deepcopy(model)  # a copied model mirrors its own C++ module: its nodes work
    with torch.no_grad():
        torch.testing.assert_close(clone.vision_model.forward_features(px), model.vision_model.forward_features(px))
    tower = model.vision_model
    del model, clone
    gc.collect()
    with pytest.raises(RuntimeError, match="no longer exists"):
        tower.forward_features(px)
    with pytest.raises(RuntimeError, match="no longer exists"):
        tower(px)

