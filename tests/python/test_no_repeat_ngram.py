"""`no_repeat_ngram_size` equals transformers' NoRepeatNGramLogitsProcessor in every decoding mode
(greedy, sampled, beam search), over left-padded batches, with the other processors, in the
recomputed scores, from a generation_config.json, and for the models that generate through the
LLaMA (LLaVA, BLIP-2, whose prompts repeat the image token). It was refused by name."""
import json

import pytest
import torch

import tessera

from _peaked_llama import IDS, MASK, peaked_llama_pair

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return peaked_llama_pair(tmp_path_factory, 5)  # peaked: greedy decoding repeats itself


@pytest.mark.parametrize("kwargs", [dict(no_repeat_ngram_size=1), dict(no_repeat_ngram_size=2),
                                    dict(no_repeat_ngram_size=3, repetition_penalty=0.7),
                                    dict(no_repeat_ngram_size=2, num_beams=3, num_return_sequences=2),
                                    dict(no_repeat_ngram_size=2, min_new_tokens=5, eos_token_id=[5, 11])])
def test_decoding_equals_transformers(pair, kwargs):
    hf, ours = pair
    settings = dict(max_new_tokens=20, pad_token_id=1, **kwargs)
    want = hf.generate(IDS, attention_mask=MASK, do_sample=False, **settings)
    assert torch.equal(ours.generate(IDS, attention_mask=MASK, **settings), want)
    free = ours.generate(IDS, attention_mask=MASK, **{**settings, "no_repeat_ngram_size": 0})
    assert not torch.equal(free, want)  # the ban changed the tokens: a run that ignored it would fail


def test_sampling_equals_transformers(pair):
    hf, ours = pair
    settings = dict(max_new_tokens=16, do_sample=True, top_k=20, no_repeat_ngram_size=2, pad_token_id=1)
    got = ours.generate(IDS, attention_mask=MASK, generator=torch.Generator().manual_seed(4), **settings)
    torch.manual_seed(4)
    assert torch.equal(got, hf.generate(IDS, attention_mask=MASK, **settings))


def test_no_ngram_repeats_and_the_scores_are_transformers(pair):
    hf, ours = pair
    flags = dict(return_dict_in_generate=True, output_scores=True)
    for beams in (1, 3):
        settings = dict(max_new_tokens=12, no_repeat_ngram_size=2, num_beams=beams, pad_token_id=1, **flags)
        want = hf.generate(IDS, attention_mask=MASK, do_sample=False, **settings)
        got = ours.generate(IDS, attention_mask=MASK, **settings)
        assert torch.equal(got.sequences, want.sequences)
        for a, b in zip(got.scores, want.scores, strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)  # the banned ids are -inf in both
        for row in got.sequences[:, IDS.shape[1]:].tolist():
            row = row[:row.index(2) + 1] if 2 in row else row  # the pads after the stop id are not chosen
            pairs = list(zip(row, row[1:]))
            assert len(pairs) == len(set(pairs)), (beams, row)


def test_read_from_the_folder_and_refused_where_it_cannot_apply(pair, tmp_path):
    hf, ours = pair
    hf.generation_config.no_repeat_ngram_size = 2
    try:
        hf.save_pretrained(tmp_path)
        want = hf.generate(IDS, attention_mask=MASK, max_new_tokens=10, do_sample=False)
    finally:
        hf.generation_config.no_repeat_ngram_size = None
    assert json.loads((tmp_path / "generation_config.json").read_text())["no_repeat_ngram_size"] == 2
    loaded = tessera.from_pretrained(str(tmp_path))
    assert torch.equal(loaded.generate(IDS, attention_mask=MASK, max_new_tokens=10), want)
    with pytest.raises(ValueError, match="no_repeat_ngram_size 2 .* reads the prompt's ids"):
        loaded.generate(inputs_embeds=loaded.get_input_embeddings()(IDS), max_new_tokens=3)
    with pytest.raises(ValueError, match="no_repeat_ngram_size must be >= 0"):
        ours.generate(IDS, max_new_tokens=3, no_repeat_ngram_size=-1)


@pytest.mark.parametrize("family", ["llava", "blip2"])
def test_multimodal_models_equal_transformers(fixture_dir, family):
    from safetensors.torch import load_file

    d = fixture_dir(family)
    io = load_file(str(d / "io.safetensors"))
    cls = dict(llava=transformers.LlavaForConditionalGeneration, blip2=transformers.Blip2ForConditionalGeneration)
    hf = cls[family].from_pretrained(str(d)).eval()
    ours = tessera.from_pretrained(str(d))
    for n in (1, 2):
        settings = dict(max_new_tokens=8, no_repeat_ngram_size=n)
        want = hf.generate(input_ids=io["input_ids"], pixel_values=io["pixel_values"], do_sample=False, **settings)
        got = (ours.generate(io["input_ids"], pixel_values=io["pixel_values"], **settings) if family == "llava"
               else ours.generate(io["pixel_values"], io["input_ids"], **settings))
        assert torch.equal(got, want), (family, n)
