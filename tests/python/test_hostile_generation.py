"""Hostile input to generation (issue 14): arguments that pass a range check but not the
arithmetic behind them, prompts of the wrong layout, and NaN reaching the logits. The other
classes of hostile input are in test_hostile_input.py."""
from __future__ import annotations

import pytest
import torch

import tessera
from _tiny_llama import LLAMA


# ---- class: generation arguments that pass a range check but not the arithmetic behind it ------
@pytest.mark.parametrize("kwargs, error, message", [
    # P + 2^63 - 1 wrapped negative: decoding ran to the context's end, or without end (dynamic RoPE)
    (dict(max_new_tokens=2 ** 63 - 1), ValueError, "exceeds the model's context"),
    (dict(max_new_tokens=2 ** 63 - 1, num_beams=2), ValueError, "exceeds the model's context"),
    (dict(max_new_tokens=2 ** 64), ValueError, "max_new_tokens 18446744073709551616 does not fit in int64"),
    (dict(top_k=2 ** 63), ValueError, "top_k .* does not fit in int64"),
    (dict(eos_token_id=2 ** 70), ValueError, "eos_token_id .* does not fit in int64"),
    # 1 / temperature overflows fp32 scores: torch's "probability tensor contains inf"
    (dict(do_sample=True, temperature=1e-300), ValueError, "temperature 1e-300 is too small for fp32 scores"),
    (dict(do_sample=True, repetition_penalty=1e-40), ValueError, "repetition_penalty must be > 0 with it and its"),
    (dict(generator=42), TypeError, "generator must be a torch.Generator or None, got int"),
    # every id a stop id and none allowed yet: sampling drew from NaN, greedy emitted a stop id
    (dict(eos_token_id=list(range(60)), min_new_tokens=2), ValueError, "every token of the model is one"),
])
def test_generation_arguments_that_would_overflow_or_hang_are_refused(lm, kwargs, error, message):
    with pytest.raises(error, match=message):
        lm.generate(torch.tensor([[1, 5, 7]]), **kwargs)


def test_dynamic_rope_generation_is_bounded_too():
    dynamic = tessera.LlamaForCausalLM({**LLAMA, "rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4,
                                                                     "factor": 2.0}}).eval()
    with pytest.raises(ValueError, match="exceeds the model's context \\(dynamic RoPE: 2\\^31 positions"):
        dynamic.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=2 ** 63 - 1, eos_token_id=[])
    assert dynamic.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=40, eos_token_id=[]).shape == (1, 43)


def test_a_right_padded_prompt_is_refused(lm):
    """Each row continues from its last token: a right-padded row generated from its pad token."""
    ids, mask = torch.tensor([[1, 5, 7], [1, 5, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match="row 1 ends in padding; .* pad prompts on the left"):
        lm.generate(ids, attention_mask=mask, max_new_tokens=2)
    left = lm.generate(torch.tensor([[1, 5, 7], [0, 1, 5]]), attention_mask=torch.tensor([[1, 1, 1], [0, 1, 1]]),
                       max_new_tokens=3, eos_token_id=[])
    assert torch.equal(left[1, 3:], lm.generate(torch.tensor([[1, 5]]), max_new_tokens=3, eos_token_id=[])[0, 2:])


def test_inputs_embeds_of_another_dtype_or_shape_are_refused(lm):
    ids = torch.tensor([[1, 5, 7]])
    embeds = lm.model.embed_tokens.weight[ids].detach()
    for bad in (embeds.round().long(), embeds.bool(), embeds.double()):
        with pytest.raises(TypeError, match="inputs_embeds must have the embedding table's dtype Float"):
            lm.generate(ids, inputs_embeds=bad, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"inputs_embeds must be \[1, 3, hidden\] like the prompt's input_ids"):
        lm.generate(ids, inputs_embeds=torch.cat([embeds, embeds], 1), max_new_tokens=2)
    assert torch.equal(lm.generate(ids, inputs_embeds=embeds, max_new_tokens=3, eos_token_id=[]),
                       lm.generate(ids, max_new_tokens=3, eos_token_id=[]))


def test_repeated_stop_ids_and_a_config_pad_id_past_the_vocabulary(lm):
    ids = torch.tensor([[1, 5, 7]])
    many = lm.generate(ids, num_beams=2, eos_token_id=[2] * 100, max_new_tokens=3)  # "selected index k out of range"
    assert torch.equal(many, lm.generate(ids, num_beams=2, eos_token_id=[2], max_new_tokens=3))
    with pytest.raises(ValueError, match=r"pad_token_id 5000 is not a token of the model \(vocab_size 60\)"):
        tessera.LlamaForCausalLM({**LLAMA, "pad_token_id": 5000})  # was select()'s IndexError


# ---- generation from NaN ------------------------------------------------------------------------
# A NaN pixel or weight reaches every logit of the prompt; argmax (or sampling) still picked tokens,
# so generation answered with garbage. The prompt's logits are now checked once, on every path.
@pytest.mark.parametrize("family", ["llava", "blip2"])
@pytest.mark.parametrize("how", ["greedy", "beams", "stream"])
def test_generation_refuses_nan_pixels(fixture_dir, family, how):
    from safetensors.torch import load_file
    d = fixture_dir(family)
    model = tessera.from_pretrained(str(d)).eval()
    io = load_file(str(d / "io.safetensors"))
    ids, px = io["input_ids"], io["pixel_values"].clone()
    px[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="prompt's logits are NaN"):
        if how == "stream":
            next(iter(model.stream(input_ids=ids, pixel_values=px, max_new_tokens=2)))
        else:
            model.generate(input_ids=ids, pixel_values=px, max_new_tokens=2, num_beams=2 if how == "beams" else 1)
    assert model.generate(input_ids=ids, pixel_values=io["pixel_values"], max_new_tokens=2).shape[1] == ids.shape[1] + 2


def test_generation_refuses_a_nan_weight(lm):
    model = tessera.LlamaForCausalLM(LLAMA).eval()
    model.load_state_dict(lm.state_dict())
    with torch.no_grad():
        model.model.norm.weight[3] = float("nan")
    with pytest.raises(ValueError, match="prompt's logits are NaN"):
        model.generate(torch.ones(1, 4, dtype=torch.long), max_new_tokens=2)
