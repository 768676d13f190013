"""The contract every registered model class keeps, parametrised over tessera.registry: on a tiny
config it gives finite outputs, every parameter gets a gradient, activation checkpointing changes
neither outputs nor gradients, its state_dict keys are transformers', hooks on its layers fire and
functional_call reaches its C++ forward. A family adds its tiny config and inputs to EXAMPLES."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import tessera
from tessera import registry
from tessera.models.outputs import ModelOutput
from _clip_reference import pixel_batch, text_batch, tiny_config

transformers = pytest.importorskip("transformers")

_CLIP = tiny_config(text=dict(num_hidden_layers=2), vision=dict(num_hidden_layers=2))
_MAE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=16,
            patch_size=4, decoder_hidden_size=16, decoder_num_hidden_layers=2, decoder_num_attention_heads=2,
            decoder_intermediate_size=32, mask_ratio=0.5, norm_pix_loss=True)

_BEIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=16,
             patch_size=4, vocab_size=20, use_mask_token=True, use_relative_position_bias=True, drop_path_rate=0.1)

def _beit_mask():
    return torch.arange(16).repeat(3, 1) % 3 == 0  # 6 masked patches per image: 18 labels


_VQKD = dict(encoder_config=dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64), codebook_size=16, codebook_dim=8,
             teacher_dim=12)

_LLAMA = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=32)

_LLAVA = dict(text_config=_LLAMA, image_token_index=40, vision_feature_layer=-1,
              vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                                 image_size=16, patch_size=8))

_QFORMER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, encoder_hidden_size=24,
                vocab_size=50, max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
_BLIP2_VISION = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, image_size=16,
                     patch_size=8, initializer_range=0.02)
_BLIP2 = dict(vision_config=_BLIP2_VISION, qformer_config=_QFORMER, text_config=dict(_LLAMA, model_type="llama"),
              num_query_tokens=4,
              image_token_index=49)
_BLIP2_ITR = dict(_BLIP2, qformer_config=dict(_QFORMER, use_qformer_text_input=True), image_text_hidden_size=16,
                  image_token_index=None)


def _text(cfg):
    ids, mask = text_batch(cfg, batch=3, seq_len=cfg["max_position_embeddings"])
    return dict(input_ids=ids, attention_mask=mask)


# architecture -> (tiny config, inputs for that config, the scalar a training step would minimise
#                  [, regexes of parameters those inputs leave unread])
EXAMPLES = {
    "CLIPModel": (_CLIP, lambda c: dict(**_text(c["text_config"]), pixel_values=pixel_batch(c["vision_config"], batch=3),
                                        return_loss=True), lambda out: out.loss),
    "CLIPVisionModel": (_CLIP["vision_config"], lambda c: dict(pixel_values=pixel_batch(c, batch=3)),
                        lambda out: out.last_hidden_state.pow(2).mean() + out.pooler_output.sum()),
    "CLIPTextModel": (_CLIP["text_config"], _text, lambda out: out.last_hidden_state.pow(2).mean()),
    "CLIPTextModelWithProjection": ({**_CLIP["text_config"], "projection_dim": 8}, _text,
                                    lambda out: out.last_hidden_state.pow(2).mean() + out.text_embeds.sum()),
    "CLIPVisionModelWithProjection": ({**_CLIP["vision_config"], "projection_dim": 8},
                                      lambda c: dict(pixel_values=pixel_batch(c, batch=3)),
                                      lambda out: out.last_hidden_state.pow(2).mean() + out.image_embeds.sum()),
    # noise fixes MAE's random masking, so two forwards see the same patches.
    "ViTMAEForPreTraining": (_MAE, lambda c: dict(pixel_values=torch.randn(3, 3, 16, 16), noise=torch.rand(3, 16)),
                             lambda out: out.loss),
    "ViTMAEModel": (_MAE, lambda c: dict(pixel_values=torch.randn(3, 3, 16, 16), noise=torch.rand(3, 16)),
                    lambda out: out.last_hidden_state.pow(2).mean()),
    "BeitForMaskedImageModeling": (_BEIT, lambda c: dict(pixel_values=torch.randn(3, 3, 16, 16), bool_masked_pos=_beit_mask(),
                                                         labels=torch.arange(18) % 20), lambda out: out.loss),
    # the mask token is used only where bool_masked_pos is set; the pooler only through pooler_output.
    "BeitModel": (_BEIT, lambda c: dict(pixel_values=torch.randn(3, 3, 16, 16), bool_masked_pos=_beit_mask()),
                  lambda out: out.last_hidden_state.pow(2).mean() + out.pooler_output.sum()),
    "LlamaForCausalLM": (_LLAMA, lambda c: dict(input_ids=torch.arange(30).view(3, 10) % 50,
                                                labels=torch.arange(30).view(3, 10) % 50), lambda out: out.loss),
    "LlavaForConditionalGeneration": (
        _LLAVA, lambda c: dict(input_ids=torch.cat([torch.full((2, 4), 40), torch.arange(10).repeat(2, 1)], 1),
                               pixel_values=torch.randn(2, 3, 16, 16),
                               labels=torch.cat([torch.full((2, 4), -100), torch.arange(10).repeat(2, 1)], 1)),
        lambda out: out.loss),
    "Blip2VisionModel": (_BLIP2_VISION, lambda c: dict(pixel_values=torch.randn(3, 3, 16, 16)),
                         lambda out: out.last_hidden_state.pow(2).mean() + out.pooler_output.sum()),
    "Blip2QFormerModel": (_QFORMER, lambda c: dict(query_embeds=torch.randn(3, 4, 32),
                                                   encoder_hidden_states=torch.randn(3, 5, 24)),
                          lambda out: out.last_hidden_state.pow(2).mean()),
    "Blip2ForConditionalGeneration": (
        _BLIP2, lambda c: dict(input_ids=torch.cat([torch.full((2, 4), 49), torch.arange(6).repeat(2, 1)], 1),
                               pixel_values=torch.randn(2, 3, 16, 16),
                               labels=torch.cat([torch.full((2, 4), -100), torch.arange(6).repeat(2, 1)], 1)),
        lambda out: out.loss),
    # ITM: one pass of [queries; text] through the Q-Former (ITC's two passes would call each layer
    # twice); its ITC projections are unread here.
    "Blip2ForImageTextRetrieval": (
        _BLIP2_ITR, lambda c: dict(pixel_values=torch.randn(2, 3, 16, 16), input_ids=torch.arange(12).view(2, 6) + 3,
                                   attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
                                   use_image_text_matching_head=True),
        lambda out: out.logits_per_image.sum(), (r"^vision_projection\.", r"^text_projection\.")),
    # Stage 1 reduced to its ITC pass (ITM and ITG run the layers again: hooks would fire 3 times);
    # the ITM and LM heads are then unread.
    "Blip2ForPretraining": (
        _BLIP2_ITR, lambda c: dict(image_embeds=torch.randn(3, 5, 24), input_ids=torch.arange(18).view(3, 6) % 40 + 6,
                                   attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 6]),
                                   bos_token_id=5, itm=False, itg=False),
        lambda out: out.loss_itc, (r"^itm_head\.", r"^cls\.")),
    "VQKD": (_VQKD, lambda c: dict(pixel_values=torch.randn(3, 3, 16, 16), target=torch.randn(3, 16, 12)),
             lambda out: out.loss),
}


def _arch(cls) -> str:
    return cls.architecture or cls.__name__


def test_every_registered_class_has_an_example():
    missing = [_arch(c) for c in registry.registered_classes() if _arch(c) not in EXAMPLES]
    assert not missing, f"registered classes with no tiny example in test_contract.py EXAMPLES: {missing}"


@pytest.fixture(params=registry.registered_classes(), ids=_arch)
def example(request):
    cls = request.param
    if _arch(cls) not in EXAMPLES:
        pytest.fail(f"registered class {cls.__name__} (architecture {_arch(cls)!r}) has no tiny example in "
                    f"test_contract.py EXAMPLES")
    config, inputs, objective, *unread = EXAMPLES[_arch(cls)]
    torch.manual_seed(0)
    cls_unread = getattr(cls, "unused_parameters", ())  # never read by design (LLaVA's tower post-norm)
    return cls, dict(config), inputs(config), _Objective(objective, tuple(cls_unread) + tuple(*unread))


class _Objective:
    """The scalar to minimise, and the parameters (regexes) this example's forward does not read."""

    def __init__(self, fn, unread):
        self.fn, self.unread = fn, unread

    def __call__(self, out):
        return self.fn(out)


