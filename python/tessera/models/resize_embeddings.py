"""transformers' `resize_token_embeddings` for the models whose language model is tessera's
LLaMA (LlamaForCausalLM, and LLaVA's and BLIP-2's `language_model`): new rows drawn as transformers
draws them, old rows kept, and the tables installed in C++ with every size that follows them.
Adding `<image>` or a pad token to a base LM is the first step of a LLaVA built from one."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import _C


def _added_rows(old: torch.Tensor, added: int, mean_resizing: bool, std: float) -> torch.Tensor:
    """Rows for `added` new tokens. mean_resizing: drawn from a normal with the old rows' mean and
    1e-9 times their covariance (Hewitt's vocabulary expansion, transformers' default), so the
    next-token distribution barely moves; the mean itself where that covariance is not positive
    definite. Otherwise normal(0, initializer_range), as the model's init."""
    if not mean_resizing:
        return torch.empty(added, old.size(1), dtype=old.dtype, device=old.device).normal_(0.0, std)
    rows = old.detach().float()
    mean = rows.mean(0)
    centered = rows - mean
    covariance = 1e-9 * (centered.T @ centered) / rows.size(0)
    if torch.distributions.constraints.positive_definite.check(covariance).all():
        drawn = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance).sample((added,))
    else:
        drawn = mean[None].repeat(added, 1)
    return drawn.to(old.dtype)


def _resized(old: torch.Tensor, n: int, mean_resizing: bool, std: float) -> torch.Tensor:
    keep = min(old.size(0), n)
    parts = [old.detach()[:keep]]
    if n > keep:
        parts.append(_added_rows(old, n - keep, mean_resizing, std))
    return torch.cat(parts).contiguous()


def resize_token_embeddings(model, new_num_tokens: Optional[int] = None, pad_to_multiple_of: Optional[int] = None,
                            mean_resizing: bool = True) -> nn.Module:
    """See `PreTrainedModel.resize_token_embeddings`."""
    if not (model.input_embeddings and model.output_embeddings):  # C++ checks the type itself (ResizableVocabulary)
        raise NotImplementedError(f"{type(model).__name__}.resize_token_embeddings: only models whose language model "
                                  "is tessera's LLaMA (LlamaForCausalLM, LLaVA, BLIP-2) resize their vocabulary")
    embeddings = model.get_input_embeddings()
    for name, value in (("new_num_tokens", new_num_tokens), ("pad_to_multiple_of", pad_to_multiple_of)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if pad_to_multiple_of is not None:
        n = embeddings.weight.size(0) if new_num_tokens is None else new_num_tokens
        new_num_tokens = -(-n // pad_to_multiple_of) * pad_to_multiple_of
    if new_num_tokens is None or new_num_tokens == embeddings.weight.size(0):
        return embeddings
    head = model.get_output_embeddings()
    tied = head is embeddings
    config = model.config.get("text_config", model.config)  # LLaVA's and BLIP-2's LM, or the LLaMA itself
    std = float(config.get("initializer_range", 0.02))
    new_embed = _resized(embeddings.weight, new_num_tokens, mean_resizing, std)
    new_head = None if tied else _resized(head.weight, new_num_tokens, mean_resizing, std)
    model._sync_all()  # C++ must hold the Python parameters it is about to resize
    _C.llama.set_vocabulary(model._cpp_addr, new_embed, new_head)  # the root keeps its options in step
    # What C++ now holds (these attributes are read-only to users: C++ fixes them).
    embeddings.__dict__["num_embeddings"] = new_num_tokens
    if not tied:
        head.__dict__["out_features"] = new_num_tokens
    config["vocab_size"] = new_num_tokens
    return embeddings
