"""transformers' `num_items_in_batch`: its Trainer passes the number of target tokens of the whole
accumulated step to a model that accepts loss kwargs, and the model returns its sum of token
losses over that number. Without it the Trainer averages each micro-batch's mean, which weighs
tokens unequally when micro-batches hold different numbers of them (padding)."""
from __future__ import annotations


def over_items(out, num_items_in_batch):
    """`out` (a causal LM output holding `loss_sum`) with its loss taken over `num_items_in_batch`."""
    if num_items_in_batch is not None and out.loss_sum is not None:
        out.loss = out.loss_sum / _on(num_items_in_batch, out.loss_sum)
    return out


def _on(n, like):
    return n.to(device=like.device, dtype=like.dtype) if hasattr(n, "to") else n
