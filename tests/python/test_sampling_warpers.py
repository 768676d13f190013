"""min_p, typical_p, epsilon_cutoff and eta_cutoff sampling equal transformers' warpers: the
scores generate returns against transformers' own warper classes on the same logits (alone and
after temperature, top-k and top-p, in transformers' order), and the sampled ids against
transformers' generate from the same seed. They were refused by name when sampling."""
import pytest
import torch

from _peaked_llama import peaked_llama_pair

transformers = pytest.importorskip("transformers")
FLAGS = dict(return_dict_in_generate=True, output_scores=True)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return peaked_llama_pair(tmp_path_factory, 11, eos_token_id=3, pad_token_id=0)


def warpers(settings):
    """transformers' warpers for `settings`, in the order its generate builds them."""
    t = transformers
    built = [(t.TemperatureLogitsWarper, "temperature"), (t.TopKLogitsWarper, "top_k"), (t.TopPLogitsWarper, "top_p"),
             (t.MinPLogitsWarper, "min_p"), (t.TypicalLogitsWarper, "typical_p"),
             (t.EpsilonLogitsWarper, "epsilon_cutoff"), (t.EtaLogitsWarper, "eta_cutoff")]
    off = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    return t.LogitsProcessorList([cls(settings[key]) for cls, key in built
                                  if key in settings and settings[key] != off.get(key)])


CASES = [dict(min_p=0.1), dict(typical_p=0.6), dict(epsilon_cutoff=3e-3), dict(eta_cutoff=2e-3),
         dict(temperature=1.4, min_p=0.05, top_k=0), dict(temperature=0.8, top_k=30, top_p=0.9, typical_p=0.8),
         dict(top_k=0, top_p=0.95, epsilon_cutoff=1e-3, eta_cutoff=1e-3)]


@pytest.mark.parametrize("settings", CASES)
def test_scores_are_transformers_warpers_on_the_logits(pair, settings):
    hf, ours = pair
    ids = torch.tensor([[1, 5, 6, 7], [9, 4, 8, 2]])
    got = ours.generate(ids, max_new_tokens=8, do_sample=True, generator=torch.Generator().manual_seed(1),
                        **settings, **FLAGS)
    with torch.no_grad():
        logits = hf(got.sequences).logits[:, ids.shape[1] - 1:-1]
    processors = warpers({"top_k": 50, **settings})  # generate's default top_k 50 unless set
    for t, scores in enumerate(got.scores):
        want = processors(got.sequences[:, :ids.shape[1] + t], logits[:, t].clone())
        assert torch.equal(torch.isinf(scores), torch.isinf(want)), (settings, t)  # the same tokens dropped
        torch.testing.assert_close(scores, want, atol=2e-5, rtol=1e-5)
    kept = [s.isfinite().sum(1) for s in got.scores]
    assert min(int(k.min()) for k in kept) < 50  # the warpers dropped more than top-k alone would


@pytest.mark.parametrize("settings", [dict(min_p=0.2), dict(typical_p=0.6), dict(epsilon_cutoff=2e-2),
                                      dict(eta_cutoff=5e-2)])
def test_sampled_ids_equal_transformers_from_the_same_seed(pair, settings):
    hf, ours = pair
    ids = torch.tensor([[1, 5, 6, 7], [9, 4, 8, 2]])
    common = dict(max_new_tokens=10, do_sample=True, temperature=1.5)
    got = ours.generate(ids, generator=torch.Generator().manual_seed(7), **common, **settings)
    torch.manual_seed(7)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), **common, **settings)
    assert torch.equal(got, want), settings
    plain = ours.generate(ids, generator=torch.Generator().manual_seed(7), **common)
    assert not torch.equal(got, plain)  # the warper changed the draws: ignoring it would fail


@pytest.mark.parametrize("key, value, message", [("min_p", 1.5, "min_p must be in \\[0, 1\\]"),
                                                 ("typical_p", 0.0, "typical_p must be in \\(0, 1\\]"),
                                                 ("epsilon_cutoff", 1.0, "epsilon_cutoff must be in \\[0, 1\\)"),
                                                 ("eta_cutoff", -0.1, "eta_cutoff must be in \\[0, 1\\)")])
def test_out_of_range_values_are_refused_by_name(pair, key, value, message):
    _, ours = pair
    with pytest.raises(ValueError, match=message):
        ours.generate(torch.tensor([[1, 5]]), max_new_tokens=2, do_sample=True, **{key: value})


def test_none_is_transformers_unset(pair):
    """transformers 5 reads None as "not set": the setting is off (it was refused as not a number)."""
    _, ours = pair
    ids = torch.tensor([[1, 5, 6, 7]])
    off = dict(min_p=None, typical_p=None, epsilon_cutoff=None, eta_cutoff=None, no_repeat_ngram_size=None)
    draw = lambda **kw: ours.generate(ids, max_new_tokens=6, do_sample=True,  # noqa: E731
                                      generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(draw(**off), draw())
