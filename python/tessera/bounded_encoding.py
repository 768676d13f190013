"""A text's first ids without encoding what truncation drops: encoding takes ~100 bytes per
character, so a 40 MB line headed for a 2,048-token row took 4 GB. `encode_at_most` encodes
growing prefixes, cut only where the tokenizer's `prefix_rule` (read from its SentencePiece
model's TrainerSpec) says a prefix encodes as the whole text does.

    ids, left_out = encode_at_most(tokenizer, text, max_tokens)
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Tuple, Union

from .protobuf_wire import fields


def prefix_rule(model_path: Union[str, os.PathLike]) -> Optional[str]:
    """Where a SentencePiece model's encoding of a text prefix equals the whole text's (read from
    its TrainerSpec: model_type 3, split_by_whitespace 22, treat_whitespace_as_suffix 24,
    allow_whitespace_only_pieces 26): "anywhere" for BPE and char models, whose merges change only
    ids next to a cut; "space" for unigram and word models that split at whitespace and have no
    pieces of spaces alone (each word is segmented on its own); None for the rest (a unigram
    model lays out a run, of spaces too where pieces of spaces exist, by its whole length; pieces
    may span spaces: only the whole text is exact)."""
    try:
        spec = fields(fields(Path(model_path).read_bytes(), (2,)).get(2, b""), (3, 22, 24, 26))
    except Exception:  # a file sentencepiece itself reads: nothing is promised, the whole text is encoded
        return None
    model_type = spec.get(3, 1)  # UNIGRAM = 1, BPE = 2, WORD = 3, CHAR = 4
    if model_type in (2, 4):
        return "anywhere"
    if model_type in (1, 3) and spec.get(22, 1) and not spec.get(24, 0) and not spec.get(26, 0):
        return "space"
    return None


# One space between two words (SentencePiece's own space symbol, U+2581, counted as a space).
_WORD_GAP = re.compile("(?<=[^\\s\u2581]) (?=[^\\s\u2581])")


def encode_at_most(tokenizer, text: str, max_tokens: int, margin: int = 32) -> Tuple[List[int], bool]:
    """`tokenizer.encode(text, add_bos=False)[:max_tokens]`, and whether ids were left out, at a
    cost that follows `max_tokens` rather than the text where the tokenizer allows it: encoding
    takes ~100 bytes per character, so a 40 MB line headed for a 2,048-token row took 4 GB. A
    longer text is encoded by growing prefixes until one gives `margin` ids past what is kept,
    cut where the tokenizer's `prefix_rule` says a prefix encodes as the whole text does: anywhere
    for BPE (a cut changes the ids next to it, which the margin drops); at a single space between
    words for unigram models (a cut inside a word or a run of spaces changed ids from the first
    one: the run is laid out by its whole length). Other tokenizers, and a text with no such cut,
    are encoded whole, as before."""
    if max_tokens <= 0:
        return [], bool(text)
    rule = getattr(tokenizer, "prefix_rule", None)
    chars = 8 * (max_tokens + margin)
    while rule and len(text) > chars:
        if rule == "anywhere":
            cut = chars
        else:
            gap = _WORD_GAP.search(text, chars)
            if gap is None:
                break
            cut = gap.start()
        ids = tokenizer.encode(text[:cut], add_bos=False)
        if len(ids) >= max_tokens + margin:
            return ids[:max_tokens], True
        chars = 4 * cut
    ids = tokenizer.encode(text, add_bos=False)
    return ids[:max_tokens], len(ids) > max_tokens
