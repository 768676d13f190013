"""A LLaVA projector type's Python hooks (models/projectors.py): each names a projector the C++
registry builds, a name takes one set, the planner and `init.projector` reach a type only through
them (a type without hooks is refused by name, a user's hooks are used), and LLaVA reads the
tower's post-norm exactly when its projector says so."""
import pytest
import torch

import tessera
from tessera.models import projectors
from tessera.models.projectors import ProjectorHooks, projector_hooks, register_projector_hooks
from tessera.plan.lm import llava_shape

from test_llava import _config


def test_every_hooked_type_is_a_registered_projector():
    assert {"linear", "mlp2x_gelu", "qformer"} <= set(projectors._HOOKS) <= set(tessera.models.llava.list_projectors())


def _without_resampler_hooks(monkeypatch):
    """`resampler` as an extension's projector is before it registers hooks: built in C++, no
    Python hooks (tessera's own are taken away for the test)."""
    monkeypatch.setattr(projectors, "_HOOKS", {k: v for k, v in projectors._HOOKS.items() if k != "resampler"})


def test_a_name_takes_one_set_of_hooks(monkeypatch):
    _without_resampler_hooks(monkeypatch)
    same = projector_hooks("qformer", "test")
    register_projector_hooks("qformer", ProjectorHooks(same.plan_params, same.plan_activations, same.init_from_run))
    with pytest.raises(ValueError, match="projector 'qformer' already has Python hooks"):
        register_projector_hooks("qformer", ProjectorHooks(lambda c, p: ([], []), same.plan_activations))
    # Hooks that are callables of another kind register and re-register (a reload) as well.
    import functools

    partial = functools.partial(same.plan_params)
    register_projector_hooks("resampler", ProjectorHooks(partial, same.plan_activations))
    register_projector_hooks("resampler", ProjectorHooks(functools.partial(same.plan_params), same.plan_activations))
    with pytest.raises(ValueError, match="no projector 'mlp2x_gleu' is registered in C\\+\\+ .*import the extension"):
        register_projector_hooks("mlp2x_gleu", same)


def test_the_planner_reaches_a_projector_only_through_its_hooks(monkeypatch):
    """A projector registered in C++ without hooks: refused by name, then planned through a user's."""
    _without_resampler_hooks(monkeypatch)
    c = tessera.LlavaForConditionalGeneration.resolve_config(
        _config(projector_type="resampler", projector_num_queries=4, vision_feature_layer=-1))
    with pytest.raises(ValueError, match="tessera plan: projector_type 'resampler' has no Python hooks.*"
                                         "register_projector_hooks"):
        llava_shape(c, 40, 1, 8, [], [])
    model = tessera.LlavaForConditionalGeneration(c)
    own = [(n, p.numel()) for n, p in model.named_parameters() if n.startswith("multi_modal_projector.")]
    seen = []

    def activations(shape, config, images, patches):
        seen.append((images, patches))
        shape.other_activations_per_sample += 1000

    register_projector_hooks("resampler", ProjectorHooks(lambda config, prefix: (own, []), activations))
    shape = llava_shape(c, 40, 2, 8, [], [])
    assert shape.params() == sum(p.numel() for p in model.parameters())
    assert seen == [(2, (c["vision_config"]["image_size"] // c["vision_config"]["patch_size"]) ** 2)]
    frozen = llava_shape(c, 40, 2, 8, ["^vision_tower\\.", "^multi_modal_projector\\."], [])
    assert len(seen) == 1 and frozen.other_activations_per_sample == shape.other_activations_per_sample - 1000


@pytest.mark.parametrize("kind, normed", [("mlp2x_gelu", False), ("linear", False), ("resampler", False),
                                          ("qformer", True)])
def test_the_tower_post_norm_is_read_when_the_projector_says_so(kind, normed):
    extra = dict(projector_num_queries=3) if kind in ("resampler", "qformer") else {}
    if kind == "qformer":
        extra["projector_config"] = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                         intermediate_size=48)
    model = tessera.LlavaForConditionalGeneration(_config(projector_type=kind, vision_feature_layer=-1, **extra))
    assert model.reads_normed_features() is normed
    ids = torch.tensor([[1] + [model.config["image_token_index"]] * model.config["image_seq_length"] + [5, 6]])
    pixels = torch.randn(1, 3, model.config["vision_config"]["image_size"], model.config["vision_config"]["image_size"])
    model.vision_tower.post_layernorm.weight.grad = None
    model(ids, pixel_values=pixels).logits.sum().backward()
    grad = model.vision_tower.post_layernorm.weight.grad
    assert (grad is not None and bool(grad.abs().sum() > 0)) is normed
