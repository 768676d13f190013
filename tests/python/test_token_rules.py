"""transformers' token rules in generate, side by side with transformers' generate: sequence_bias,
bad_words_ids, forced_bos_token_id, forced_eos_token_id, exponential_decay_length_penalty,
suppress_tokens and begin_suppress_tokens, in greedy decoding, beam search and sampling, over a
left-padded batch, in the scores generate returns, and from a generation_config.json. Each was
refused by name; each case checks that the rule changed the ids (a decoder that ignored it fails)."""
import json

import pytest
import torch

import tessera

from _peaked_llama import IDS, MASK, peaked_llama_pair

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return peaked_llama_pair(tmp_path_factory, 13, eos_token_id=3, pad_token_id=0)


def plain(ours, **settings):
    return ours.generate(IDS, attention_mask=MASK, **settings)


def rules(ours):
    """Rules built from what the model generates without them, so that each one bites."""
    free = plain(ours, max_new_tokens=12)[:, IDS.shape[1]:]
    first, second = free[0, 0].item(), free[0, 1].item()
    return [dict(sequence_bias=[[[first], -30.0], [[second], 4.0]]),
            dict(sequence_bias={(first, second): -50.0, (free[1, 2].item(),): 2.5}),
            dict(bad_words_ids=[[first], [free[1, 0].item(), free[1, 1].item()], [3]]),  # a lone stop id stays
            dict(suppress_tokens=[first, free[1, 0].item()]),
            dict(begin_suppress_tokens=[first, free[1, 0].item()]),
            dict(forced_eos_token_id=3, eos_token_id=3),
            dict(exponential_decay_length_penalty=(2, 1.8), eos_token_id=3)]


@pytest.mark.parametrize("case", range(7))
@pytest.mark.parametrize("mode", [dict(), dict(num_beams=3), dict(do_sample=True, top_k=0)])
def test_rules_equal_transformers(pair, case, mode):
    hf, ours = pair
    settings = dict(max_new_tokens=10, **mode, **rules(ours)[case])
    seeded = dict(generator=torch.Generator().manual_seed(5)) if mode.get("do_sample") else {}
    got = plain(ours, **seeded, **settings)
    torch.manual_seed(5)
    want = hf.generate(IDS, attention_mask=MASK, **({} if mode.get("do_sample") else dict(do_sample=False)), **settings)
    assert torch.equal(got, want), settings
    without = {k: v for k, v in settings.items() if k not in rules(ours)[case] or k == "eos_token_id"}
    assert not torch.equal(got, plain(ours, **seeded, **without)), settings  # the rule changed the ids


def test_scores_are_transformers(pair):
    hf, ours = pair
    flags = dict(return_dict_in_generate=True, output_scores=True)
    settings = dict(max_new_tokens=6, eos_token_id=3, suppress_tokens=[5, 7], begin_suppress_tokens=[9],
                    bad_words_ids=[[14, 52], [11]], sequence_bias=[[[8], 1.5]], exponential_decay_length_penalty=(1, 1.5),
                    forced_eos_token_id=3)
    for beams in (1, 2):
        want = hf.generate(IDS, attention_mask=MASK, do_sample=False, num_beams=beams, **flags, **settings)
        got = plain(ours, num_beams=beams, **flags, **settings)
        assert torch.equal(got.sequences, want.sequences)
        for a, b in zip(got.scores, want.scores, strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_forced_bos_after_a_one_token_prompt(pair):
    hf, ours = pair
    ids = torch.tensor([[1], [4]])
    for beams in (1, 2):
        settings = dict(max_new_tokens=5, forced_bos_token_id=42, begin_suppress_tokens=[17], num_beams=beams)
        want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **settings)
        got = ours.generate(ids, **settings)
        assert torch.equal(got, want) and (got[:, 1] == 42).all()


def test_from_the_folder_and_refused_where_they_cannot_apply(pair, tmp_path):
    hf, ours = pair
    saved = dict(bad_words_ids=[[14, 52]], suppress_tokens=[5], sequence_bias=[[[8], 1.5]])
    for key, value in saved.items():
        setattr(hf.generation_config, key, value)
    try:
        hf.save_pretrained(tmp_path)
        want = hf.generate(IDS, attention_mask=MASK, max_new_tokens=8, do_sample=False)
    finally:
        for key in saved:
            setattr(hf.generation_config, key, None)
    assert json.loads((tmp_path / "generation_config.json").read_text())["bad_words_ids"] == [[14, 52]]
    loaded = tessera.from_pretrained(str(tmp_path))
    assert torch.equal(plain(loaded, max_new_tokens=8), want)
    loaded.save_pretrained(str(tmp_path / "again"))  # written back as transformers reads it
    again = transformers.GenerationConfig.from_pretrained(str(tmp_path / "again"))
    assert again.sequence_bias == [[[8], 1.5]] and again.suppress_tokens == [5]
    embeds = loaded.get_input_embeddings()(IDS)
    with pytest.raises(ValueError, match="bad_words_ids .* reads the prompt's ids"):
        loaded.generate(inputs_embeds=embeds, max_new_tokens=3)
    for bad, message in [(dict(bad_words_ids=[[5, 200]]), "bad_words_ids: 200 is not a token of the model"),
                         (dict(sequence_bias=[[[], 1.0]]), "non-empty list of token ids"),
                         (dict(sequence_bias=[[[5], "x"]]), "must be a number"),
                         (dict(forced_eos_token_id=-1), "token ids are integers >= 0"),
                         (dict(exponential_decay_length_penalty=(2,)), "start index >= 0, decay factor")]:
        with pytest.raises(ValueError, match=message):
            ours.generate(IDS, attention_mask=MASK, max_new_tokens=3, **bad)


def test_a_files_rule_naming_no_token_is_left_out_with_a_warning(pair, tmp_path):
    """Every generate would fail on it (transformers' too): the folder loads without it, said."""
    _, ours = pair
    ours.save_pretrained(str(tmp_path))
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "bad_words_ids": [[5, 300]],
                                "sequence_bias": [[[4], 1.0]]}))
    with pytest.warns(UserWarning, match=r"bad_words_ids \[\[5, 300\]\] left out \(300 is not a token"):
        loaded = tessera.from_pretrained(str(tmp_path))
    assert "bad_words_ids" not in loaded.generation_defaults
    assert loaded.generation_defaults["sequence_bias"] == [[[4], 1.0]]


def test_transformers_spellings_of_the_rules(pair):
    """An integral float start of exponential_decay_length_penalty, as transformers takes it."""
    _, ours = pair
    kwargs = dict(attention_mask=MASK, max_new_tokens=8, eos_token_id=3)
    assert torch.equal(ours.generate(IDS, exponential_decay_length_penalty=(2.0, 1.8), **kwargs),
                       ours.generate(IDS, exponential_decay_length_penalty=(2, 1.8), **kwargs))
    with pytest.raises(ValueError, match="start index >= 0"):
        ours.generate(IDS, exponential_decay_length_penalty=(2.5, 1.8), **kwargs)
