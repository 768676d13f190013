"""Sentence pairs as BertTokenizerFast encodes them: ``[CLS] a [SEP] b [SEP]`` with token types 0
for the first part and 1 for the second, and the truncation strategies of Hugging Face's
`tokenizers` (utils/truncation.rs), which decide how many ids of each text survive a
``max_length``."""
from __future__ import annotations

from typing import List, Tuple


def pair_lengths(n1: int, n2: int, budget: int, strategy: str) -> Tuple[int, int]:
    """How many ids of each text to keep so that both fit `budget` (max_length less the special
    tokens). ``longest_first``: the shorter text stays whole when the longer one can take the
    rest, else both get half (the second text the odd one); ``only_first`` / ``only_second`` cut
    that text alone and refuse when it cannot absorb the excess, as `tokenizers` does."""
    if n1 + n2 <= budget:
        return n1, n2
    if strategy == "longest_first":
        short, long_ = min(n1, n2), max(n1, n2)
        long_ = short if short > budget else max(short, budget - short)
        if short + long_ > budget:
            short, long_ = budget // 2, budget // 2 + budget % 2
        return (long_, short) if n1 > n2 else (short, long_)
    excess = n1 + n2 - budget
    which, n = ("first", n1) if strategy == "only_first" else ("second", n2)
    if excess >= n:  # the cut text would vanish: tokenizers' SequenceTooShort
        raise ValueError(f"truncation={strategy!r}: the {which} text has {n} tokens, too few to cut the {excess} "
                         f"that max_length asks for (use truncation='longest_first')")
    return (n1 - excess, n2) if which == "first" else (n1, n2 - excess)


def cut(ids: List[int], keep: int, left: bool) -> List[int]:
    """`keep` ids of `ids`, dropping from the start when `left` (truncation_side="left")."""
    if keep >= len(ids):
        return ids
    return ids[len(ids) - keep:] if left else ids[:keep]


def join_pair(a: List[int], b: List[int], cls: int, sep: int, special: bool) -> Tuple[List[int], List[int]]:
    """(input_ids, token_type_ids) of a pair; without special tokens the texts are joined bare,
    their types still 0 and 1."""
    if special:
        return [cls, *a, sep, *b, sep], [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return [*a, *b], [0] * len(a) + [1] * len(b)