def _grads(model, inputs, objective):
    torch.manual_seed(0)  # the same stochastic-depth draws in every run (checkpointing replays them)
    buffers = {k: b.clone() for k, b in model.named_buffers()}  # EMA codebooks: each run starts alike
    model.zero_grad()
    loss = objective(model(**inputs))
    loss.backward()
    with torch.no_grad():
        for k, b in model.named_buffers():
            b.copy_(buffers[k])
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_weight_loading_rules_are_the_ones_declared_for_the_cpp_module(example):
    """The Python loader and the C++ one (core::load_pretrained_weights) read one declaration:
    the rules the family registered in C++ under the module's transformers name."""
    cls, config, _, _ = example
    cpp = getattr(cls(config), "_cpp", None)
    if cpp is None:
        pytest.skip(f"{cls.__name__} has no C++ module")
    root = next(name for path, name, _, _ in cpp.nodes() if not path)
    declared = tessera._C.core.weight_loading(root)
    for attr in ("key_aliases", "tied_weights", "base_config_key", "base_model_prefix"):
        assert getattr(cls, attr) == declared[attr], (root, attr)


def test_every_declared_weight_loading_rule_is_read_by_a_registered_class():
    read = {c.__dict__.get("_cpp_module_name") or c.__name__ for c in registry.registered_classes()}
    unread = set(tessera._C.core.list_weight_loading()) - read
    assert not unread, f"C++ declares weight-loading rules no Python class takes: {sorted(unread)}"


