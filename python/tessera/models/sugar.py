"""Sugar's model (arXiv 2411.00304): a LLaVA plus a retrieval projector, one module.

    model = SugarModel(llava, RetrievalProjector(128, hidden=256, dim=128))
    out = model(input_ids, pixel_values, attention_mask, labels, point_weights=w)
    out["loss_sum"], out["num_tokens"], out["r"]        # LM loss terms and [points, dim]

Why a wrapper that owns the projector (and not a projector beside the model in the task): the
projector's parameters must be part of what the trainer wraps, so DDP averages their gradients,
FSDP2's root `fully_shard` gathers them before the forward that uses them, the optimizer and the
DCP checkpoint hold them, and resuming restores them. The projector therefore runs *inside* the one
wrapped forward. A point is a row of `point_weights` [points, B, L] over the last layer's hidden
states (the final-norm states the LM head reads): a mean over an image's tokens, or a one at a
text's last token, so one matmul pools every point.

Saved checkpoints keep the LLaVA a plain LLaVA (config.json, model.safetensors, merged LoRA with
adapter/ beside it: `tessera chat` and transformers load it) and add the projector's
`retrieval_projector.safetensors` + `retrieval_projector.json`."""
from __future__ import annotations

import json
from ..io import is_regular_file
import os
from typing import Any, Dict, Optional

import torch
from torch import nn

PROJECTOR_WEIGHTS = "retrieval_projector.safetensors"
PROJECTOR_CONFIG = "retrieval_projector.json"


class RetrievalProjector(nn.Sequential):
    """Sugar's retrieval MLP: Linear -> GELU -> Linear (the paper names an MLP, not its shape)."""

    def __init__(self, in_features: int, hidden: int = 256, dim: int = 128):
        super().__init__(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.config = {"in_features": in_features, "hidden": hidden, "dim": dim}


def pool_points(hidden: torch.Tensor, point_weights: torch.Tensor) -> torch.Tensor:
    """[B, L, D] hidden states, [P, B, L] weights -> [P, D] point vectors."""
    if point_weights.dim() != 3 or tuple(point_weights.shape[1:]) != tuple(hidden.shape[:2]):
        # [P, L, B] has the same elements and pooled the wrong tokens without a word
        raise ValueError(f"point_weights must be [points, batch, length] = [P, {hidden.shape[0]}, {hidden.shape[1]}] "
                         f"(one weight per token of each point's row), got {list(point_weights.shape)}")
    P = point_weights.shape[0]
    return point_weights.reshape(P, -1).to(hidden.dtype) @ hidden.reshape(-1, hidden.shape[-1])


class SugarModel(nn.Module):
    model_type = "llava"  # the run's config.json is the LLaVA's

    def __init__(self, llava: nn.Module, retrieval_projector: RetrievalProjector):
        super().__init__()
        self.llava = llava
        self.retrieval_projector = retrieval_projector

    @property
    def config(self) -> Dict[str, Any]:
        return self.llava.config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                point_weights: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        out = self.llava(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                         labels=labels, output_hidden_states=point_weights is not None)
        result = {"logits": out.logits}
        if labels is not None:
            result.update(loss_sum=out.loss_sum, num_tokens=out.num_tokens)
        if point_weights is not None:
            result["points"] = pool_points(out.hidden_states[-1], point_weights)
            result["r"] = self.retrieval_projector(result["points"])
        return result

    @torch.no_grad()
    def embed(self, input_ids: torch.Tensor, pixel_values: Optional[torch.Tensor],
              attention_mask: torch.Tensor, point_weights: torch.Tensor) -> torch.Tensor:
        """Retrieval vectors r [P, dim] (not normalised) of the points of a batch."""
        return self(input_ids, pixel_values, attention_mask, None, point_weights)["r"]

    def save_pretrained(self, path: str, state_dict: Optional[Dict[str, torch.Tensor]] = None, **kwargs) -> None:
        from .. import _C
        from ..io import write_atomic
        from .weights import check_saveable

        state = self.state_dict() if state_dict is None else state_dict
        if state_dict is not None:  # keys of another spelling ("module.llava.") were dropped: 0 tensors saved
            want = set(self.state_dict())
            unknown, missing = sorted(set(state) - want), sorted(want - set(state))
            if unknown or missing:
                raise ValueError(f"SugarModel.save_pretrained: state_dict must hold this model's keys (llava.*, "
                                 f"retrieval_projector.*); {len(unknown)} unknown (e.g. {unknown[:2]}), {len(missing)} "
                                 f"missing (e.g. {missing[:2]})")
        own = {k[len("llava."):]: v for k, v in state.items() if k.startswith("llava.")}
        projector = {k[len("retrieval_projector."):]: v.detach().contiguous() for k, v in state.items()
                     if k.startswith("retrieval_projector.")}
        check_saveable(state, "SugarModel.save_pretrained")  # a DTensor or meta tensor, before any file
        os.makedirs(path, exist_ok=True)
        _C.core.save_safetensors(os.path.join(path, PROJECTOR_WEIGHTS), projector, {"format": "pt"})
        write_atomic(os.path.join(path, PROJECTOR_CONFIG), json.dumps(self.retrieval_projector.config) + "\n")
        # last: its refresh of a trainer checkpoint's manifest then covers the projector's files too
        self.llava.save_pretrained(path, state_dict=own, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str) -> "SugarModel":
        """A saved Sugar checkpoint: the (merged) LLaVA and its retrieval projector."""
        from .. import _C
        from ..factory import from_pretrained

        from ..checksums import verify_checkpoint

        config_file = os.path.join(path, PROJECTOR_CONFIG)
        if not is_regular_file(config_file):
            raise FileNotFoundError(f"{path}: no {PROJECTOR_CONFIG}; not a Sugar checkpoint (train task sugar)")
        own = [PROJECTOR_CONFIG, PROJECTOR_WEIGHTS]  # the LLaVA's files: its from_pretrained checks them
        verify_checkpoint(path, only=own, required=[f for f in own if os.path.isfile(os.path.join(path, f))])
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
        projector = RetrievalProjector(**config)
        projector.load_state_dict(_C.core.load_safetensors(os.path.join(path, PROJECTOR_WEIGHTS))[0], strict=True)
        return cls(from_pretrained(path, dtype=torch.float32), projector).eval()
