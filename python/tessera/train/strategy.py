"""How the model is spread over processes, with PyTorch's own engines: `ddp`
(DistributedDataParallel) or `fsdp2` (`fully_shard` per layer and at the root, a mixed-precision
policy, optional CPU offload, activation checkpointing per layer). The trainer talks to one
`Wrapped` object whatever the strategy."""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from .distributed import DistInfo


def unwrapped_name(name: str) -> str:
    """A parameter or buffer name without the prefixes activation checkpointing and torch.compile
    insert (`_checkpoint_wrapped_module.`, `_orig_mod.`): the model's own name."""
    return name.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")


def shard_units(model: nn.Module) -> List[nn.Module]:
    """The modules FSDP2 shards (and checkpointing wraps) one by one: a task's model may name
    them (`model.shard_units()`); tessera models expose their transformer layers."""
    if hasattr(model, "shard_units"):
        return list(model.shard_units())
    from ..cpp_module import CppLayer

    return [m for m in model.modules() if isinstance(m, CppLayer)]


class Wrapped:
    """The model as the step sees it. `module` is what a task calls (DDP wrapper, FSDP2 root or
    the model); `model` is the plain module underneath (parameters, state dicts, evaluation)."""

    def __init__(self, model: nn.Module, info: DistInfo, strategy: str = "ddp", precision: str = "fp32",
                 gradient_checkpointing: bool = False, cpu_offload: bool = False, find_unused_parameters: bool = False):
        self.model, self.info = model, info
        self.strategy = strategy if info.world_size > 1 else "single"
        self.ignored: List[nn.Parameter] = []
        self.param_dtype: Optional[torch.dtype] = None
        if cpu_offload and (self.strategy != "fsdp2" or info.device.type != "cuda"):
            raise ValueError("train.cpu_offload needs train.strategy=fsdp2 on CUDA devices with several processes")
        if self.strategy == "fsdp2":
            self.module = self._fsdp2(precision, gradient_checkpointing, cpu_offload)
        else:
            if gradient_checkpointing:
                refused = ValueError(f"model.gradient_checkpointing: {type(model).__name__} has no "
                                     "set_gradient_checkpointing(); use train.strategy=fsdp2 (wraps its "
                                     "shard_units) or turn it off")
                if not hasattr(model, "set_gradient_checkpointing"):
                    raise refused
                try:
                    model.set_gradient_checkpointing(True)
                except NotImplementedError:  # a PreTrainedModel that does not implement it
                    raise refused from None
            if self.strategy == "ddp":
                if find_unused_parameters and gradient_checkpointing:
                    raise ValueError("this run has steps that leave parameters out of the forward (text-only "
                                     "batches skip the image path), which DDP must look for (find_unused_parameters), "
                                     "and that does not work with reentrant gradient checkpointing: use "
                                     "train.strategy: fsdp2, or model.gradient_checkpointing: false")
                ids = [info.device.index] if info.device.type == "cuda" else None
                self.module = nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                                  find_unused_parameters=find_unused_parameters)
            else:
                self.module = model

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp2"

    @property
    def autocast_bf16(self) -> bool:
        """bf16 compute by autocast, unless FSDP2's policy already casts the parameters."""
        return self.param_dtype is None

    def _fsdp2(self, precision: str, gradient_checkpointing: bool, cpu_offload: bool) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        model, info = self.model, self.info
        units = shard_units(model)
        if gradient_checkpointing:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

            ids = {id(u) for u in units}
            apply_activation_checkpointing(model, check_fn=lambda m: id(m) in ids)
        mesh = init_device_mesh(info.device.type, (info.world_size,))
        kwargs = {"mesh": mesh}
        if precision == "bf16":
            self.param_dtype = torch.bfloat16
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if cpu_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy()
        for unit in units:
            fully_shard(unit, **kwargs)
        # FSDP2 shards along dim 0, so scalars (CLIP's logit_scale) stay replicated, frozen ones
        # too (open_clip's --lock-logit-scale); trainable ones have their gradients averaged in
        # `finish_gradients`.
        scalars = [p for p in model.parameters() if p.ndim == 0]
        self.ignored = [p for p in scalars if p.requires_grad]
        fully_shard(model, ignored_params=set(scalars) or None, **kwargs)
        return model

    @contextlib.contextmanager
    def micro_batch(self, sync: bool) -> Iterator[None]:
        """Gradient synchronisation only on the last micro-batch of a step."""
        if self.strategy == "ddp" and not sync:
            with self.module.no_sync():
                yield
        elif self.strategy == "fsdp2":
            self.module.set_requires_gradient_sync(sync)
            yield
        else:
            yield

    def finish_gradients(self, scale: float = 1.0) -> None:
        """After the last backward of a step: average the replicated parameters' gradients
        (FSDP2's ignored scalars) and multiply every gradient by `scale` (token-weighted losses)."""
        for p in self.ignored:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        if scale != 1.0:
            with torch.no_grad():
                for p in self.model.parameters():
                    if p.grad is not None:
                        p.grad.mul_(scale)

    def clip_grad_norm(self, max_norm: float) -> float:
        """`clip_grad_norm_` over sharded (DTensor) and replicated gradients together."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not self.sharded:
            return float(nn.utils.clip_grad_norm_(params, max_norm))
        from torch.distributed.tensor import DTensor

        sharded = [p.grad for p in params if isinstance(p.grad, DTensor)]
        local = [p.grad for p in params if not isinstance(p.grad, DTensor)]
        sq = torch.zeros((), device=self.info.device)
        if sharded:
            sq = sq + nn.utils.get_total_norm(sharded).full_tensor().float() ** 2
        if local:
            sq = sq + nn.utils.get_total_norm(local).float().to(sq.device) ** 2
        total = sq.sqrt()
        nn.utils.clip_grads_with_norm_([p for p in params if isinstance(p.grad, DTensor)], max_norm, total)
        nn.utils.clip_grads_with_norm_([p for p in params if not isinstance(p.grad, DTensor)], max_norm, total)
        return float(total)

    @contextlib.contextmanager
    def evaluation(self, gather_all: bool = False) -> Iterator[nn.Module]:
        """The model for evaluation. Sharded, every rank must take part in each forward (the
        layers gather their shards as they run), so the root's parameters stay gathered.
        `gather_all`: every sharded unit is gathered for the whole evaluation, for work that
        runs past the per-layer hooks (generation loops in C++); ranks then run it alone."""
        was_training = self.model.training
        self.model.eval()
        units = [self.module]
        if self.sharded and gather_all:
            from torch.distributed.fsdp import FSDPModule

            units = [m for m in self.model.modules() if isinstance(m, FSDPModule)]
        try:
            if self.sharded:
                for unit in units:
                    unit.unshard()
            yield self.model
        finally:
            if self.sharded:
                for unit in reversed(units):
                    unit.reshard()
            self.model.train(was_training)

    def full_state_dict(self):
        """The whole model's tensors on rank 0 (CPU), for the HF export; {} on other ranks."""
        if not self.sharded:
            return {k: v.detach() for k, v in self.model.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
