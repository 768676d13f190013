"""torch.distributed set-up from torchrun's environment (Gloo on CPU, NCCL on CUDA), and one
seeding function for every process."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    # Where the other ranks wait while rank 0 works alone (join_rank0_wait: Trainer.fit sets it).
    rank0_group: Any = None
    rank0_timeout_s: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Joins the process group when launched by torchrun (WORLD_SIZE > 1); otherwise single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def seed_all(seed: int, rank: int = 0) -> None:
    """Seeds torch, CUDA and Python's RNG; each rank gets its own stream (seed + rank)."""
    s = seed + rank
    random.seed(s)
    torch.manual_seed(s)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(s)


def all_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank only if `flag` is true on every rank."""
    if info.world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


# The final barrier's Work, kept until the interpreter itself is torn down (see below).
_FINAL_BARRIERS = []


def shutdown_distributed() -> None:
    """Leaves the process group cleanly: every rank passes a barrier before any destroys it.

    Gloo's worker threads free a finished collective's tensors themselves, and freeing a tensor
    that Python has seen takes the GIL; a thread that asks for the GIL once the interpreter is
    finalizing is ended by Python mid-destructor, which aborts the process ("terminate called
    without an active exception", found in a core dump of a 2-rank FSDP2 run, ~1 exit in 15). Gloo's
    barrier holds every collective not yet retired when it is queued, so keeping the barrier's Work
    alive here makes the main thread, not a worker, the one that frees them all, at exit."""
    if dist.is_initialized():
        try:
            work = dist.barrier(async_op=True)
            _FINAL_BARRIERS.append(work)
            work.wait()
        finally:
            dist.destroy_process_group()


def rank0_decides(info: DistInfo, decide, kinds=()):
    """Runs `decide()` on rank 0 and returns its result on every rank. An exception it raises is
    raised on every rank: rank 0 the original, the others one of the same class when it is in
    `kinds` (else a ValueError) with its message, so no rank waits for an answer that never comes."""
    result, error, exc = None, None, None
    if info.is_main:
        try:
            result = decide()
        except Exception as e:  # any: the other ranks wait for the answer
            error, exc = (type(e).__name__, str(e)), e
    if info.world_size > 1:
        wait_for_rank0(info)  # rank 0's work may outlast the step's bound (train.timeout_s)
        box = [(result, error)]
        dist.broadcast_object_list(box, src=0)
        result, error = box[0]
    if exc is not None:
        raise exc
    if error is not None:
        raise next((k for k in kinds if k.__name__ == error[0]), ValueError)(error[1])
    return result


def bound_collectives(timeout_s: int) -> None:
    """From now on each collective of the default group fails after `timeout_s` (torchtitan's
    train_timeout_seconds, set after the first step: start-up, resume checks and the first step's
    compilation keep torch's default)."""
    if timeout_s and dist.is_initialized():
        from torch.distributed.distributed_c10d import _set_pg_timeout

        _set_pg_timeout(timedelta(seconds=timeout_s), None)


def join_rank0_wait(info: DistInfo, timeout_s: int) -> None:
    """Gives `info` a Gloo group whose barrier waits `timeout_s` (every rank calls this at the same
    point, before any goes off alone): what rank 0 does alone (evaluation, checkpoint files, the
    summary) is waited for there, not in a collective bounded by train.timeout_s."""
    if info.world_size > 1 and info.rank0_group is None:
        info.rank0_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        info.rank0_timeout_s = timeout_s


def wait_for_rank0(info: DistInfo) -> None:
    """Every rank meets here: rank 0 once done with what it does alone, the others meanwhile (in
    the default group when no rank-0 group was made: outside Trainer.fit)."""
    if info.world_size == 1:
        return
    try:
        dist.barrier(group=info.rank0_group)
    except RuntimeError as e:
        if info.rank0_group is not None and is_collective_timeout(e):
            e.add_note(f"tessera: the other ranks waited longer than train.rank0_timeout_s "
                       f"({info.rank0_timeout_s} s) while rank 0 worked alone (evaluating, writing a "
                       "checkpoint or the summary)")
        raise


def note_collective_timeout(e: BaseException, timeout_s: int) -> None:
    """Names train.timeout_s on a collective's timeout that no wait for rank 0 has named."""
    if is_collective_timeout(e) and not any(n.startswith("tessera:") for n in getattr(e, "__notes__", ())):
        bound = f"{timeout_s} s" if timeout_s else "torch default"
        e.add_note(f"tessera: a rank waited longer than train.timeout_s ({bound}) for the others in a "
                   "collective: a rank stalled, or its work between two collectives took that long (raise "
                   "train.timeout_s if that is expected)")


def is_collective_timeout(e: BaseException) -> bool:
    """A collective that timed out: Gloo's "Timed out waiting ..." or NCCL's watchdog timeout."""
    text = str(e)
    return dist.is_initialized() and isinstance(e, RuntimeError) and (
        ("gloo" in text and "Timed out" in text) or (isinstance(e, getattr(dist, "DistBackendError", ()))
                                                    and "timeout" in text.lower()))
