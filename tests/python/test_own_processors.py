"""transformers' `logits_processor=` and `stopping_criteria=` with the caller's own processors and
criteria, side by side with transformers' generate: greedy, sampling and beam search, called once
per step as transformers calls them, their effect in the returned scores, transformers' own
StopStringCriteria through it, and what a broken processor gives (its exception, or a named
error). Both were refused unless empty."""
import pytest
import torch

import tessera

from _peaked_llama import IDS, MASK, peaked_llama_pair

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return peaked_llama_pair(tmp_path_factory, 17, eos_token_id=3, pad_token_id=0)


class Alternate(transformers.LogitsProcessor):
    """Stateful: on odd calls bans the best token of each row; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls % 2:
            scores = scores.scatter(1, scores.argmax(1, keepdim=True), float("-inf"))
        return scores


class EndsWith(transformers.StoppingCriteria):
    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores, **kwargs):
        return input_ids[:, -1] == self.token


@pytest.mark.parametrize("mode", [dict(), dict(do_sample=True, top_k=20), dict(num_beams=3, num_return_sequences=2)])
def test_own_processor_equals_transformers(pair, mode):
    hf, ours = pair
    flags = dict(return_dict_in_generate=True, output_scores=True)
    seeded = dict(generator=torch.Generator().manual_seed(2)) if mode.get("do_sample") else {}
    mine, theirs = Alternate(), Alternate()
    got = ours.generate(IDS, attention_mask=MASK, max_new_tokens=8, logits_processor=[mine], **seeded, **mode, **flags)
    torch.manual_seed(2)
    want = hf.generate(IDS, attention_mask=MASK, max_new_tokens=8, logits_processor=transformers.LogitsProcessorList(
        [theirs]), **({} if mode.get("do_sample") else dict(do_sample=False)), **mode, **flags)
    assert torch.equal(got.sequences, want.sequences) and mine.calls == theirs.calls == len(want.scores)
    for a, b in zip(got.scores, want.scores, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    plain = ours.generate(IDS, attention_mask=MASK, max_new_tokens=8, **seeded, **mode)
    assert not torch.equal(got.sequences, plain)  # the processor changed the ids


@pytest.mark.parametrize("beams", [1, 3])
def test_own_stopping_criteria_equal_transformers(pair, beams):
    hf, ours = pair
    free = ours.generate(IDS, attention_mask=MASK, max_new_tokens=10)
    token = int(free[0, IDS.shape[1] + 3])  # the first row would stop after four new tokens
    kwargs = dict(max_new_tokens=10, num_beams=beams)
    want = hf.generate(IDS, attention_mask=MASK, do_sample=False, stopping_criteria=[EndsWith(token)], **kwargs)
    got = ours.generate(IDS, attention_mask=MASK, stopping_criteria=[EndsWith(token)], **kwargs)
    assert torch.equal(got, want)
    if beams == 1:
        assert got.shape[1] < free.shape[1] or not torch.equal(got, free)


def test_transformers_stop_strings_criteria_through_it(tmp_path_factory, shared_dir):
    """transformers' StopStringCriteria (its `stop_strings`, which needs transformers' tokenizer)
    works as a criterion: the same ids as transformers' generate(stop_strings=..., tokenizer=...)."""
    import shutil

    folder = tmp_path_factory.mktemp("tokenizer")
    shutil.copy(shared_dir / "assets" / "llama2c_tokenizer.model", folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    hf, ours = peaked_llama_pair(tmp_path_factory, 19, vocab_size=32000, eos_token_id=2, pad_token_id=0)
    ids = torch.tensor([tok("The cat").input_ids])
    free = ours.generate(ids, max_new_tokens=12, eos_token_id=[])
    text = tok.decode(free[0, ids.shape[1]:])
    stop = next(text[i:i + 3] for i in range(2, len(text) - 3) if " " not in text[i:i + 3])  # inside a word
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, eos_token_id=[],
                       stop_strings=[stop], tokenizer=tok)
    got = ours.generate(ids, max_new_tokens=12, eos_token_id=[],
                        stopping_criteria=[transformers.StopStringCriteria(tok, [stop])])
    assert torch.equal(got, want) and got.shape[1] < free.shape[1]


def test_a_broken_processor_is_named_and_its_exception_reaches_the_caller(pair):
    _, ours = pair
    run = lambda **kw: ours.generate(IDS, attention_mask=MASK, max_new_tokens=3, **kw)  # noqa: E731

    def boom(ids, scores):
        raise KeyError("from the processor")

    with pytest.raises(KeyError, match="from the processor"):
        run(logits_processor=[boom])
    with pytest.raises(TypeError, match="returned list, not the scores tensor"):
        run(logits_processor=[lambda ids, scores: [1, 2]])
    with pytest.raises(ValueError, match="logits_processor must return the scores' shape"):
        run(logits_processor=[lambda ids, scores: scores[:, :5]])
    with pytest.raises(ValueError, match="stopping_criteria must return one bool per row"):
        run(stopping_criteria=[lambda ids, scores: torch.zeros(7, dtype=torch.bool)])
    with pytest.raises(TypeError, match="logits_processor: expected callables"):
        run(logits_processor=[3])
    with pytest.raises(ValueError, match="RepetitionPenaltyLogitsProcessor, which this call's settings also make"):
        run(logits_processor=[transformers.RepetitionPenaltyLogitsProcessor(1.2)], repetition_penalty=1.5)
    assert torch.equal(run(logits_processor=[]), run())  # empty, as None: nothing


