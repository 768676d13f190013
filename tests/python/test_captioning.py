"""Captioning metrics: BLEU-4 against the formula written out (clipped n-gram precisions, their
geometric mean, the brevity penalty with the closest reference length), CIDEr-D's fixed points,
the Python tokenizer against Stanford's PTBTokenizer where Java is present, and bad input."""
import math
import shutil
from collections import Counter

import pytest

pytest.importorskip("pycocoevalcap")
from tessera.eval.captioning import caption_metrics, simple_tokenize  # noqa: E402

PRED = {"a": "a dog runs on the grass", "b": "two cats sleep on a red sofa", "c": "a man rides a horse"}
REFS = {"a": ["a dog is running on the grass", "the dog runs across a field"],
        "b": ["two cats are sleeping on a sofa", "cats sleep on a red sofa today"],
        "c": ["a man is riding a brown horse", "a person on a horse"]}


def bleu4_by_the_formula(pred, refs):
    matched, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for k in pred:
        h = pred[k].split()
        rs = [r.split() for r in refs[k]]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]  # closest reference length
        for n in range(1, 5):
            grams = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            best = Counter()
            for r in rs:
                best |= Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matched[n - 1] += sum(min(c, best[g]) for g, c in grams.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    log_p = sum(math.log(m / t) for m, t in zip(matched, total)) / 4
    bp = min(1.0, math.exp(1 - ref_len / hyp_len))
    return bp * math.exp(log_p)


def test_bleu4_equals_the_formula():
    out = caption_metrics(PRED, REFS, tokenizer="simple")
    assert out["BLEU-4"] == pytest.approx(bleu4_by_the_formula(PRED, REFS), rel=1e-6)
    assert out["num_captions"] == 3 and out["caption_tokenizer"] == "simple"


def test_cider_is_zero_without_overlap_and_rises_with_it():
    none = caption_metrics({k: "zebra xylophone quartz" for k in PRED}, REFS, tokenizer="simple")
    assert none["CIDEr-D"] == 0.0 and none["BLEU-4"] < 1e-6
    exact = caption_metrics({k: v[0] for k, v in REFS.items()}, REFS, tokenizer="simple")
    assert exact["CIDEr-D"] > caption_metrics(PRED, REFS, tokenizer="simple")["CIDEr-D"] > 0


# Caption-like text with what COCO captions hold: quotes ("stop" signs), abbreviations, times,
# slashes, clitics, brackets, e-mail addresses, PTB's split words.
CAPTIONS = ["A man's hat, isn't it?", "The (red) car -- fast...", "e-mail me: now!", "Two dogs; one cat.",
            "They're 3.5 m tall", "A 1,000-piece puzzle.", "A Dog  running\non grass",
            'A man holding a "stop" sign.', "A dog and/or a cat.", "Fish & chips on a plate.",
            "A sign reads 'no parking'.", "A man at 5:30 pm.", "The U.S. flag flies.", "Mr. Smith walks his dog.",
            "A cat's toy; the cats' toys.", "A 50% off sign.", "The #1 fan!", "An e-mail from joe@example.com.",
            "It's 3 o'clock.", "A bird ... flying", 'He said: "hi"', "cannot stop", "A man gonna ride.", "A $5 bill.",
            "Two dogs (one black) play.", "A [red] car {blue}", "Isn't it great?", "They'd go; we'll see; I'm here",
            "A sign that says 'Welcome!'", "Dr. Who at St. Paul's", "A man -- tall -- walks", "Wait...what?",
            "A plate w/ food", "A vs. B", "A black-and-white photo.", "Shop's open 24/7", "A 12-year-old boy",
            "Don't walk sign", "a.m. and p.m.", "A $1.50 coffee", "I.B.M. logo", "Smith & Co. store", "WOW!!! A cat?!",
            "A 'no smoking' sign", "A yes/no question", "left/right arrows", "The answer is no.",
            "A photo of the approx. size", "Is it a dog? No.",
            # typographic forms, common in generated answers (the stand-in kept them: BLEU-4 0.32 for PTB's 1.0)
            "It’s a man’s “vintage” bike — parked on the street.", "A dog’s ball isn’t on the grass…",
            "The ‘best’ cat – ever", "the café’s menu", "a 1990–2000 range"]


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java: Stanford's PTBTokenizer cannot run")
def test_python_tokenizer_equals_ptb_on_caption_like_text():
    """Without Java the stand-in tokenizes; it gave quotes, slashes, times and abbreviations
    apart from PTB (CIDEr-D 17 % off on a quoted "stop" sign)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ptb = PTBTokenizer().tokenize({0: [{"caption": t} for t in CAPTIONS]})[0]
    assert [simple_tokenize(t) for t in CAPTIONS] == ptb
    assert caption_metrics(PRED, REFS, tokenizer="ptb") == {**caption_metrics(PRED, REFS, tokenizer="simple"),
                                                            "caption_tokenizer": "ptb"}


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java: Stanford's PTBTokenizer cannot run")
def test_tessera_runs_ptb_as_pycocoevalcap_does_without_writing_into_its_package(tmp_path):
    import os

    import pycocoevalcap.tokenizer.ptbtokenizer as ptb
    from tessera.eval.captioning import ptb_tokenize

    folder = os.path.dirname(ptb.__file__)
    before = set(os.listdir(folder))
    assert ptb_tokenize({0: CAPTIONS}) == ptb.PTBTokenizer().tokenize({0: [{"caption": t} for t in CAPTIONS]})
    assert set(os.listdir(folder)) == before


def test_without_java_ptb_is_a_clear_error_and_auto_says_it_falls_back(monkeypatch):
    import tessera.eval.captioning as captioning

    monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="no `java` is on PATH"):
        caption_metrics(PRED, REFS, tokenizer="ptb")
    with pytest.warns(UserWarning, match="no `java` on PATH.*stand-in"):
        assert caption_metrics(PRED, REFS)["caption_tokenizer"] == "simple"


@pytest.mark.parametrize("pred, refs, message", [
    ({}, {}, "no predictions"),
    ({"a": "x"}, {"b": ["x"]}, "first without a reference: 'a'"),
    ({"a": "x"}, {"a": []}, r"references\['a'\] must be a non-empty list"),
    ({"a": 3}, {"a": ["x"]}, r"predictions\['a'\] must be a string"),
])
def test_bad_input_is_named(pred, refs, message):
    with pytest.raises(ValueError, match=message):
        caption_metrics(pred, refs, tokenizer="simple")


def test_a_recipe_asking_for_caption_metrics_without_pycocoevalcap_is_refused_before_training(monkeypatch):
    """The missing package surfaced as a traceback at the first evaluation, after training."""
    import sys

    from tessera.train.llava_task import LlavaEval

    monkeypatch.setitem(sys.modules, "pycocoevalcap", None)  # import raises ImportError
    with pytest.raises(ValueError, match="eval.caption_metrics needs the pycocoevalcap package"):
        LlavaEval(caption_metrics=True).validate("eval")
    LlavaEval(caption_metrics=False).validate("eval")


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java: Stanford's PTBTokenizer cannot run")
@pytest.mark.parametrize("brk", ["\r", "\f", "\u2028", "\r\n", "\v"])
def test_a_line_break_inside_a_caption_keeps_every_caption_on_its_own_references(brk):
    """PTBTokenizer reads \\r, \\f, U+2028 ... as line ends: one caption became two lines and every
    later caption was scored against the previous image's references (pycocoevalcap 1.2 does the
    same). Each break is a space now, and a line count that differs is refused."""
    pred = {1: "a dog runs on the grass", 2: "two cats sleep on a red sofa", 3: "a man rides a horse"}
    refs = {1: ["a dog is running on the grass", "the dog runs across a field"],
            2: ["two cats are sleeping on a sofa", "cats sleep on a red sofa today"],
            3: ["a man is riding a brown horse", "a person on a horse"]}
    clean = caption_metrics(pred, refs, tokenizer="ptb")
    broken = caption_metrics({**pred, 2: "two cats" + brk + "sleep on a red sofa"},
                             {**refs, 1: [refs[1][0] + brk, refs[1][1]]}, tokenizer="ptb")
    assert broken["BLEU-4"] == pytest.approx(clean["BLEU-4"]) and broken["CIDEr-D"] == pytest.approx(clean["CIDEr-D"])


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java: Stanford's PTBTokenizer cannot run")
def test_a_blank_caption_scores_as_empty_anywhere():
    """As the last line, a blank caption gave PTBTokenizer's output one line too few, and the check
    against misaligned lines refused the whole evaluation."""
    refs = {1: ["a dog runs on the grass"], 2: ["two cats sleep"]}
    for blank in ("", "   "):
        for pred in ({1: blank, 2: "two cats sleep"}, {1: "a dog runs on the grass", 2: blank}):
            ptb = caption_metrics(pred, refs, tokenizer="ptb")
            simple = caption_metrics(pred, refs, tokenizer="simple")
            assert ptb["BLEU-4"] == pytest.approx(simple["BLEU-4"]) and ptb["CIDEr-D"] == pytest.approx(simple["CIDEr-D"])


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java: Stanford's PTBTokenizer cannot run")
@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff", "\x00", "\x07"])
def test_a_last_caption_of_characters_java_drops_is_scored_as_pycocoevalcap_scores_it(invisible):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from tessera.eval.captioning import ptb_tokenize

    captions = {1: ["a dog runs"], 2: ["two cats"], 3: [invisible]}
    want = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    assert ptb_tokenize(captions) == want
