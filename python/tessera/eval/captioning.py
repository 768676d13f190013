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
from .._warn import warn

# pycocoevalcap's PTBTokenizer drops these tokens after tokenizing
PUNCTUATIONS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "{": " -lcb- ", "}": " -rcb- ", "[": " -lsb- ", "]": " -rsb- "}
_CLITIC = re.compile(r"(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
# PTB's split words (cannot -> can not, gonna -> gon na) and the abbreviations it keeps whole.
_SPLIT = re.compile(r"\b(can)(not)\b|\b(gon|wan|got)(na|ta)\b")
_ABBREVIATIONS = "mr|mrs|ms|dr|st|jr|sr|vs|prof|mt|co|inc|ltd|etc|dept|ave|blvd"  # PTB keeps these whole
_TOKEN = re.compile(
    r"\.\.\.|--|-[lr][rcs]b-|n't|'(?:s|re|ve|ll|d|m)\b"   # ellipsis, dashes, brackets, clitics
    r"|\d+(?:[.,:/]\d+)+(?:-\w+)*"                       # 3.5, 1,000, 5:30, 1/2
    rf"|\b(?:{_ABBREVIATIONS})\.(?=\s|$)"                   # Mr. (kept whole, as PTB keeps it)
    r"|\w+(?:\.\w+)+\.?(?=\s|$)|\w+(?:[.@]\w+)*@\w+(?:\.\w+)+"  # u.s., e-mail addresses
    r"|\w+(?:['/-]\w+)*"                                  # o'clock, and/or, t-shirt
    r"|[!?]{2,}|[^\w\s'\"]")                              # !!! and ?! kept whole; other symbols; quotes
                                                          # are PTB's `` and '' (dropped)


# Typographic forms as PTB reads them: curly apostrophes split clitics ("it’s" -> it 's), curly
# quotes and dashes become `` '' -- (dropped), an ellipsis ... (dropped). Generated answers carry
# them often; left alone they kept BLEU-4 at 0.32 where PTB gave 1.0.
_TYPOGRAPHIC = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": " -- ",
                              "\u2013": " -- ", "\u2026": "...", "\u00a0": " "})


def simple_tokenize(text: str) -> str:
    """A Python approximation of `PTBTokenizer -lowerCase` followed by pycocoevalcap's filter
    (brackets become -lrb- and kin, as PTB writes them lower-cased; clitics split off; quotes,
    which PTB turns into `` and '', dropped), for machines without Java."""
    text = text.translate(_TYPOGRAPHIC).lower().replace("\n", " ")
    for b, name in _BRACKETS.items():
        text = text.replace(b, name)
    text = _SPLIT.sub(lambda m: " ".join(g for g in m.groups() if g), _CLITIC.sub(r"\1 \2", text))
    return " ".join(t for t in _TOKEN.findall(text) if t not in PUNCTUATIONS)


_SENTINEL = "zzsentinelzz"  # a word PTBTokenizer keeps as it is (lower-case letters)


def ptb_tokenize(captions: Dict[Any, List[str]]) -> Dict[Any, List[str]]:
    """pycocoevalcap's PTBTokenizer run as it runs it (its Stanford jar, `-preserveLines
    -lowerCase`, the same filter), with the captions in a temporary file of the system's temporary
    folder rather than the package's own (read-only in many installs; a failed run left it there)."""
    import os
    import subprocess
    import tempfile

    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    java = shutil.which("java")
    if java is None:
        raise ValueError("caption metrics: tokenizer 'ptb' runs Stanford's PTBTokenizer on Java, and no `java` is on "
                         "PATH (install a JRE, or use tokenizer 'simple' / 'auto')")
    jar = os.path.join(os.path.dirname(os.path.abspath(ptb.__file__)), ptb.STANFORD_CORENLP_3_4_1_JAR)
    # One caption per line: every line break Java reads (\r, \f, U+2028 ...) becomes a space, or
    # the captions after it were scored against other images' references. A blank caption is
    # tokenized as "" here; and a last line that Java prints nothing for (only characters it drops:
    # U+200B, a BOM, NUL) is never last: a sentinel line follows the captions.
    rows = [(k, " ".join(c.splitlines())) for k, v in captions.items() for c in v]
    keys = [k for k, c in rows if c.strip()]
    text = "\n".join([c for _, c in rows if c.strip()] + [_SENTINEL])
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        run = subprocess.run([java, "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                              "-lowerCase", f.name], capture_output=True, check=False)
    finally:
        os.remove(f.name)
    if run.returncode != 0:
        raise ValueError(f"caption metrics: PTBTokenizer failed ({run.stderr.decode(errors='replace')[-300:]})")
    lines = run.stdout.decode().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[-1] == _SENTINEL:
        lines.pop()
    if len(lines) != len(keys):
        raise ValueError(f"caption metrics: PTBTokenizer gave {len(lines)} lines for {len(keys)} captions; scores "
                         "would pair captions with other images' references")
    tokenized = iter(lines)
    out: Dict[Any, List[str]] = {}
    for k, c in rows:
        line = next(tokenized) if c.strip() else ""
        out.setdefault(k, []).append(" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS))
    return out


def _tokenized(captions: Dict[Any, List[str]], tokenizer: str) -> Dict[Any, List[str]]:
    if tokenizer == "ptb":
        return ptb_tokenize(captions)
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
        if tokenizer == "simple":
            warn("caption metrics: no `java` on PATH, so captions are tokenized by tessera's stand-in for "
                 "PTBTokenizer; scores can differ slightly from the COCO server's (reported as "
                 "caption_tokenizer: simple)")
    res = _tokenized({k: [v] for k, v in predictions.items()}, tokenizer)
    gts = _tokenized({k: list(v) for k, v in references.items()}, tokenizer)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"BLEU-4": float(bleu[3]), "CIDEr-D": float(cider), "caption_tokenizer": tokenizer,
            "num_captions": len(predictions)}
