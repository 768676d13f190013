"""transformers' `num_items_in_batch`: its Trainer passes the number of target tokens of the whole
accumulated step to a model that accepts loss kwargs, and the model returns its sum of token
losses over that number. Without it the Trainer averages each micro-batch's mean, which weighs
tokens unequally when micro-batches hold different numbers of them (padding)."""
from __future__ import annotations

from typing import Optional, Union

import torch


def over_items(mean_loss: Optional[torch.Tensor], labels: Optional[torch.Tensor],
               num_items_in_batch: Optional[Union[int, torch.Tensor]]) -> Optional[torch.Tensor]:
    """The shifted token loss (mean over this batch's targets) as a sum over `num_items_in_batch`."""
    if num_items_in_batch is None or mean_loss is None or labels is None:
        return mean_loss
    count = (labels[..., 1:] != -100).sum()
    if int(count) == 0:  # the mean is 0/0; the sum is 0
        return mean_loss.nan_to_num(0.0) * 0.0
    return mean_loss * count.to(mean_loss.dtype) / torch.as_tensor(num_items_in_batch, dtype=mean_loss.dtype)