def test_streams_and_other_threads_run_them(pair):
    """C++ takes the GIL to call them: a stream, and generate on another thread while this one
    holds no lock, give generate's ids (a hook called without the GIL would crash or hang)."""
    from concurrent.futures import ThreadPoolExecutor

    _, ours = pair
    kwargs = dict(attention_mask=MASK, max_new_tokens=6)
    want = ours.generate(IDS, logits_processor=[Alternate()], **kwargs)
    streamed = torch.stack(list(ours.stream(IDS, logits_processor=[Alternate()], **kwargs)), 1)
    assert torch.equal(streamed, want[:, IDS.shape[1]:])
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(ours.generate, IDS, logits_processor=[Alternate()], **kwargs) for _ in range(2)]
        assert all(torch.equal(run.result(timeout=60), want) for run in runs)


@pytest.mark.parametrize("mode", [dict(), dict(num_beams=3, num_return_sequences=2),
                                  dict(forced_eos_token_id=3, eos_token_id=3, num_beams=2)])
def test_prefix_allowed_tokens_fn_equals_transformers(pair, mode):
    """Applied where transformers applies it: before a forced eos, which then overrides it."""
    hf, ours = pair

    def allowed(batch_id, ids):  # each prompt its own alphabet, shifting with the length
        return [(int(ids.shape[0]) * 7 + batch_id * 11 + k) % 97 for k in range(0, 30, 3)]

    kwargs = dict(max_new_tokens=7, prefix_allowed_tokens_fn=allowed, **mode)
    want = hf.generate(IDS, attention_mask=MASK, do_sample=False, **kwargs)
    got = ours.generate(IDS, attention_mask=MASK, **kwargs)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="prefix_allowed_tokens_fn returned no token for batch ID 0"):
        ours.generate(IDS, attention_mask=MASK, max_new_tokens=2, prefix_allowed_tokens_fn=lambda b, ids: [])


class StopRow0After(transformers.StoppingCriteria):
    """Ends the first row once it holds `length` ids; records what scores it was handed."""

    def __init__(self, length):
        self.length, self.seen = length, []

    def __call__(self, input_ids, scores, **kwargs):
        self.seen.append(None if scores is None else len(scores))
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        done[0] = input_ids.shape[1] >= self.length
        return done


def test_hooks_see_what_transformers_hands_them(pair, tmp_path_factory):
    """From inputs_embeds alone the new ids only; criteria get every step's scores so far with
    output_scores, else None; without stop ids a row the criteria ended is not padded (it
    generates on until every row is done), as transformers does."""
    hf, ours = pair
    embeds = hf.get_input_embeddings()(IDS)
    criteria = lambda: [transformers.MaxLengthCriteria(max_length=3)]  # noqa: E731  counts new ids here
    want = hf.generate(inputs_embeds=embeds, attention_mask=MASK, max_new_tokens=6, do_sample=False,
                       stopping_criteria=transformers.StoppingCriteriaList(criteria()))
    got = ours.generate(inputs_embeds=embeds, attention_mask=MASK, max_new_tokens=6, stopping_criteria=criteria())
    assert torch.equal(got, want) and got.shape[1] == 3
    shapes = []
    ours.generate(inputs_embeds=embeds, attention_mask=MASK, max_new_tokens=3,
                  logits_processor=[lambda ids, scores: shapes.append(tuple(ids.shape)) or scores])
    assert shapes == [(2, 0), (2, 1), (2, 2)]
    for flags in (dict(), dict(return_dict_in_generate=True, output_scores=True)):
        mine, theirs = StopRow0After(9), StopRow0After(9)
        ours.generate(IDS, attention_mask=MASK, max_new_tokens=4, stopping_criteria=[mine], **flags)
        hf.generate(IDS, attention_mask=MASK, max_new_tokens=4, do_sample=False, stopping_criteria=[theirs], **flags)
        assert mine.seen == theirs.seen, flags
    hf_free, ours_free = peaked_llama_pair(tmp_path_factory, 17, eos_token_id=None, pad_token_id=0)
    want = hf_free.generate(IDS, attention_mask=MASK, max_new_tokens=6, do_sample=False,
                            stopping_criteria=[StopRow0After(8)])
    got = ours_free.generate(IDS, attention_mask=MASK, max_new_tokens=6, stopping_criteria=[StopRow0After(8)])
    assert torch.equal(got, want) and (got[0, 8:] != 0).any()


def test_a_hook_that_holds_its_own_stream_is_collected(pair):
    """C++ holds the hooks weakly and the Python options strongly, where the collector sees the
    cycle a hook referring back to its stream makes (it leaked with the stream's KV cache)."""
    import gc
    import weakref

    _, ours = pair

    class Holder:
        def __call__(self, ids, scores):
            return scores

    holder = Holder()
    stream = ours.stream(IDS, attention_mask=MASK, max_new_tokens=5, logits_processor=[holder])
    next(stream)
    holder.stream = stream  # the cycle: stream -> its options -> the hook -> holder -> stream
    alive = weakref.ref(holder)
    del holder, stream
    gc.collect()
    assert alive() is None
