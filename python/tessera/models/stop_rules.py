"""transformers' `max_time` and `stop_strings` (with generate's `tokenizer=`): stopping criteria
that generate appends to the caller's own, as transformers' generate makes them from its settings.

`max_time` ends every row once that many seconds have passed since generate began (the prompt's
forward included). A stop string ends a row when the row's last token holds it, or holds its end at
the token's start with the tokens before holding the rest (the earliest of them may start before
it: "st" + "opera" ends "stop"; "stop" + "at" does not, the string lay in the past already).
Tokens are matched as the UTF-8 bytes they add after other text, so a character split over byte
tokens still matches. The rule is transformers' StopStringCriteria's, checked against it on every
row of tests/python/test_stop_rules.py."""
from __future__ import annotations

import functools
import json
import time
from typing import Callable, List, Sequence

import torch

_PREFIX = "abcdef"  # text before each token, so that it decodes as a continuation


def criteria(config, tokenizer, caller: str) -> List[Callable]:
    """The criteria a call's settings make (transformers' order: time, then strings)."""
    made = []
    if config.max_time is not None:
        made.append(max_time_criterion(config.max_time))
    if config.stop_strings is not None:  # "" too: it ends a row at its first token, as in transformers
        made.append(stop_string_criterion(config.stop_strings, tokenizer, caller))
    return made


def max_time_criterion(seconds: float) -> Callable:
    start = time.time()

    def over(ids: torch.Tensor, _scores) -> torch.Tensor:
        return torch.full((ids.shape[0],), time.time() - start > seconds, dtype=torch.bool, device=ids.device)
    return over


def stop_string_criterion(stop_strings, tokenizer, caller: str) -> Callable:
    """Checked as a setting already (GenerationConfig.validate): a string or a non-empty list."""
    strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
    if tokenizer is None:
        raise ValueError(f"{caller}(): stop_strings {strings!r} need the model's tokenizer: pass it as "
                         "tokenizer= (tessera's or transformers'), as transformers' generate asks")
    texts, stops = token_texts(tokenizer), [s.encode("utf-8") for s in strings]
    window = max(1, *(len(s) for s in stops))  # tokens looked back at: one per byte at most, as transformers

    def ended(ids: torch.Tensor, _scores) -> torch.Tensor:
        rows = [any(_ends_with(row, texts, s) for s in stops) for row in ids[:, -window:].tolist()]
        return torch.tensor(rows, dtype=torch.bool, device=ids.device)
    return ended


def _ends_with(row: Sequence[int], texts: List[bytes], stop: bytes) -> bool:
    """Whether the row's last token holds `stop`, or holds its end at its start and the tokens
    before it hold the rest, the earliest of them possibly starting before it."""
    if not row or not 0 <= row[-1] < len(texts):
        return False
    last = texts[row[-1]]
    if stop in last:
        return True
    for overlap in range(1, min(len(last), len(stop)) + 1):
        if last[:overlap] != stop[len(stop) - overlap:]:
            continue
        rest, k = stop[:len(stop) - overlap], len(row) - 2
        while rest and k >= 0 and 0 <= row[k] < len(texts):
            text = texts[row[k]]
            if len(text) >= len(rest):
                rest = b"" if text.endswith(rest) else None
                break
            if not rest.endswith(text):
                break
            rest, k = rest[:len(rest) - len(text)], k - 1
        if rest == b"":
            return True
    return False


@functools.lru_cache(maxsize=4)
def token_texts(tokenizer) -> List[bytes]:
    """Each id's text (UTF-8) as it continues other text: decoded after a fixed prefix, the prefix
    cut. A byte token ("<0x0A>", a byte-level BPE piece) is its byte(s), so that a character split
    over byte tokens still matches. transformers' tokenizers through their token strings,
    tessera's SentencePiece through decode (a control token, which decode drops, and unk as their
    piece text, as transformers keeps them)."""
    if hasattr(tokenizer, "convert_tokens_to_string"):  # transformers'
        mode = _byte_mode(tokenizer)
        base = tokenizer.convert_ids_to_tokens(tokenizer(_PREFIX, add_special_tokens=False)["input_ids"])
        by_id = {i: t for t, i in tokenizer.get_vocab().items()}
        levels = _byte_level_chars() if mode == "byte_level" else {}
        texts = []
        for i in range(max(by_id) + 1):
            token = by_id.get(i)
            if token is None:
                texts.append(b"")
            elif mode == "byte_fallback" and _byte_piece(token) is not None:
                texts.append(_byte_piece(token))
            elif mode == "byte_level" and all(c in levels for c in token):
                texts.append(bytes(levels[c] for c in token))
            else:
                texts.append(_cut(tokenizer.convert_tokens_to_string(base + [token])))
        return texts
    if hasattr(tokenizer, "id_to_piece") and hasattr(tokenizer, "decode"):  # tessera's SentencePiece
        base = tokenizer.encode(_PREFIX, add_bos=False)
        texts = []
        for i in range(tokenizer.vocab_size):
            piece = tokenizer.id_to_piece(i)
            byte = _byte_piece(piece)
            text = tokenizer.decode(base + [i])
            control = text == _PREFIX or i == tokenizer.unk_id  # dropped, or unk's " \u2047 "
            texts.append(byte if byte is not None else _cut(_PREFIX + piece if control else text))
        return texts
    raise TypeError(f"tokenizer must be tessera's SentencePieceTokenizer or a transformers tokenizer, got "
                    f"{type(tokenizer).__name__}")


def _cut(text: str) -> bytes:
    return (text[text.index(_PREFIX) + len(_PREFIX):] if _PREFIX in text else text).encode("utf-8")


def _byte_piece(piece: str):
    """SentencePiece's byte-fallback piece "<0xNN>" as its byte, else None."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            return None
    return None


def _byte_mode(tokenizer):
    """How a transformers tokenizer's decoder writes bytes: "byte_level" (GPT-2's characters for
    bytes), "byte_fallback" ("<0xNN>" pieces), or None (whole characters)."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return None
    if type(decoder).__name__ == "ByteLevel":
        return "byte_level"
    try:
        state = json.loads(decoder.__getstate__())
    except (AttributeError, TypeError, ValueError):
        return None
    types = set()

    def walk(node):
        if isinstance(node, dict):
            types.add(node.get("type"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(state)
    return "byte_fallback" if "ByteFallback" in types else "byte_level" if "ByteLevel" in types else None


@functools.lru_cache(maxsize=1)
def _byte_level_chars() -> dict:
    """GPT-2's byte-level alphabet, character to byte: printable bytes as themselves, the others
    shifted past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1),
                 *range(ord("\xae"), ord("\xff") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars
