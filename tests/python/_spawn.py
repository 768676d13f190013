"""Test ranks in fresh processes, killed when the group overruns its time: a hung collective must
fail its test, not stall the suite. A worker's exception is raised here (ProcessRaisedException)."""
import time

import pytest
import torch.multiprocessing as mp


def spawn_ranks(worker, args, world: int = 2, timeout: float = 240, what: str = "distributed workers") -> None:
    """Runs worker(rank, *args) on `world` spawned processes and waits for all of them."""
    ctx = mp.start_processes(worker, args=args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"{what} did not finish within {timeout:g} s")
