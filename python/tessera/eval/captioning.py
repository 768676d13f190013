"""Captioning metrics as the COCO caption server computes them (pycocoevalcap): BLEU-4 and
CIDEr-D over generated captions against their references. Captions are tokenized by Stanford's
PTBTokenizer (Java) as on the server; without Java, by a Python stand-in that lower-cases and
drops the same punctuation tokens (reported as `caption_tokenizer`, scores then differ slightly).

    caption_metrics({"img1": "a dog runs"}, {"img1": ["a dog is running", "the dog runs"]})
"""
from __future__ import annotations

import re
import shutil
from typing import Any, Dict, List

# pycocoevalcap's PTBTokenizer drops these tokens after tokenizing
PUNCTUATIONS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "{": " -lcb- ", "}": " -rcb- ", "[": " -lsb- ", "]": " -rsb- "}
_CLITIC = re.compile(r"(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"\.\.\.|--|-[lr][rcs]b-|n't|'\w+|\d+(?:[.,]\d+)+(?:-\w+)*|\w+(?:-\w+)*|[^\w\s]")


def simple_tokenize(text: str) -> str:
    """A Python approximation of `PTBTokenizer -lowerCase` followed by pycocoevalcap's filter
    (brackets become -lrb- and kin, as PTB writes them lower-cased; clitics split off)."""
    text = text.lower().replace("\n", " ")
    for b, name in _BRACKETS.items():
        text = text.replace(b, name)
    text = _CLITIC.sub(r"\1 \2", text)
    return " ".join(t for t in _TOKEN.findall(text) if t not in PUNCTUATIONS)


def _tokenized(captions: Dict[Any, List[str]], tokenizer: str) -> Dict[Any, List[str]]:
    if tokenizer == "ptb":
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return {k: [simple_tokenize(c) for c in v] for k, v in captions.items()}


def caption_metrics(predictions: Dict[Any, str], references: Dict[Any, List[str]],
                    tokenizer: str = "auto") -> Dict[str, Any]:
    """{"BLEU-4", "CIDEr-D", "caption_tokenizer", "num_captions"}; `predictions` maps an id to one
    generated caption, `references` the same ids to their reference captions. tokenizer: auto
    (ptb when `java` is on PATH), ptb or simple."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise ImportError("caption metrics need pycocoevalcap (pip install pycocoevalcap)") from None
    if tokenizer not in ("auto", "ptb", "simple"):
        raise ValueError(f"tokenizer must be auto, ptb or simple, got {tokenizer!r}")
    if not predictions:
        raise ValueError("caption_metrics: no predictions")
    missing = [k for k in predictions if k not in references]
    if missing or len(references) != len(predictions):
        extra = [k for k in references if k not in predictions]
        raise ValueError(f"caption_metrics: predictions and references need the same ids; first without a reference: "
                         f"{missing[0] if missing else None!r}, first without a prediction: {extra[0] if extra else None!r}")
    for k, refs in references.items():
        if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"caption_metrics: references[{k!r}] must be a non-empty list of strings")
        if not isinstance(predictions[k], str):
            raise ValueError(f"caption_metrics: predictions[{k!r}] must be a string")
    if tokenizer == "auto":
        tokenizer = "ptb" if shutil.which("java") else "simple"
    res = _tokenized({k: [v] for k, v in predictions.items()}, tokenizer)
    gts = _tokenized({k: list(v) for k, v in references.items()}, tokenizer)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"BLEU-4": float(bleu[3]), "CIDEr-D": float(cider), "caption_tokenizer": tokenizer,
            "num_captions": len(predictions)}
