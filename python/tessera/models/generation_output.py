"""transformers' `return_dict_in_generate=True` with `output_scores` / `output_logits`: generate's
ids as a GenerateDecoderOnlyOutput (`sequences`, `scores`, `logits`), and
`compute_transition_scores`. C++ decodes without handing its logits back, so they are recomputed
in one forward over the prompt and the new ids (the model's forward reads left padding from the
attention mask as generate does; equal to the decoding step's to fp32 rounding), and the scores
are those logits through the processors generate applied, in transformers' order (C++'s own,
`_C.llama.processed_scores`: the token rules, repetition penalty, n-gram ban, min_new_tokens, and
when sampling the warpers from temperature to eta). Beam search records its own (GenerateBeamDecoderOnlyOutput: each step's scores and logits of
every running beam, the returned beams' sequences_scores and beam_indices) as it decodes, since
they belong to beams that the ids no longer show."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch

from .. import _C
from .._warn import warn
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
    """Refuses what transformers refuses; with beam search and return_dict_in_generate, sets the
    options' record that C++ fills while decoding."""
    if not flags.get("return_dict_in_generate"):
        return
    if options.max_new_tokens == 0:
        raise ValueError(f"{caller}(): max_new_tokens must be greater than 0 to return scores (transformers refuses "
                         "it too)")
    if options.num_beams > 1:
        record = _C.llama.BeamRecord()
        record.keep_scores, record.keep_logits = bool(flags.get("output_scores")), bool(flags.get("output_logits"))
        options.beam_record = record


def _processed(logits: torch.Tensor, seen: torch.Tensor, step: int, options, stops: List[int]) -> torch.Tensor:
    """One step's scores as generate made them (C++'s own processors, and warpers when sampling)
    from its logits [B, V] after the ids `seen` [B, t] (prompt and new ids so far); `stops` are
    the ids min_new_tokens holds back."""
    eos = torch.tensor([i for i in stops if 0 <= i < logits.shape[1]], dtype=torch.long, device=logits.device)
    return _C.llama.processed_scores(logits.clone(), seen, options, eos, step)  # never the logits themselves


def generation_output(model, sequences: torch.Tensor, prompt_length: int, attention_mask: Optional[torch.Tensor],
                      forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], options, flags: Dict[str, bool],
                      returned: Optional[torch.Tensor] = None):
    """What generate returns of `sequences` [B, P + n]: `returned` (the sequences themselves by
    default), or with return_dict_in_generate transformers' output object holding it (the other
    flags alone change nothing, as in transformers); `forward(ids, mask)` gives the logits
    [B, P + n, V] of the whole sequence."""
    returned = sequences if returned is None else returned
    if not flags.get("return_dict_in_generate"):
        return returned
    if options.beam_record is not None:
        return _beam_output(returned, options.beam_record, flags)
    out = GenerateDecoderOnlyOutput(sequences=returned)
    if not (flags.get("output_scores") or flags.get("output_logits")):
        return out
    if model.dtype != torch.float32:
        warn(f"generate(): the scores of a {str(model.dtype).replace('torch.', '')} model are recomputed in one forward, "
             "which differs from the decoding steps' by that dtype's rounding (a sampled id can fall outside the "
             "recomputed top-k or top-p); generate in float32 for scores that match the ids exactly")
    mask = torch.ones_like(sequences)
    if attention_mask is not None:
        mask[:, :prompt_length] = attention_mask
    with torch.no_grad():
        logits = forward(sequences, mask)[:, prompt_length - 1:-1].float()  # the step that chose each new id
    steps: List[torch.Tensor] = list(logits.unbind(1))
    if flags.get("output_scores"):  # transformers' field order: sequences, scores, logits
        stops = stop_ids(model, options)
        out.scores = tuple(_processed(s, sequences[:, :prompt_length + t], t, options, stops)
                           for t, s in enumerate(steps))
    if flags.get("output_logits"):
        out.logits = tuple(steps)
    return out


def _beam_output(sequences: torch.Tensor, record, flags: Dict[str, bool]) -> GenerateBeamDecoderOnlyOutput:
    """transformers' fields in its order: sequences_scores and scores with output_scores, logits
    with output_logits, beam_indices always."""
    out = GenerateBeamDecoderOnlyOutput(sequences=sequences)
    if flags.get("output_scores"):
        out.sequences_scores, out.scores = record.sequences_scores, tuple(record.scores)
    if flags.get("output_logits"):
        out.logits = tuple(record.logits)
    out.beam_indices = record.beam_indices
    return out


def stop_ids(model, options) -> List[int]:
    """The ids generate stopped at: the call's or generation config's, else the model config's
    (as C++ falls back to them)."""
    if options.eos_token_ids:
        return [int(i) for i in options.eos_token_ids]
    eos = (model.config.get("text_config") or model.config).get("eos_token_id")
    return [int(i) for i in (eos if isinstance(eos, list) else [eos] if eos is not None else [])]


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
