"""torch's own utilities applied to a tessera model, side by side with transformers on the same
weights (../shared/fixtures/hf): pruning, weight norm and spectral norm on a C++ Linear, a
wrapper around a decoder layer during generation, deep copies with hooks, a layer list edited in
Python, a bias set to None, and torch.__future__'s swap-on-conversion. Each either equals
transformers or is refused by name; none may be silently ignored (found by review, stop 38)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import tessera

transformers = pytest.importorskip("transformers")


def _clip(fixture_dir):
    d = str(fixture_dir("clip"))
    return tessera.from_pretrained(d).eval(), transformers.CLIPModel.from_pretrained(d).eval()


def _image(model, px):
    out = model.get_image_features(pixel_values=px)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


PX = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["prune", "weight_norm", "spectral_norm"])
def test_torchs_weight_recomputing_hooks_run_before_cpp(fixture_dir, method):
    """They recompute `weight` in a forward pre-hook, which a C++-run module never calls: the hook
    was refused after the module had been changed (prune left it half-pruned)."""
    outs, grads = [], []
    for model in _clip(fixture_dir):
        fc1 = model.vision_model.encoder.layers[0].mlp.fc1
        torch.manual_seed(0)
        if method == "prune":
            prune.l1_unstructured(fc1, "weight", amount=0.5)
            source = "weight_orig"
        elif method == "weight_norm":
            torch.nn.utils.weight_norm(fc1, "weight")
            source = "weight_g"
        else:
            torch.nn.utils.spectral_norm(fc1, "weight")
            source = "weight_orig"
        with torch.no_grad():
            getattr(fc1, source).mul_(1.5)  # a later change to the source reaches the computed weight
        model.train()
        _image(model, PX).square().sum().backward()
        outs.append(_image(model.eval(), PX).detach())
        grads.append(getattr(fc1, source).grad)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_any_other_hook_on_an_inner_module_is_still_refused(fixture_dir):
    fc1 = _clip(fixture_dir)[0].vision_model.encoder.layers[0].mlp.fc1
    with pytest.raises(RuntimeError, match="would never fire"):
        fc1.register_forward_pre_hook(lambda m, a: None)


def test_generation_runs_a_wrapper_around_a_decoder_layer(fixture_dir):
    """generate() ran the layers straight from C++ unless they had hooks: a wrapper (a steering
    vector here) changed forward but not the generated tokens."""
    d = str(fixture_dir("llama"))
    steer = torch.randn(64, generator=torch.Generator().manual_seed(5)) * 2.0

    class Steer(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            out = self.inner(*args, **kwargs)
            return out + steer if isinstance(out, torch.Tensor) else (out[0] + steer, *out[1:])

    ids = torch.randint(3, 1000, (1, 6), generator=torch.Generator().manual_seed(0))
    answers = []
    for model in (tessera.from_pretrained(d).eval(), transformers.LlamaForCausalLM.from_pretrained(d).eval()):
        layers = model.model.layers
        layers[0] = Steer(layers[0])
        with torch.no_grad():
            answers.append(model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)[0, 6:].tolist())
    ours, theirs = answers
    assert ours == theirs
    model = tessera.from_pretrained(d).eval()
    model.model.layers[0] = Steer(model.model.layers[0])
    assert [int(t) for t in model.stream(ids, max_new_tokens=8, pad_token_id=0)] == theirs


def test_a_deep_copy_keeps_hooks_and_flags_and_refuses_what_it_cannot_hold(fixture_dir):
    model = _clip(fixture_dir)[0]
    model.vision_model.encoder.layers[0].register_forward_hook(lambda m, a, out: out * 2)
    model.vision_model.embeddings.patch_embedding.weight.requires_grad_(False)
    with torch.no_grad():
        want = _image(model, PX)
        copied = copy.deepcopy(model)
        torch.testing.assert_close(_image(copied, PX), want, atol=0, rtol=0)  # the hook came along
    assert {n: p.requires_grad for n, p in copied.named_parameters()} == \
        {n: p.requires_grad for n, p in model.named_parameters()}
    torch.nn.utils.parametrizations.orthogonal(model.vision_model.encoder.layers[1].mlp.fc1, "weight")
    with pytest.raises(TypeError, match=r"1 module\(s\) were added in Python \(vision_model.encoder.layers.1.mlp.fc1"
                                        r".parametrizations\)"):
        copy.deepcopy(model)


@pytest.mark.parametrize("edit", ["append", "pop", "insert"])
def test_a_layer_list_of_another_length_is_refused(fixture_dir, edit):
    """C++ runs the layers it built: an appended layer was silently skipped, a popped one raised
    IndexError (transformers runs the list as it stands)."""
    model = _clip(fixture_dir)[0]
    layers = model.vision_model.encoder.layers
    {"append": lambda: layers.append(copy.deepcopy(layers[0])), "pop": lambda: layers.pop(-1),
     "insert": lambda: layers.insert(0, copy.deepcopy(layers[0]))}[edit]()
    with pytest.raises(ValueError, match=r"vision_model.encoder.layers holds \d layers but its C\+\+ encoder runs 2"):
        _image(model, PX)


def test_a_bias_set_to_none_is_named(fixture_dir):
    model = _clip(fixture_dir)[0]
    model.vision_model.encoder.layers[1].mlp.fc2.bias = None
    with pytest.raises(TypeError, match=r"layers.1.mlp.fc2.bias is NoneType, but the C\+\+ module computes with it"):
        _image(model, PX)


def test_swap_on_conversion_converts_in_place(fixture_dir):
    """With torch.__future__'s swap flag, load_state_dict and from_pretrained failed on every
    parameter (C++ holds each TensorImpl it would swap)."""
    saved = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        ours, theirs = _clip(fixture_dir)
        ours.load_state_dict({k: v.clone() for k, v in theirs.state_dict().items()})
        ours.double()
        assert torch.__future__.get_swap_module_params_on_conversion()
        with torch.no_grad():
            torch.testing.assert_close(_image(ours, PX.double()).float(), _image(theirs, PX), atol=1e-5, rtol=0)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(saved)


@pytest.mark.parametrize("edit", ["pop", "swap"])
def test_generation_refuses_a_layer_list_edited_in_python(fixture_dir, edit):
    """forward refused a popped or reordered layer list, but generate() ran C++'s own list."""
    model = tessera.from_pretrained(str(fixture_dir("llama"))).eval()
    layers = model.model.layers
    if edit == "pop":
        layers.pop(-1)
    else:
        layers[0], layers[1] = layers[1], layers[0]
    ids = torch.tensor([[5, 6, 7]])
    for call in (lambda: model.generate(ids, max_new_tokens=2), lambda: list(model.stream(ids, max_new_tokens=2))):
        with pytest.raises((ValueError, TypeError), match="holds 1 layers|was replaced by"):
            call()


@pytest.mark.parametrize("method", ["prune", "weight_norm"])
def test_a_deep_copy_after_pruning_or_weight_norm_is_refused_by_name(fixture_dir, method):
    model = _clip(fixture_dir)[0]
    fc1 = model.vision_model.encoder.layers[0].mlp.fc1
    prune.l1_unstructured(fc1, "weight", amount=0.5) if method == "prune" else torch.nn.utils.weight_norm(fc1)
    with pytest.raises(TypeError, match=r"parameters differ from its C\+\+ module's \(.*fc1.weight"):
        copy.deepcopy(model)


def test_a_hook_that_holds_the_model_holds_the_copy_after_a_deep_copy(fixture_dir):
    """The hooks were copied before the copy was in deepcopy's memo: a hook holding the model
    built a third model (as torch does, it now holds the copy)."""
    import functools

    model = _clip(fixture_dir)[0]
    seen = []
    model.vision_model.encoder.layers[0].register_forward_hook(functools.partial(lambda m, mod, a, out: seen.append(m), model))
    copied = copy.deepcopy(model)
    with torch.no_grad():
        _image(copied, PX)
    assert seen == [copied]
