"""transformers' `return_dict_in_generate=True` with `output_scores` / `output_logits`: generate's
ids as a GenerateDecoderOnlyOutput (`sequences`, `scores`, `logits`) or, with beam search, a
GenerateBeamDecoderOnlyOutput (also `sequences_scores`, `beam_indices`), and
`compute_transition_scores`. C++ records each step's tensors while decoding, only when asked for
(a GenerationRecord in the options): the scores are the ones the ids were chosen by, in any dtype.
They were recomputed in one forward over prompt and answer, exact only to the model's rounding."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .. import _C
from .outputs import ModelOutput

FLAGS = ("return_dict_in_generate", "output_scores", "output_logits")


class GenerateDecoderOnlyOutput(ModelOutput):
    """sequences, scores, logits (attentions, hidden_states and past_key_values are not kept)."""
    fields = ("sequences", "scores", "logits", "attentions", "hidden_states", "past_key_values")


class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """sequences, sequences_scores, scores, logits, beam_indices (as transformers' beam search)."""
    fields = ("sequences", "sequences_scores", "scores", "logits", "beam_indices", "attentions", "hidden_states",
              "past_key_values")


def pop_flags(kwargs: Dict[str, Any], defaults: Optional[Dict[str, Any]] = None) -> Dict[str, bool]:
    """The output flags of a generate call: the model's generation config's (`defaults`), a call's
    True or False over them (taken out of its arguments; None keeps the config's, as in
    transformers; other values stay, refused by name later)."""
    flags = {k: True for k in FLAGS if (defaults or {}).get(k) is True}
    for key in FLAGS:
        if isinstance(kwargs.get(key), bool):
            flags[key] = kwargs.pop(key)
        elif key in kwargs and kwargs[key] is None:
            kwargs.pop(key)
    return {k: v for k, v in flags.items() if v}


def apply_flags(flags: Dict[str, bool], options, caller: str) -> None:
    """Refuses what transformers refuses; with return_dict_in_generate, sets the options' record
    that C++ fills while decoding."""
    if not flags.get("return_dict_in_generate"):
        return
    if options.max_new_tokens == 0:
        raise ValueError(f"{caller}(): max_new_tokens must be greater than 0 to return scores (transformers refuses "
                         "it too)")
    record = _C.llama.GenerationRecord()
    record.keep_scores, record.keep_logits = bool(flags.get("output_scores")), bool(flags.get("output_logits"))
    options.record = record


def generation_output(returned: torch.Tensor, options, flags: Dict[str, bool]):
    """What generate returns: the ids, or with return_dict_in_generate transformers' output object
    holding them and what the options' record kept, in transformers' field order (the other flags
    alone change nothing, as in transformers)."""
    if not flags.get("return_dict_in_generate"):
        return returned
    record = options.record
    beams = options.num_beams > 1
    out = (GenerateBeamDecoderOnlyOutput if beams else GenerateDecoderOnlyOutput)(sequences=returned)
    if flags.get("output_scores"):
        if beams:
            out.sequences_scores = record.sequences_scores
        out.scores = tuple(record.scores)
    if flags.get("output_logits"):
        out.logits = tuple(record.logits)
    if beams:
        out.beam_indices = record.beam_indices
    return out


def compute_transition_scores(sequences: torch.Tensor, scores, beam_indices: Optional[torch.Tensor] = None,
                              normalize_logits: bool = False) -> torch.Tensor:
    """transformers' GenerationMixin.compute_transition_scores: each new id's score [R, n]
    (log-probabilities with normalize_logits). Without `beam_indices` (greedy, sampling) row r
    reads its own scores; with them (beam search) each step reads the running beam the id came
    from, and a beam that ended early scores 0 past its end."""
    if not scores:
        return torch.empty(sequences.shape[0], 0)
    stacked = torch.stack(list(scores), 1)  # [rows of scores, steps, V]
    if normalize_logits:
        stacked = stacked.log_softmax(-1)
    if beam_indices is None:
        beam_indices = torch.arange(stacked.shape[0]).view(-1, 1).expand(-1, stacked.shape[1])
    beam_indices = beam_indices.to(stacked.device, torch.long)  # int32 in transformers: long cannot overflow
    ended = beam_indices < 0
    length = int((~ended).sum(-1).max())
    beam_indices, ended = beam_indices[:, :length], ended[:, :length]
    chosen = sequences[:, sequences.shape[1] - length:].to(stacked.device)
    step = torch.arange(length, device=stacked.device).expand_as(chosen)
    return stacked[beam_indices.clamp(min=0), step, chosen].masked_fill(ended, 0.0)
