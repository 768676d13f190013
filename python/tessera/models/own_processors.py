"""transformers' `logits_processor=`, `stopping_criteria=` and `prefix_allowed_tokens_fn=`: the
caller's own processors and criteria (a LogitsProcessorList / StoppingCriteriaList, or any list of
callables `(ids, scores)`), which C++ calls each step as transformers merges them: the processors
after those generate's settings make and before the sampling warpers (beam search: on the
log-probabilities), the criteria after each new token (beam search: on every candidate, with
scores None), the prefix function where transformers' PrefixConstrainedLogitsProcessor runs."""
from __future__ import annotations

from typing import Any, Dict, List

import torch

# transformers' processor classes that generate's own settings make; a caller's processor of one
# of these types replaces transformers' in place, which tessera cannot do with its C++ one.
_MADE_BY = {"RepetitionPenaltyLogitsProcessor": lambda o: o.repetition_penalty != 1.0,
            "NoRepeatNGramLogitsProcessor": lambda o: o.no_repeat_ngram_size > 0,
            "SequenceBiasLogitsProcessor": lambda o: bool(o.sequence_bias),
            "NoBadWordsLogitsProcessor": lambda o: bool(o.bad_words_ids),
            "MinLengthLogitsProcessor": lambda o: o.min_new_tokens > 0,
            "MinNewTokensLengthLogitsProcessor": lambda o: o.min_new_tokens > 0,
            "ForcedBOSTokenLogitsProcessor": lambda o: o.forced_bos_token_id >= 0,
            "ForcedEOSTokenLogitsProcessor": lambda o: bool(o.forced_eos_token_ids),
            "ExponentialDecayLengthPenalty": lambda o: o.exponential_decay_length_penalty is not None,
            "SuppressTokensLogitsProcessor": lambda o: bool(o.suppress_tokens),
            "SuppressTokensAtBeginLogitsProcessor": lambda o: bool(o.begin_suppress_tokens)}


def _callables(value: Any, name: str) -> List[Any]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not callable(item):
            raise TypeError(f"{name}: expected callables (ids, scores), got {type(item).__name__}")
    return items


def _prefix_constraint(fn, beams: int):
    """transformers' PrefixConstrainedLogitsProcessor: each row may take only the tokens
    `fn(batch_id, row_ids)` allows (rows are batch-major, num_beams per prompt)."""
    def constrain(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, sent in enumerate(ids):
            allowed = list(fn(row // beams, sent))
            if not allowed:
                raise ValueError(f"prefix_allowed_tokens_fn returned no token for batch ID {row // beams}: the "
                                 "constraint cannot be met")
            mask[row, allowed] = 0
        return scores + mask
    return constrain


def attach(options, given: Dict[str, Any], caller: str) -> None:
    """Takes `logits_processor`, `stopping_criteria` and `prefix_allowed_tokens_fn` out of a
    call's arguments (None or empty: nothing) and sets them on C++'s options."""
    prefix = given.pop("prefix_allowed_tokens_fn", None)
    if prefix is not None:
        _callables(prefix, "prefix_allowed_tokens_fn")
        options.prefix_constraint = _prefix_constraint(prefix, options.num_beams)
    processors = _callables(given.pop("logits_processor", None) or [], "logits_processor")
    criteria = _callables(given.pop("stopping_criteria", None) or [], "stopping_criteria")
    clash = [type(p).__name__ for p in processors if _MADE_BY.get(type(p).__name__, lambda o: False)(options)]
    if clash:
        raise ValueError(f"{caller}(): logits_processor holds {', '.join(clash)}, which this call's settings also "
                         "make: transformers would use yours in place of its own, tessera cannot replace its C++ "
                         "one; drop the setting or your processor")
    if processors:
        def run(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            for processor in processors:
                scores = processor(ids, scores)
                if not isinstance(scores, torch.Tensor):
                    raise TypeError(f"logits_processor: {type(processor).__name__} returned "
                                    f"{type(scores).__name__}, not the scores tensor")
            return scores
        options.logits_processor = run
    if criteria:
        def done(ids: torch.Tensor, scores) -> torch.Tensor:
            rows = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
            for criterion in criteria:  # as StoppingCriteriaList: a row is done when any says so
                said = torch.as_tensor(criterion(ids, scores), dtype=torch.bool, device=ids.device)
                if said.dim() > 1 or (said.dim() == 1 and said.shape[0] != ids.shape[0]):
                    raise ValueError(f"stopping_criteria must return one bool per row [{ids.shape[0]}]: "
                                     f"{type(criterion).__name__} returned shape {tuple(said.shape)}")
                rows = rows | said
            return rows
        options.stopping_criteria = done
