"""transformers' `return_dict_in_generate=True` with `output_scores` / `output_logits`: generate's
ids as a GenerateDecoderOnlyOutput (`sequences`, `scores`, `logits`), and
`compute_transition_scores`. C++ decodes without handing its logits back, so they are recomputed
in one forward over the prompt and the new ids (the model's forward reads left padding from the
attention mask as generate does; equal to the decoding step's to fp32 rounding), and the scores
are those logits through the processors generate applied, in transformers' order: repetition
penalty, min_new_tokens, then when sampling temperature, top-k and top-p. Beam search's scores
(per-beam, with beam indices) are not offered."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch

from .outputs import ModelOutput

FLAGS = ("return_dict_in_generate", "output_scores", "output_logits")


class GenerateDecoderOnlyOutput(ModelOutput):
    """sequences, scores, logits (attentions, hidden_states and past_key_values are not kept)."""
    fields = ("sequences", "scores", "logits", "attentions", "hidden_states", "past_key_values")


def pop_flags(kwargs: Dict[str, Any]) -> Dict[str, bool]:
    """The output flags a generate call set to True, taken out of its arguments (False and None
    stay for no_op_arguments; other values are refused by name there)."""
    return {k: kwargs.pop(k) for k in FLAGS if kwargs.get(k) is True}


def check_flags(flags: Dict[str, bool], options, caller: str) -> None:
    if flags and options.num_beams > 1:
        raise ValueError(f"{caller}(): {', '.join(f'{k}=True' for k in flags)} with beam search (num_beams > 1) is not "
                         "supported: tessera returns the best beam's ids alone")


def _processed(logits: torch.Tensor, seen: torch.Tensor, step: int, options) -> torch.Tensor:
    """One step's scores as transformers' logits processors make them from its logits [B, V]
    after the ids `seen` [B, t] (prompt and new ids so far)."""
    scores = logits.clone()
    if options.repetition_penalty != 1.0:
        picked = scores.gather(1, seen)
        scores.scatter_(1, seen, torch.where(picked < 0, picked * options.repetition_penalty,
                                             picked / options.repetition_penalty))
    if step < options.min_new_tokens and options.eos_token_ids:
        scores[:, [i for i in options.eos_token_ids if 0 <= i < scores.shape[1]]] = float("-inf")
    if options.do_sample:
        if options.temperature != 1.0:
            scores = scores / options.temperature
        if options.top_k > 0:
            kth = scores.topk(min(options.top_k, scores.shape[1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if options.top_p < 1.0:
            ordered, order = scores.sort(dim=-1, descending=False)
            drop = ordered.softmax(-1).cumsum(-1) <= 1 - options.top_p
            drop[:, -1] = False  # min_tokens_to_keep 1
            scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return scores


def generation_output(sequences: torch.Tensor, prompt_length: int, attention_mask: Optional[torch.Tensor],
                      forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], options,
                      flags: Dict[str, bool]) -> GenerateDecoderOnlyOutput:
    """`sequences` [B, P + n] as transformers' output object; `forward(ids, mask)` gives the logits
    [B, P + n, V] of the whole sequence."""
    out = GenerateDecoderOnlyOutput(sequences=sequences)
    n = sequences.shape[1] - prompt_length
    if not (flags.get("output_scores") or flags.get("output_logits")) or n == 0:
        if flags.get("output_scores"):
            out.scores = ()
        if flags.get("output_logits"):
            out.logits = ()
        return out
    mask = torch.ones_like(sequences)
    if attention_mask is not None:
        mask[:, :prompt_length] = attention_mask
    with torch.no_grad():
        logits = forward(sequences, mask)[:, prompt_length - 1:-1].float()  # the step that chose each new id
    steps: List[torch.Tensor] = list(logits.unbind(1))
    if flags.get("output_logits"):
        out.logits = tuple(steps)
    if flags.get("output_scores"):
        out.scores = tuple(_processed(s, sequences[:, :prompt_length + t], t, options) for t, s in enumerate(steps))
    return out


def compute_transition_scores(sequences: torch.Tensor, scores, beam_indices: Optional[torch.Tensor] = None,
                              normalize_logits: bool = False) -> torch.Tensor:
    """transformers' GenerationMixin.compute_transition_scores for greedy and sampled outputs: each
    new id's score [B, n] (log-probabilities with normalize_logits)."""
    if beam_indices is not None:
        raise ValueError("compute_transition_scores: beam_indices are not supported (tessera's beam search returns "
                         "no scores)")
    if not scores:
        return torch.empty(sequences.shape[0], 0)
    stacked = torch.stack(list(scores), 1)  # [B, n, V]
    if normalize_logits:
        stacked = stacked.log_softmax(-1)
    chosen = sequences[:, -stacked.shape[1]:].to(stacked.device)
    return stacked.gather(2, chosen.unsqueeze(-1)).squeeze(-1)
