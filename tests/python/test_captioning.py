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


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java: Stanford's PTBTokenizer cannot run")
def test_python_tokenizer_equals_ptb_on_caption_like_text():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = ["A man's hat, isn't it?", "The (red) car -- fast...", "e-mail me: now!", "Two dogs; one cat.",
             "They're 3.5 m tall", "A 1,000-piece puzzle.", "A Dog  running\non grass"]
    ptb = PTBTokenizer().tokenize({0: [{"caption": t} for t in texts]})[0]
    assert [simple_tokenize(t) for t in texts] == ptb
    assert caption_metrics(PRED, REFS, tokenizer="ptb") == {**caption_metrics(PRED, REFS, tokenizer="simple"),
                                                            "caption_tokenizer": "ptb"}


@pytest.mark.parametrize("pred, refs, message", [
    ({}, {}, "no predictions"),
    ({"a": "x"}, {"b": ["x"]}, "first without a reference: 'a'"),
    ({"a": "x"}, {"a": []}, r"references\['a'\] must be a non-empty list"),
    ({"a": 3}, {"a": ["x"]}, r"predictions\['a'\] must be a string"),
])
def test_bad_input_is_named(pred, refs, message):
    with pytest.raises(ValueError, match=message):
        caption_metrics(pred, refs, tokenizer="simple")
