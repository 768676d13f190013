"""A part of a model that is a model of its own is called as transformers calls it: BLIP-2's
`qformer` and the `language_model` of LLaVA and BLIP-2 run their standalone class's forward on
the parent's tensors, equal to transformers' same part (the image towers: test_feature_api).
These calls were refused before ("run by C++ inside its parent")."""
from __future__ import annotations

import copy

import pytest
import torch

import tessera

transformers = pytest.importorskip("transformers")


def _weighted_backward(*outputs):
    g = torch.Generator().manual_seed(1)
    sum((t * torch.randn(t.shape, generator=g)).sum() for t in outputs).backward()


def _assert_gradients_equal(ours, theirs):
    """Every trainable parameter's gradient equals transformers' (to its scale); most are nonzero
    (a zero one is zero in transformers too: the Q-Former's text FFN, which queries never use,
    and its first norm's weight, as the fixture's queries are constant rows)."""
    reference = dict(theirs.named_parameters())
    nonzero = 0
    for name, p in ours.named_parameters():
        want = reference[name].grad
        assert p.grad is not None and want is not None, name
        assert (p.grad - want).abs().max() <= 1e-4 * max(want.abs().max(), 1e-3), name
        nonzero += bool(p.grad.abs().sum() > 0)
    assert nonzero > len(reference) // 2


def test_blip2_qformer_is_called_as_transformers_calls_it(fixture_dir):
    d = str(fixture_dir("blip2"))
    ours = tessera.from_pretrained(d)
    theirs = transformers.Blip2ForConditionalGeneration.from_pretrained(d).eval()
    size = ours.config["vision_config"]["image_size"]
    px = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image = theirs.vision_model(px).last_hidden_state
    want = theirs.qformer(theirs.query_tokens.expand(2, -1, -1), encoder_hidden_states=image).last_hidden_state
    got = ours.qformer(ours.query_tokens.expand(2, -1, -1), encoder_hidden_states=image)
    torch.testing.assert_close(got.last_hidden_state, want, atol=1e-4, rtol=0)
    _weighted_backward(got.last_hidden_state)
    _weighted_backward(want)
    _assert_gradients_equal(ours.qformer, theirs.qformer)
    torch.testing.assert_close(ours.query_tokens.grad, theirs.query_tokens.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family,cls", [("llava", "LlavaForConditionalGeneration"),
                                        ("blip2", "Blip2ForConditionalGeneration")])
def test_the_language_model_is_called_as_transformers_calls_it(fixture_dir, family, cls):
    d = str(fixture_dir(family))
    ours = tessera.from_pretrained(d)
    theirs = getattr(transformers, cls).from_pretrained(d).eval()
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    # transformers 5 holds the LM's body and its head apart (LLaVA); BLIP-2 keeps a LlamaForCausalLM
    lm = theirs.language_model if family == "blip2" else None
    body = lm.model if lm is not None else theirs.model.language_model
    head = lm.lm_head if lm is not None else theirs.lm_head
    want = head(body(input_ids=ids).last_hidden_state)
    got = ours.language_model(input_ids=ids, labels=ids)
    torch.testing.assert_close(got.logits, want, atol=1e-4, rtol=0)
    reference = torch.nn.functional.cross_entropy(want[:, :-1].reshape(-1, want.shape[-1]), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(got.loss, reference, atol=1e-5, rtol=1e-5)
    got.loss.backward()
    reference.backward()
    _assert_gradients_equal(ours.language_model, torch.nn.ModuleDict({"model": body, "lm_head": head}))


def test_a_part_without_a_model_of_its_own_still_refuses(fixture_dir):
    model = tessera.from_pretrained(str(fixture_dir("llava")))
    with pytest.raises(RuntimeError, match="run by C\\+\\+ inside its parent"):
        model.language_model.model(torch.zeros(1, 3, dtype=torch.long))


def test_a_part_answers_return_dict_as_the_model_does(fixture_dir):
    model = tessera.from_pretrained(str(fixture_dir("clip")))
    tower = tessera.CLIPVisionModel.from_pretrained(str(fixture_dir("clip")))
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model.vision_model(px, return_dict=False), tower(px, return_dict=False)
    assert isinstance(got, tuple) and len(got) == len(want) == 2
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert type(model.vision_model(px, return_dict=True)).__name__ == "BaseModelOutputWithPooling"


def test_a_parts_handle_cannot_be_wrapped_again(fixture_dir):
    """A second CppModule over a part would take over its layers' callers: the model's hooks and
    FSDP wrappers on them would be bypassed without a word."""
    model = tessera.from_pretrained(str(fixture_dir("clip")))
    with pytest.raises(RuntimeError, match="already a part of a live CLIPModel"):
        tessera.CppModule(model.vision_model._cpp)
    with pytest.raises(RuntimeError, match="already wrapped by a live CLIPModel"):
        tessera.CppModule(model.cpp)


def test_a_part_converts_in_place_under_torchs_swap_flag(fixture_dir):
    model = tessera.from_pretrained(str(fixture_dir("clip")))
    saved = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model.vision_model.double()
    finally:
        torch.__future__.set_swap_module_params_on_conversion(saved)
    px = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    assert model.vision_model(px).pooler_output.dtype == torch.float64


def test_a_parts_checkpointing_switch_survives_copies_and_lora(fixture_dir):
    from tessera.lora import apply_lora

    def saved_tensors(model):
        count = [0]
        px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.autograd.graph.saved_tensors_hooks(lambda t: count.__setitem__(0, count[0] + 1) or t, lambda t: t):
            model.vision_model(px).last_hidden_state.sum()
        return count[0]

    model = tessera.from_pretrained(str(fixture_dir("clip"))).train()
    plain = saved_tensors(model)
    model.set_gradient_checkpointing(True)
    model.vision_model.set_grad_checkpointing(False)  # the part's switch, set after the model's
    assert saved_tensors(model) == saved_tensors(copy.deepcopy(model)) == plain
    model.vision_model.set_grad_checkpointing(True)
    checkpointed = saved_tensors(model)
    assert checkpointed < plain
    apply_lora(model, ["q_proj"], r=2)  # the tree is mirrored again: the switch goes with it
    assert saved_tensors(model) == saved_tensors(copy.deepcopy(model)) < plain
