"""An optimizer step fused into backward (torchtune's `optimizer_in_bwd`, PyTorch's
`register_post_accumulate_grad_hook` recipe): each parameter is updated, and its gradient freed,
as soon as backward has accumulated it, so a step never holds every gradient at once. At the end
of backward a plain step holds all of them (for a 105M-parameter Q-Former, 401 MiB of the step's
415 MiB peak); this one holds one at a time.

From outside it is the optimizer one would step after backward: the same `param_groups` (LR
schedulers write there), the same `state` and `state_dict()` layout, so checkpoints written either
way load either way, through `load_state_dict` or `torch.distributed.checkpoint`. Inside, each
parameter has its own optimizer of the same kind, which copies its group's settings and shares the
state dict before it steps: the update is the one the plain optimizer makes.

Under FSDP2 the hook runs on each sharded parameter once its gradient is reduce-scattered (FSDP2
calls post-accumulate-grad hooks itself, for this use), so each rank updates its shard. Parameters
whose gradients are reduced by hand after backward (FSDP2's ignored scalars) are named in
`after_backward`: they keep their gradient and `step()` updates them.

What needs every gradient at once cannot run this way: clipping by the global norm and gradient
accumulation; nor can DDP, whose bucketed all-reduce completes after the hooks fire. The trainer
refuses those combinations (`optim.in_backward`)."""
from __future__ import annotations

from typing import Any, Callable, Collection, Dict, List

import torch


class OptimizerInBackward(torch.optim.Optimizer):
    """`make(param_groups)` builds the optimizer one would step after backward (called once for
    the groups, once per parameter). `step()` updates the parameters that still hold a gradient:
    none after a backward; all of them when DCP initialises the state with zero gradients."""

    def __init__(self, groups: List[Dict[str, Any]], make: Callable[[List[Dict[str, Any]]], torch.optim.Optimizer],
                 after_backward: Collection[torch.Tensor] = ()):
        plain = make(groups)  # fills each group's defaults and checks them
        super().__init__(plain.param_groups, plain.defaults)
        self._singles = [(index, make([{**group, "params": [p]}]))
                         for index, group in enumerate(self.param_groups) for p in group["params"]]
        if not self._singles:
            raise ValueError("optim.in_backward: no trainable parameter to optimise")
        self._nonfinite = 0  # parameters (shards) left as they were this step: their gradient was inf/NaN
        later = {id(p) for p in after_backward}
        self._hooks = [single.param_groups[0]["params"][0].register_post_accumulate_grad_hook(
            self._hook(index, single)) for index, single in self._singles
            if id(single.param_groups[0]["params"][0]) not in later]

    def _step_one(self, index: int, single: torch.optim.Optimizer) -> None:
        # Read at call time: a scheduler or load_state_dict may have replaced what was there.
        mine = single.param_groups[0]
        for key, value in self.param_groups[index].items():
            if key != "params":
                mine[key] = value
        single.state = self.state
        single.step()

    def _finite(self, param: torch.Tensor) -> bool:
        """Whether this rank's part of the gradient is finite (a shard under FSDP2: no collective).
        A step after backward is skipped whole on an inf/NaN gradient; here the others have been
        taken already, so only this parameter is left out, and `take_nonfinite` says so."""
        grad = param.grad
        local = grad.to_local() if hasattr(grad, "to_local") else grad
        # The largest |element| is non-finite exactly when an element is; a reduction, it allocates
        # no mask the size of the gradient (isfinite's added 12 MiB to a Q-Former step's peak).
        if bool(torch.isfinite(torch.linalg.vector_norm(local, float("inf")))):
            return True
        self._nonfinite += 1
        return False

    def take_nonfinite(self) -> int:
        """How many parameters were left out since the last call (the trainer asks every step)."""
        n, self._nonfinite = self._nonfinite, 0
        return n

    def _hook(self, index: int, single: torch.optim.Optimizer) -> Callable[[torch.Tensor], None]:
        def step_now(param: torch.Tensor) -> None:
            if self._finite(param):
                self._step_one(index, single)
            param.grad = None
        return step_now

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("OptimizerInBackward steps inside backward; it takes no closure")
        for index, single in self._singles:
            param = single.param_groups[0]["params"][0]
            if param.grad is not None and self._finite(param):
                self._step_one(index, single)
        return None
