"""The training data as the trainer draws it: batches epoch after epoch with accumulation groups
that end with the epoch, a refusal of data that cannot fill one step, and a loader position
carried over to another number of processes."""
from __future__ import annotations

from typing import Any, Dict, Iterator
from .._warn import warn


def loader_size_text(loader) -> str:
    """'N samples, P per process (W processes), batch_size B' for errors about a loader."""
    dataset = getattr(loader, "n", None)
    if dataset is None and hasattr(loader, "dataset"):
        dataset = len(loader.dataset)
    world, batch = getattr(loader, "world_size", 1), getattr(loader, "batch_size", "?")
    per_rank = -(-dataset // world) if isinstance(dataset, int) else "?"
    return f"{dataset} sample(s), {per_rank} per process ({world} process(es)), batch_size {batch}"


def check_fills_a_batch(loader, accumulation: int = 1) -> None:
    """Training from a loader with no whole batch (or accumulation group) per epoch would wait
    forever: refuse it first."""
    if hasattr(loader, "__len__") and len(loader) == 0:
        raise ValueError(f"the training data cannot fill one batch: {loader_size_text(loader)}; lower "
                         "data.batch_size or add samples (the last partial batch is dropped so every step "
                         "sees a whole batch)")
    if hasattr(loader, "__len__") and len(loader) < accumulation:
        raise ValueError(f"the training data fills {len(loader)} batch(es) per epoch and process "
                         f"({loader_size_text(loader)}), fewer than optim.accumulation_steps {accumulation}: lower "
                         "one of them or add samples")


def batch_stream(loader, accumulation: int = 1) -> Iterator[Dict[str, Any]]:
    """Batches epoch after epoch (the loader resumes mid-epoch after load_state_dict). An epoch
    that yields nothing from its start is an error, never an endless loop (a loader whose every
    sample failed to load, say). With `accumulation` A, a loader that knows its length ends each
    epoch after its last whole group of A batches, so batch B x A steps see what batch B*A does
    (drop_last; a group spanning two epochs shifted every later step). The dropped batches are
    still drawn, so the loader's position stays its own."""
    while True:
        fresh, produced = _at_epoch_start(loader), 0
        position = int(loader.state_dict().get("batches", 0)) if hasattr(loader, "state_dict") else 0
        # Groups count from where this epoch starts here: a resume starts a step, so a group, even
        # where the position is not a multiple of A (accumulation changed, another world size).
        usable = (position + (len(loader) - position) // accumulation * accumulation
                  if hasattr(loader, "__len__") else None)
        for batch in loader:
            produced += 1
            position += 1
            if usable is None or position <= usable:
                yield batch
        if fresh and not produced:
            raise RuntimeError(f"epoch {loader.epoch} of the training data produced no batch ({loader_size_text(loader)}"
                               + (f"; {loader.report()}" if getattr(loader, "report", lambda: "")() else "") + ")")
        loader.set_epoch(loader.epoch + 1)


def _at_epoch_start(loader) -> bool:
    return not hasattr(loader, "state_dict") or int(loader.state_dict().get("batches", 0)) == 0


def reshard_data_state(saved: Dict[str, int], mine: Dict[str, int]) -> Dict[str, int]:
    """A loader position saved by another number of processes (or per-process batch), expressed
    for this loader: the same number of samples consumed, when that is a whole number of this
    run's global batches."""
    keys = ("world_size", "batch_size", "batches")
    if not all(k in saved and k in mine for k in keys) or all(saved[k] == mine[k] for k in keys[:2]):
        return saved
    if "position" in saved and saved["world_size"] != mine["world_size"]:
        # A shard stream's position counts one rank's samples from that rank's own shards, which
        # another number of ranks deals differently: carried over, it served samples twice and
        # dropped others. The epoch starts again on the new layout instead, said out loud.
        warn(f"resuming shards on {mine['world_size']} process(es) where the checkpoint had "
             f"{saved['world_size']}: a shard's place in a rank's stream changes with the number of ranks, "
             f"so epoch {saved.get('epoch', 0)} starts again from its beginning (its first "
             f"{saved['batches']} step(s) of data are seen twice)")
        return {**saved, "world_size": mine["world_size"], "batch_size": mine["batch_size"], "rank": mine["rank"],
                "batches": 0, "position": 0}
    consumed = saved["batches"] * saved["batch_size"] * saved["world_size"]
    per_step = mine["batch_size"] * mine["world_size"]
    if consumed % per_step:
        raise ValueError(f"cannot resume: {consumed} samples consumed are not a whole number of "
                         f"global batches of {per_step} (batch_size {mine['batch_size']} x {mine['world_size']} "
                         f"processes); keep batch_size x processes = {saved['batch_size'] * saved['world_size']}")
    return {**saved, "world_size": mine["world_size"], "batch_size": mine["batch_size"], "rank": mine["rank"],
            "batches": consumed // per_step}
