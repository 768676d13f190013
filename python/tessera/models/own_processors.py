"""transformers' `logits_processor=`, `stopping_criteria=` and `prefix_allowed_tokens_fn=`: the
caller's own processors and criteria (a LogitsProcessorList / StoppingCriteriaList, or any list of
callables `(ids, scores)`), which C++ calls each step as transformers merges them: the processors
after those generate's settings make and before the sampling warpers (beam search: on the
log-probabilities), the criteria after each new token (beam search: on every candidate), the
prefix function where transformers' PrefixConstrainedLogitsProcessor runs. They see what
transformers' see: the ids (only the new ones from inputs_embeds alone), and for criteria every
step's scores so far with output_scores, else None."""
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


def _prefix_constraint(fn, beams: int, options):
    """transformers' PrefixConstrainedLogitsProcessor: each row may take only the tokens
    `fn(batch_id, row_ids)` allows (rows are batch-major, num_beams per prompt)."""
    def constrain(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, sent in enumerate(_ids(ids, options)):
            allowed = list(fn(row // beams, sent))
            if not allowed:
                raise ValueError(f"prefix_allowed_tokens_fn returned no token for batch ID {row // beams}: the "
                                 "constraint cannot be met")
            mask[row, allowed] = 0
        return scores + mask
    return constrain


def _ids(ids: torch.Tensor, options) -> torch.Tensor:
    """The ids a hook sees: from inputs_embeds alone, the new ids only (C++ decodes after stand-in
    ids for the prompt; transformers' hooks see no prompt ids then)."""
    return ids[:, options._stand_in:]


def _scores_so_far(options):
    """What transformers hands stopping criteria as scores: every step's so far with
    output_scores (return_dict_in_generate), else None."""
    record = options.record
    return tuple(record.scores) if record is not None and record.keep_scores else None


def attach(options, given: Dict[str, Any], caller: str, made: List[Any] = ()) -> None:
    """Takes `logits_processor`, `stopping_criteria` and `prefix_allowed_tokens_fn` out of a
    call's arguments (None or empty: nothing) and sets them on C++'s options, which hold them
    weakly: the Python options object keeps them (`_hooks`), so call it after apply_flags and keep
    the options alive while generating."""
    options._stand_in = 0
    hooks = []
    prefix = given.pop("prefix_allowed_tokens_fn", None)
    if prefix is not None:
        _callables(prefix, "prefix_allowed_tokens_fn")
        hooks.append(_prefix_constraint(prefix, options.num_beams, options))
        options.prefix_constraint = hooks[-1]
    processors = _callables(given.pop("logits_processor", None) or [], "logits_processor")
    # the criteria the call's settings make (stop_rules.py), then the caller's, as transformers merges them
    criteria = [*made, *_callables(given.pop("stopping_criteria", None) or [], "stopping_criteria")]
    clash = [type(p).__name__ for p in processors if _MADE_BY.get(type(p).__name__, lambda o: False)(options)]
    if clash:
        raise ValueError(f"{caller}(): logits_processor holds {', '.join(clash)}, which this call's settings also "
                         "make: transformers would use yours in place of its own, tessera cannot replace its C++ "
                         "one; drop the setting or your processor")
    if processors:
        def run(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            ids = _ids(ids, options)
            for processor in processors:
                scores = processor(ids, scores)
                if not isinstance(scores, torch.Tensor):
                    raise TypeError(f"logits_processor: {type(processor).__name__} returned "
                                    f"{type(scores).__name__}, not the scores tensor")
            return scores
        hooks.append(run)
        options.logits_processor = run
    if criteria:
        def done(ids: torch.Tensor, _step_scores) -> torch.Tensor:
            rows = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
            ids, scores = _ids(ids, options), _scores_so_far(options)
            for criterion in criteria:  # as StoppingCriteriaList: a row is done when any says so
                said = criterion(ids, scores)
                if said is None:
                    raise TypeError(f"stopping_criteria: {type(criterion).__name__} returned None, not a bool per row")
                said = torch.as_tensor(said, dtype=torch.bool, device=ids.device)
                if said.dim() > 1 or (said.dim() == 1 and said.shape[0] != ids.shape[0]):
                    raise ValueError(f"stopping_criteria must return one bool per row [{ids.shape[0]}]: "
                                     f"{type(criterion).__name__} returned shape {tuple(said.shape)}")
                rows = rows | said
            return rows
        hooks.append(done)
        options.stopping_criteria = done
    options._hooks = hooks
