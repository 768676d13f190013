"""transformers' token rules for generate: sequence_bias, bad_words_ids, forced_bos_token_id,
forced_eos_token_id, exponential_decay_length_penalty, suppress_tokens, begin_suppress_tokens.
Read here as transformers reads them (a GenerationConfig's values, a generation_config.json's
lists) and handed to C++'s options, which apply them in transformers' order
(csrc/tessera/models/llama/logits_processors.cpp)."""
from __future__ import annotations

import numbers
from typing import Any, List, Tuple

from ..schema import require

def _ids(value: Any, where: str) -> List[int]:
    require(isinstance(value, (list, tuple)) and len(value) > 0,
            f"{where}: expected a non-empty list of token ids, got {value!r}")
    for i in value:
        require(isinstance(i, numbers.Integral) and not isinstance(i, bool) and 0 <= i < 2 ** 63,
                f"{where}: token ids are integers >= 0, got {i!r}")
    return [int(i) for i in value]


def sequence_bias_pairs(value: Any, where: str) -> List[Tuple[List[int], float]]:
    """transformers' sequence_bias, a list of [[ids], bias] pairs (or the older {(ids): bias}),
    as the pairs its processor applies: a repeated sequence keeps its first place and its last
    bias, as transformers' dict of them does."""
    if value is None:
        return []
    items = value.items() if isinstance(value, dict) else value
    require(isinstance(value, dict) or isinstance(value, (list, tuple)),
            f"{where}: sequence_bias is a list of [[token ids], bias] pairs, got {value!r}")
    pairs = {}
    for item in items:
        require(isinstance(item, (list, tuple)) and len(item) == 2,
                f"{where}: sequence_bias pairs are [[token ids], bias], got {item!r}")
        ids, bias = item
        require(isinstance(bias, numbers.Real) and not isinstance(bias, bool) and bias == bias,
                f"{where}: the bias of sequence {ids!r} must be a number, got {bias!r}")
        pairs[tuple(_ids(ids, f"{where}: sequence_bias"))] = float(bias)
    return [(list(k), v) for k, v in pairs.items()]


def check(config, where: str) -> None:
    """The rules' shapes and id ranges, as a generate call checks them (C++ checks each id against
    the vocabulary)."""
    sequence_bias_pairs(config.sequence_bias, where)
    for ids in config.bad_words_ids or []:
        _ids(ids, f"{where}: bad_words_ids")
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        if getattr(config, key):
            _ids(getattr(config, key), f"{where}: {key}")
    if config.forced_bos_token_id is not None:
        _ids([config.forced_bos_token_id], f"{where}: forced_bos_token_id")
    eos = config.forced_eos_token_id
    if eos is not None:
        _ids(eos if isinstance(eos, (list, tuple)) else [eos], f"{where}: forced_eos_token_id")
    decay = config.exponential_decay_length_penalty
    if decay is not None:
        start = decay[0] if isinstance(decay, (list, tuple)) and len(decay) == 2 else None
        whole = isinstance(start, numbers.Real) and not isinstance(start, bool) and float(start).is_integer()
        require(whole and 0 <= start < 2 ** 63 and isinstance(decay[1], numbers.Real)  # 2.0 as transformers takes it
                and abs(float(decay[1])) < float("inf"),
                f"{where}: exponential_decay_length_penalty is (start index >= 0, decay factor), got {decay!r}")


def token_ids(key: str, value: Any) -> List[int]:
    """The ids a checked setting names that generate requires to be tokens of the model: stop and
    pad ids, and the rules' (suppress_tokens may name others: transformers skips them)."""
    if key in ("eos_token_id", "pad_token_id", "forced_bos_token_id", "forced_eos_token_id"):
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if key == "bad_words_ids":
        return [i for ids in value for i in ids]
    if key == "sequence_bias":
        return [i for ids, _ in sequence_bias_pairs(value, key) for i in ids]
    return []


def apply(options, config) -> None:
    """The checked rules of `config` onto C++'s GenerationOptions."""
    options.sequence_bias = sequence_bias_pairs(config.sequence_bias, "generate()")
    options.bad_words_ids = [list(ids) for ids in config.bad_words_ids or []]
    options.forced_bos_token_id = -1 if config.forced_bos_token_id is None else config.forced_bos_token_id
    eos = config.forced_eos_token_id
    options.forced_eos_token_ids = [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
    decay = config.exponential_decay_length_penalty
    options.exponential_decay_length_penalty = None if decay is None else (int(decay[0]), float(decay[1]))
    options.suppress_tokens = list(config.suppress_tokens or [])
    options.begin_suppress_tokens = list(config.begin_suppress_tokens or [])


def reads_prompt_ids(options) -> List[str]:
    """The rules set in `options` that read the prompt's ids or its length (from inputs_embeds
    alone transformers has neither: it would apply them otherwise)."""
    read = [f"{name} (a sequence of more than one token; off: None)"
            for name, seqs in (("sequence_bias", [s for s, _ in options.sequence_bias]),
                               ("bad_words_ids", options.bad_words_ids)) if any(len(s) > 1 for s in seqs)]
    forced = options.forced_bos_token_id
    return read + ([f"forced_bos_token_id {forced} (off: None)"] if forced >= 0 else [])
