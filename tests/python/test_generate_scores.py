"""transformers' `return_dict_in_generate=True` with `output_scores` and `output_logits`, and
`compute_transition_scores`: side by side with transformers' generate where decoding is greedy
(sequences equal, scores and logits to fp32 rounding), and against transformers' own logits
processors on tessera's sampled sequences; beam search's GenerateBeamDecoderOnlyOutput field for
field. C++ records the steps' tensors as it decodes. These flags were refused by name, and with
beam search until stop 51."""
import warnings

import pytest
import torch

import tessera

from _peaked_llama import peaked_llama_pair

transformers = pytest.importorskip("transformers")
FLAGS = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return peaked_llama_pair(tmp_path_factory, 7, eos_token_id=3, pad_token_id=0)


def close(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def outputs_equal(got, want):
    """Every field transformers' output holds (GenerateDecoderOnlyOutput, or with beams
    GenerateBeamDecoderOnlyOutput) and tessera keeps: ids and beam indices exactly, scores to
    fp32 rounding."""
    assert list(got.keys()) == [k for k in want.keys() if k != "past_key_values"]  # tessera keeps no cache
    assert torch.equal(got.sequences, want.sequences)
    if "beam_indices" in want:
        assert torch.equal(got.beam_indices, want.beam_indices) and got.beam_indices.dtype == want.beam_indices.dtype
    if "sequences_scores" in want:
        torch.testing.assert_close(got.sequences_scores, want.sequences_scores, atol=2e-5, rtol=1e-5)
    close(got.scores or (), want.scores or ())
    close(got.logits or (), want.logits or ())


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=6), dict(max_new_tokens=8, repetition_penalty=1.5),
                                    dict(max_new_tokens=6, min_new_tokens=4, eos_token_id=[3, 11, 19])])
def test_greedy_outputs_equal_transformers(llama, kwargs):
    hf, ours = llama
    ids = torch.tensor([[0, 0, 1, 5, 6], [1, 7, 8, 9, 10]])  # left-padded
    mask = (ids != 0).long()
    want = hf.generate(ids, attention_mask=mask, do_sample=False, **FLAGS, **kwargs)
    got = ours.generate(ids, attention_mask=mask, **FLAGS, **kwargs)
    outputs_equal(got, want)
    torch.testing.assert_close(ours.compute_transition_scores(got.sequences, got.scores, normalize_logits=True),
                               hf.compute_transition_scores(want.sequences, want.scores, normalize_logits=True),
                               atol=2e-5, rtol=1e-5)


def test_sampled_scores_are_transformers_processors_on_the_logits(llama):
    hf, ours = llama
    ids = torch.tensor([[1, 5, 6, 7]])
    settings = dict(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.3)
    got = ours.generate(ids, max_new_tokens=6, do_sample=True, generator=torch.Generator().manual_seed(3),
                        **settings, **FLAGS)
    processors = transformers.LogitsProcessorList([
        transformers.RepetitionPenaltyLogitsProcessor(1.3), transformers.TemperatureLogitsWarper(0.7),
        transformers.TopKLogitsWarper(20), transformers.TopPLogitsWarper(0.8)])
    with torch.no_grad():
        logits = hf(got.sequences).logits[:, ids.shape[1] - 1:-1]
    want = [processors(got.sequences[:, :ids.shape[1] + t], logits[:, t].clone()) for t in range(logits.shape[1])]
    close(got.scores, want)
    chosen = got.sequences[:, ids.shape[1]:]
    assert all(torch.isfinite(s.gather(1, chosen[:, t:t + 1])).all() for t, s in enumerate(got.scores))


BEAMS = [dict(num_beams=3), dict(num_beams=4, length_penalty=-0.5, eos_token_id=[3, 11, 19, 23]),
         dict(num_beams=3, length_penalty=2.0, early_stopping=True, num_return_sequences=2, eos_token_id=[3, 11]),
         dict(num_beams=4, min_new_tokens=3, repetition_penalty=1.5, num_return_sequences=3)]


@pytest.mark.parametrize("kwargs", BEAMS)
def test_beam_outputs_equal_transformers(llama, kwargs):
    hf, ours = llama
    ids = torch.tensor([[0, 0, 1, 5, 6], [1, 7, 8, 9, 10]])  # left-padded
    mask = (ids != 0).long()
    want = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=9, **FLAGS, **kwargs)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=9, **FLAGS, **kwargs)
    outputs_equal(got, want)
    ours_steps = ours.compute_transition_scores(got.sequences, got.scores, got.beam_indices)
    torch.testing.assert_close(ours_steps, hf.compute_transition_scores(want.sequences, want.scores,
                                                                         want.beam_indices), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(
        ours.compute_transition_scores(got.sequences, got.scores, got.beam_indices, normalize_logits=True),
        hf.compute_transition_scores(want.sequences, want.scores, want.beam_indices, normalize_logits=True),
        atol=2e-5, rtol=1e-5)
    # transformers' documented identity: a beam's score is its steps' sum over its length ** penalty
    lengths = (got.beam_indices >= 0).sum(1)
    torch.testing.assert_close(ours_steps.sum(1) / lengths ** kwargs.get("length_penalty", 1.0),
                               got.sequences_scores, atol=1e-4, rtol=1e-5)


def test_beam_flags_as_transformers_reads_them(llama):
    """return_dict_in_generate alone: sequences and beam_indices; output_scores alone: the ids
    (transformers ignores it then); inputs_embeds: the new ids, scores as from the ids."""
    hf, ours = llama
    ids = torch.tensor([[1, 5, 6]])
    kwargs = dict(max_new_tokens=4, num_beams=2)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, return_dict_in_generate=True,
                       **kwargs)
    got = ours.generate(ids, return_dict_in_generate=True, **kwargs)
    assert list(got.keys()) == ["sequences", "beam_indices"]
    assert torch.equal(got.sequences, want.sequences) and torch.equal(got.beam_indices, want.beam_indices)
    assert torch.equal(ours.generate(ids, output_scores=True, **kwargs), want.sequences)
    embeds = ours.get_input_embeddings()(ids)
    embedded = ours.generate(inputs_embeds=embeds, **FLAGS, **kwargs)
    outputs_equal(embedded, hf.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), do_sample=False,
                                      **FLAGS, **kwargs))  # the new ids alone, as transformers
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) output_attentions"):
        ours.generate(ids, max_new_tokens=3, output_attentions=True)


@pytest.mark.parametrize("beams", [dict(), dict(num_beams=3, num_return_sequences=2)])
def test_llava_and_blip2_outputs_equal_transformers(fixture_dir, beams):
    from safetensors.torch import load_file

    for family, cls in (("llava", transformers.LlavaForConditionalGeneration),
                        ("blip2", transformers.Blip2ForConditionalGeneration)):
        d = fixture_dir(family)
        io = load_file(str(d / "io.safetensors"))
        hf = cls.from_pretrained(str(d)).eval()
        ours = tessera.from_pretrained(str(d))
        kwargs = dict(max_new_tokens=5, **beams, **FLAGS)
        want = hf.generate(input_ids=io["input_ids"], pixel_values=io["pixel_values"], do_sample=False, **kwargs)
        got = (ours.generate(io["input_ids"], pixel_values=io["pixel_values"], **kwargs)
               if family == "llava" else ours.generate(io["pixel_values"], io["input_ids"], **kwargs))
        outputs_equal(got, want)


def test_flags_as_transformers_reads_them(llama, fixture_dir):
    """Without return_dict_in_generate the ids (transformers ignores the other flags then); the
    model's generation config may turn them on, a call's False off; the output's fields in
    transformers' order; min_new_tokens holds back the config's eos when generate has no other."""
    hf, ours = llama
    ids = torch.tensor([[1, 5, 6, 7]])
    assert isinstance(ours.generate(ids, max_new_tokens=3, output_scores=True), torch.Tensor)
    out = ours.generate(ids, max_new_tokens=3, **FLAGS)
    assert list(out.keys()) == ["sequences", "scores", "logits"] and out[1] is out.scores
    ours.generation_config.return_dict_in_generate = True
    ours.generation_config.output_scores = True
    try:
        assert ours.generate(ids, max_new_tokens=3).scores is not None
        assert isinstance(ours.generate(ids, max_new_tokens=3, return_dict_in_generate=False), torch.Tensor)
    finally:
        ours.generation_config.return_dict_in_generate = False
        ours.generation_config.output_scores = False
    plain = tessera.from_pretrained(str(fixture_dir("llama")))
    plain.generation_defaults = None  # no generation_config.json: the config's eos (2) is held back
    got = plain.generate(ids, max_new_tokens=3, min_new_tokens=2, **FLAGS)
    assert got.scores[0][0, 2] == float("-inf") and got.scores[2][0, 2] != float("-inf")


def test_a_bf16_models_scores_are_the_ones_its_ids_were_chosen_by(fixture_dir):
    """The scores are recorded while decoding (they were recomputed in one forward, which in bf16
    rounds otherwise: a warning said so). Greedy ids are their argmax; sampled ids are never -inf;
    the steps' logits are fp32, as transformers hands them out."""
    model = tessera.from_pretrained(str(fixture_dir("llama")), dtype=torch.bfloat16)
    ids = torch.tensor([[1, 5, 6], [7, 8, 9]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        greedy = model.generate(ids, max_new_tokens=6, **FLAGS)
    chosen = greedy.sequences[:, ids.shape[1]:]
    assert torch.equal(torch.stack(greedy.scores, 1).argmax(-1), chosen)
    assert all(step.dtype == torch.float32 for step in greedy.logits)
    sampled = model.generate(ids, max_new_tokens=6, do_sample=True, top_k=5,
                             generator=torch.Generator().manual_seed(0), **FLAGS)
    picked = torch.stack(sampled.scores, 1).gather(2, sampled.sequences[:, ids.shape[1]:, None])
    assert torch.isfinite(picked).all()
