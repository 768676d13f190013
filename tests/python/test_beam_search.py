"""Beam search equals transformers' generate(num_beams=...) id for id, for LLaMA and the models
that generate through it (LLaVA, BLIP-2): length penalties of both signs, early stopping, several
stop ids (so beams finish at different steps), min_new_tokens, left-padded batches, and the best
num_return_sequences beams per prompt (LAVIS's num_captions)."""
import pytest
import torch

import tessera

from _peaked_llama import peaked_llama_pair

transformers = pytest.importorskip("transformers")

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return peaked_llama_pair(tmp_path_factory, 3)  # peaked distributions: beams finish early and often


CASES = [
    dict(num_beams=2),
    dict(num_beams=4, length_penalty=1.0),
    dict(num_beams=4, length_penalty=-0.5),
    dict(num_beams=3, length_penalty=2.0, early_stopping=True),
    dict(num_beams=4, min_new_tokens=5),
    dict(num_beams=4, repetition_penalty=1.5),
    dict(num_beams=4, num_return_sequences=4),  # every finished beam, best first
    dict(num_beams=3, num_return_sequences=2, length_penalty=2.0, early_stopping=True),
    dict(num_beams=4, length_penalty=2.0, early_stopping="never"),  # judged at max_new_tokens' length
    dict(num_beams=3, length_penalty=0.0, early_stopping="never"),  # the canonical beam search
    dict(num_beams=4, length_penalty=-0.5, early_stopping="never", num_return_sequences=2),
]


@pytest.mark.parametrize("extra", CASES)
def test_beam_search_equals_transformers(pair, extra):
    hf, ours = pair
    torch.manual_seed(0)
    ids = torch.randint(3, 97, (2, 5))
    stops = [5, 11, 17, 23, 29, 31, 37]  # many stop ids: beams end at different steps
    kwargs = dict(max_new_tokens=12, eos_token_id=stops, pad_token_id=1, **extra)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kwargs)
    got = ours.generate(ids, **kwargs)
    assert torch.equal(got, want), (got, want)


def test_early_stopping_never_is_read_from_the_folder_and_changes_the_beams(pair, tmp_path):
    """transformers' third value: with length_penalty > 0 a running beam is judged at the longest
    length it could reach, so the search runs on where False stops (here: other beams). It was
    left out of a generation_config.json with a warning, and refused as an argument."""
    hf, ours = pair
    ids = torch.tensor([[67, 31, 75, 59], [77, 25, 65, 66]])  # 2 of 200 random prompts where it matters
    kwargs = dict(max_new_tokens=12, num_beams=4, eos_token_id=[5, 11, 17, 23, 29, 31, 37, 41, 43], pad_token_id=1)
    never = ours.generate(ids, early_stopping="never", **kwargs)
    assert not torch.equal(never, ours.generate(ids, early_stopping=False, **kwargs))
    hf.generation_config.early_stopping, hf.generation_config.num_beams = "never", 4  # transformers saves it so
    try:
        hf.save_pretrained(tmp_path)
        want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kwargs)
    finally:
        hf.generation_config.early_stopping, hf.generation_config.num_beams = False, 1
    assert torch.equal(never, want)
    assert torch.equal(tessera.from_pretrained(str(tmp_path)).generate(ids, **kwargs), want)
    passed = transformers.GenerationConfig(early_stopping="never", num_beams=4)
    assert torch.equal(ours.generate(ids, generation_config=passed, **kwargs), want)
    assert torch.equal(ours.generate(ids, early_stopping=None, **kwargs),  # transformers 5's unset: False
                       ours.generate(ids, early_stopping=False, **kwargs))
    with pytest.raises(ValueError, match="early_stopping.*'sometimes'"):
        ours.generate(ids, early_stopping="sometimes", **kwargs)


def test_left_padded_batch_equals_transformers(pair):
    hf, ours = pair
    ids = torch.tensor([[0, 0, 14, 52, 9], [33, 8, 71, 40, 2]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    for n in (1, 3):
        kwargs = dict(max_new_tokens=8, num_beams=3, eos_token_id=[5, 11, 17], pad_token_id=1, num_return_sequences=n)
        want = hf.generate(ids, attention_mask=mask, do_sample=False, **kwargs)
        assert torch.equal(ours.generate(ids, attention_mask=mask, **kwargs), want)


def test_one_beam_is_greedy_and_beams_refuse_streams(pair):
    _, ours = pair
    ids = torch.randint(3, 97, (1, 4))
    assert torch.equal(ours.generate(ids, max_new_tokens=6, num_beams=1), ours.generate(ids, max_new_tokens=6))
    with pytest.raises(ValueError, match="use generate"):
        list(ours.stream(ids, max_new_tokens=3, num_beams=2))
    with pytest.raises(ValueError, match="beam sampling"):
        ours.generate(ids, max_new_tokens=3, num_beams=2, do_sample=True)


def test_min_new_tokens_holds_stops_back_in_greedy_decoding(pair):
    hf, ours = pair
    ids = torch.randint(3, 97, (1, 4))
    kwargs = dict(max_new_tokens=10, min_new_tokens=6, eos_token_id=[5, 11, 17, 23, 29], pad_token_id=1)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kwargs)
    assert torch.equal(ours.generate(ids, **kwargs), want)


def test_blip2_beam_search_equals_transformers(fixture_dir):
    d = fixture_dir("blip2")
    from safetensors.torch import load_file

    io = load_file(str(d / "io.safetensors"))
    hf = transformers.Blip2ForConditionalGeneration.from_pretrained(str(d)).eval()
    ours = tessera.from_pretrained(str(d))
    for n in (1, 3):  # LAVIS's generate(num_beams=5, num_captions=n)
        kwargs = dict(max_new_tokens=6, num_beams=4, eos_token_id=[2, 934, 419], pad_token_id=1, num_return_sequences=n)
        want = hf.generate(pixel_values=io["pixel_values"], input_ids=io["input_ids"], do_sample=False, **kwargs)
        assert torch.equal(ours.generate(io["pixel_values"], io["input_ids"], **kwargs), want)


@pytest.mark.parametrize("extra", [dict(num_beams=4), dict(num_beams=3, length_penalty=2.0, early_stopping=True),
                                   dict(num_beams=4, min_new_tokens=4), dict(num_beams=4, num_return_sequences=2)])
def test_llava_beam_search_equals_transformers(fixture_dir, extra):
    from safetensors.torch import load_file

    d = fixture_dir("llava")
    io = load_file(str(d / "io.safetensors"))
    ids, px = io["input_ids"], io["pixel_values"]
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(d)).eval()
    ours = tessera.from_pretrained(str(d))
    want = hf.generate(input_ids=ids, pixel_values=px, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=10, **extra)
    got = ours.generate(ids, pixel_values=px, max_new_tokens=10, **extra)
    n = extra.get("num_return_sequences", 1)
    assert torch.equal(got[:, ids.shape[1]:], want[:, ids.shape[1]:])
    assert torch.equal(got[:, :ids.shape[1]], ids.repeat_interleave(n, 0))
