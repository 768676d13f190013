"""The contract every registered model class keeps, parametrised over tessera.registry: on a tiny
config it gives finite outputs, every parameter gets a gradient, activation checkpointing changes
neither outputs nor gradients, its state_dict keys are transformers', hooks on its layers fire and
functional_call reaches its C++ forward. A family adds its tiny config and inputs to EXAMPLES."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tessera import registry
from _clip_reference import pixel_batch, text_batch, tiny_config

transformers = pytest.importorskip("transformers")

_CLIP = tiny_config(text=dict(num_hidden_layers=2), vision=dict(num_hidden_layers=2))


def _text(cfg):
    ids, mask = text_batch(cfg, batch=3, seq_len=cfg["max_position_embeddings"])
    return dict(input_ids=ids, attention_mask=mask)


# model_type -> (tiny config, inputs for that config, the scalar a training step would minimise)
EXAMPLES = {
    "clip": (_CLIP, lambda c: dict(**_text(c["text_config"]), pixel_values=pixel_batch(c["vision_config"], batch=3),
                                   return_loss=True), lambda out: out.loss),
    "clip_vision_model": (_CLIP["vision_config"], lambda c: dict(pixel_values=pixel_batch(c, batch=3)),
                          lambda out: out.last_hidden_state.pow(2).mean() + out.pooler_output.sum()),
    "clip_text_model": (_CLIP["text_config"], _text, lambda out: out.last_hidden_state.pow(2).mean()),
}


@pytest.fixture(params=sorted(registry.MODEL_TYPES))
def example(request):
    model_type = request.param
    assert model_type in EXAMPLES, f"registered model type {model_type!r} has no tiny example in test_contract.py"
    config, inputs, objective = EXAMPLES[model_type]
    cls = registry.MODEL_TYPES[model_type]
    torch.manual_seed(0)
    return cls, dict(config), inputs(config), objective


def _grads(model, inputs, objective):
    model.zero_grad()
    loss = objective(model(**inputs))
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_finite_outputs_and_every_parameter_gets_a_gradient(example):
    cls, config, inputs, objective = example
    model = cls(config).train()
    loss, grads = _grads(model, inputs, objective)
    assert torch.isfinite(loss)
    missing = [k for k, _ in model.named_parameters() if k not in grads]
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


def test_state_dict_keys_are_transformers(example):
    cls, config, _, _ = example
    hf_config = getattr(transformers, cls.architecture.replace("Model", "Config"))(**config)
    hf = getattr(transformers, cls.architecture)(hf_config)
    ours = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    assert ours == theirs


def test_layer_hooks_fire_and_functional_call_reaches_cpp(example):
    cls, config, inputs, objective = example
    model = cls(config).eval()
    layers = [m for m in model.modules() if type(m).__name__.endswith("EncoderLayer")]
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