def test_finite_outputs_and_every_parameter_gets_a_gradient(example):
    cls, config, inputs, objective = example
    model = cls(config).train()
    loss, grads = _grads(model, inputs, objective)
    assert torch.isfinite(loss)
    missing = [k for k, p in model.named_parameters()
               if p.requires_grad and k not in grads and not any(re.match(u, k) for u in objective.unread)]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_checkpointing_changes_neither_outputs_nor_gradients(example):
    cls, config, inputs, objective = example
    model = cls(config).train()
    loss, grads = _grads(model, inputs, objective)
    model.set_gradient_checkpointing(True)
    loss_ckpt, grads_ckpt = _grads(model, inputs, objective)
    torch.testing.assert_close(loss_ckpt, loss, atol=1e-6, rtol=0)
    for k, g in grads.items():
        torch.testing.assert_close(grads_ckpt[k], g, atol=1e-5, rtol=1e-5, msg=k)


def test_state_dict_keys_are_transformers(example, tmp_path):
    """Our keys are those transformers writes into model.safetensors (its checkpoint tree; in
    memory transformers 5 renames some ViT-family modules and converts on load and save)."""
    from safetensors import safe_open

    cls, config, _, _ = example
    if getattr(cls, "transformers_class", "") is None:
        pytest.skip(f"{cls.__name__} has no transformers counterpart")
    config = {k: v for k, v in config.items() if k != "model_type"}
    hf = getattr(transformers, cls.architecture)(transformers.AutoConfig.for_model(cls.model_type, **config))
    hf.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    ours = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    assert ours == theirs


def test_layer_hooks_fire_and_functional_call_reaches_cpp(example):
    cls, config, inputs, objective = example
    model = cls(config).eval()
    layers = [m for m in model.modules() if type(m).__name__.endswith("Layer")]
    assert layers, "no layer classes exposed"
    calls = []
    handles = [layer.register_forward_hook(lambda m, a, out: calls.append(type(m).__name__)) for layer in layers]
    with torch.no_grad():
        base = objective(model(**inputs))
        assert len(calls) == len(layers)
        for h in handles:
            h.remove()
        params = {k: p * 1.5 for k, p in model.named_parameters() if k.endswith("weight")}
        changed = objective(torch.func.functional_call(model, params, (), inputs))
    assert not torch.allclose(changed, base)
    assert isinstance(model, nn.Module)


def test_functional_call_of_every_parameter_trains_them_and_leaves_the_model_as_it_was(example):
    """torch.func's idiom: every parameter replaced by a plain tensor (not an nn.Parameter), the
    gradients reach each one read, and the model afterwards, and a deep copy of it, compute with
    its own weights again (C++ had kept the passed tensors until the next forward)."""
    import copy

    cls, config, inputs, objective = example
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        base = objective(model(**inputs))
    params = {k: p.detach().clone().requires_grad_() for k, p in model.named_parameters()}
    grads = torch.autograd.grad(objective(torch.func.functional_call(model, params, (), inputs)).sum(),
                                list(params.values()), allow_unused=True)
    missing = [k for k, g in zip(params, grads) if g is None and not any(re.match(u, k) for u in objective.unread)]
    assert not missing, f"no gradient for {missing}"
    with torch.no_grad():
        torch.func.functional_call(model, {k: p * 0.5 + 0.1 for k, p in params.items()}, (), inputs)
        copied = copy.deepcopy(model)
        torch.testing.assert_close(objective(copied(**inputs)), base, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(objective(model(**inputs)), base, atol=1e-6, rtol=1e-6)


def _outputs(value):
    if isinstance(value, ModelOutput):
        yield value
        for v in value.values():
            yield from _outputs(v)


def test_every_output_declares_its_fields(example):
    """A model's outputs name every field they hold, so a misspelt attribute is an AttributeError
    (it read as None) and an uncomputed declared one reads None, as transformers' outputs do."""
    cls, config, inputs, _ = example
    with torch.no_grad():
        out = cls(config).eval()(**inputs)
    for o in _outputs(out):
        assert o.fields, f"{type(o).__name__} declares no fields"
        assert set(o.keys()) <= set(o.fields), (type(o).__name__, sorted(set(o.keys()) - set(o.fields)))
        with pytest.raises(AttributeError, match="has no field 'not_a_field'"):
            o.not_a_field
