"""ShardLoader's read-ahead (`data.prefetch`): it hands out what reading on demand does and resumes
where it handed out, raises where the batch is asked for, loses nothing when a loop is left early,
and never outlives the loop that needs it (an exception, Ctrl-C, the interpreter's exit)."""
import os

import pytest
import torch

FMNIST = "/usr/share/datasets/fashion-mnist"
pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")


def test_read_ahead_hands_out_what_reading_on_demand_does_and_resumes_where_it_handed_out(shards):
    """ShardLoader read each batch inline between steps; it now reads `prefetch` batches ahead on a
    thread. The batches, the saved position (the last batch handed out, never one still queued)
    and the counts are those of reading on demand, across an early stop and a resume."""
    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader

    def loader(prefetch, **kw):
        return ShardLoader(shards, 8, clip_transform(28, train=True), shuffle_buffer=40, seed=3, prefetch=prefetch,
                           select=lambda caption, label: "label 0 left out" if label == 0 else None, **kw)

    def take(it, n):
        return [next(it) for _ in range(n)]

    eager, lazy = loader(0), loader(3)
    want = list(eager)
    got = list(lazy)
    assert [b["keys"] for b in got] == [b["keys"] for b in want]
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(got, want))
    # num_workers bounds the threads that decode a batch (0: the reading thread); it was accepted
    # and ignored. Each sample's draws are seeded by the sample, so the batches do not change.
    for workers in (0, 1, 3):
        same = list(loader(3, num_workers=workers))
        assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(same, want))
    assert lazy.counts() == eager.counts() and lazy.counts()["skipped_samples"] > 0
    for cut in (1, 4):  # stopped mid-epoch with batches still queued, then resumed elsewhere
        first = loader(3)
        it = iter(first)
        head = take(it, cut)
        saved = first.state_dict()
        on_demand = loader(0)
        take(iter(on_demand), cut)
        assert saved == on_demand.state_dict() and first.counts() == on_demand.counts()
        it.close()  # ends the reading thread
        resumed = loader(3)
        resumed.load_state_dict(saved)
        keys = [b["keys"] for b in head] + [b["keys"] for b in resumed]
        assert keys == [b["keys"] for b in want]


def test_read_ahead_raises_where_the_batch_is_asked_for_and_stops_its_thread(shards):
    import threading

    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader

    def select(caption, label):
        if label == 7:
            raise RuntimeError("a select that fails on label 7")
        return None

    loader = ShardLoader(shards, 4, clip_transform(28), prefetch=2, select=select)
    with pytest.raises(RuntimeError, match="fails on label 7"):
        list(loader)
    loader.stop()
    assert not [t for t in threading.enumerate() if t.name == "tessera-shard-loader"]
    with pytest.raises(ValueError, match="prefetch must be an integer >= 0"):
        ShardLoader(shards, 4, clip_transform(28), prefetch=-1)


def test_a_loop_left_early_loses_nothing_and_an_open_loop_ends_when_the_loader_is_placed(shards):
    """A loop left early lost the batches read ahead (27 of 28 batches on the next loop), and a
    loop still open when the loader was placed (load_state_dict, stop, a second loop) waited
    forever for a reader that had been stopped."""
    import threading

    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader

    def loader(prefetch):
        return ShardLoader(shards, 8, clip_transform(28), prefetch=prefetch,
                           select=lambda caption, label: "label 3 left out" if label == 3 else None)

    want = [b["keys"] for b in loader(0)]
    ahead = loader(3)
    it = iter(ahead)
    got = [next(it)["keys"] for _ in range(2)]
    del it  # left early, with batches read ahead
    got += [b["keys"] for b in ahead]
    assert got == want
    assert ahead.report().count("\n") == min(ahead.counts()["skipped_samples"], ahead.max_errors)  # lines counted
    for place in (lambda l: l.load_state_dict(l.state_dict()), lambda l: l.stop(), lambda l: iter(l).__next__()):
        placed = loader(2)
        it = iter(placed)
        next(it)
        place(placed)
        ended = []
        t = threading.Thread(target=lambda: ended.append(next(it, "ended")), daemon=True)
        t.start()
        t.join(20)
        assert ended == ["ended"], "an open loop waited for a stopped reader"


@pytest.mark.parametrize("kinds", [("kbd", "value"), pytest.param(("kbd", "value") * 3, marks=pytest.mark.long)],
                         ids=["once", "three times"])
def test_a_process_left_by_an_exception_during_read_ahead_exits_with_it(shards, kinds):
    """The read-ahead thread, inside BatchDecoder without the GIL when the interpreter finalized,
    aborted the process ("terminate called without an active exception", rc 134) in 20 of 20
    runs: it is stopped at exit, so the exception's own status comes back."""
    import subprocess
    import sys

    script = ("import sys\nfrom tessera.data import clip_transform\nfrom tessera.data.shard_loader import ShardLoader\n"
              f"loader = ShardLoader({shards!r}, 32, clip_transform(28), num_workers=2, prefetch=4)\n"
              "it = iter(loader)\nnext(it)\nraise {'kbd': KeyboardInterrupt, 'value': ValueError}[sys.argv[1]]\n")
    for kind in kinds:
        rc = 130 if kind == "kbd" else 1
        run = subprocess.run([sys.executable, "-c", script, kind], capture_output=True, text=True, timeout=120)
        assert run.returncode in (rc, -2 if kind == "kbd" else rc), run.stderr[-2000:]
        assert "terminate called" not in run.stderr


def test_a_training_run_that_raises_stops_its_loader(shards, tmp_path, monkeypatch):
    """fit stopped the read-ahead only at the run's normal end: a step that raised left the
    thread polling and holding its batches for as long as the exception lived (a notebook)."""
    import threading

    from tessera.train import Trainer, build_task, recipe_from_dict

    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    recipe = recipe_from_dict({
        "task": "clip", "model": {"config": {"projection_dim": 16, "vision_config": {**tiny, "image_size": 28,
                                                                                      "patch_size": 14},
                                             "text_config": tiny}},
        "data": {"dataset": "webdataset", "root": shards, "image_size": 28, "batch_size": 8, "prefetch": 3},
        "train": {"plots": False, "steps": 5, "checkpoint_every": 0, "threads": 1}})
    task = build_task(recipe)
    calls = []

    def failing(wrapped, model, batch, step):
        calls.append(step)
        if len(calls) == 2:
            raise RuntimeError("a step failed")
        return type(task).compute_loss(task, wrapped, model, batch, step)

    monkeypatch.setattr(task, "compute_loss", failing)
    with pytest.raises(RuntimeError, match="a step failed") as kept:  # held, as a notebook holds the last one
        Trainer(recipe, task, str(tmp_path / "run"), progress=False).fit()
    assert kept.value.__traceback__ is not None and not [t for t in threading.enumerate() if t.name == "tessera-shard-loader" and t.is_alive()]


@pytest.mark.parametrize("prefetch", [0, 3])
def test_a_finished_epoch_is_read_again_from_its_start_as_dataloader_does(shards, prefetch):
    """A second `for batch in loader` after a finished epoch yielded nothing (the position stayed
    at the epoch's end): a notebook's `for epoch in range(3): for b in loader` trained once.
    torch's DataLoader, webdataset's WebLoader and tessera's DataLoader read it again; a loop
    left early still continues where it stopped, and set_epoch still moves on."""
    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader

    loader = ShardLoader(shards, 8, clip_transform(28), shuffle_buffer=40, seed=3, prefetch=prefetch)
    first = [b["keys"] for b in loader]
    assert first and [b["keys"] for b in loader] == first == [b["keys"] for b in loader]
    it = iter(loader)
    head = [next(it)["keys"] for _ in range(2)]
    it.close()
    assert head + [b["keys"] for b in loader] == first  # an unfinished epoch resumes where it stopped
    loader.set_epoch(1)
    other = [b["keys"] for b in loader]
    assert len(other) == len(first) and other != first  # another order (the last partial batch is dropped)


@pytest.mark.parametrize("prefetch", [0, 3])
def test_a_consumer_that_stops_at_the_last_batch_still_finishes_the_epoch(shards, prefetch):
    """`zip(range(n), loader)` with n the epoch's length left the loop paused after its last batch:
    never marked finished, the next loop yielded nothing (review of the fix above)."""
    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader

    loader = ShardLoader(shards, 8, clip_transform(28), shuffle_buffer=40, seed=3, prefetch=prefetch)
    first = [b["keys"] for b in loader]
    assert [b["keys"] for _, b in zip(range(len(first)), loader)] == first
    assert [b["keys"] for b in loader] == first
    saved = None
    for i, b in enumerate(loader):  # a checkpoint after the last batch resumes to an empty epoch
        saved = loader.state_dict() if i == len(first) - 1 else saved
    resumed = ShardLoader(shards, 8, clip_transform(28), shuffle_buffer=40, seed=3, prefetch=prefetch)
    resumed.load_state_dict(saved)
    assert list(resumed) == [] and [b["keys"] for b in resumed] == first
    # A new loop while an earlier iterator is still alive serves the batch that one read ahead.
    again = ShardLoader(shards, 8, clip_transform(28), shuffle_buffer=40, seed=3, prefetch=prefetch)
    alive = iter(again)
    head = [next(alive)["keys"]]
    assert head + [b["keys"] for b in again] == first


@pytest.mark.parametrize("prefetch", [0, 3])
def test_a_new_loop_ends_an_earlier_open_one_and_no_batch_is_served_twice(shards, prefetch):
    """Without read-ahead, an earlier loop resumed after a later one started served again the batch
    the later one had served (13 batches of a 12-batch epoch); with read-ahead it ends."""
    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader

    loader = ShardLoader(shards, 8, clip_transform(28), shuffle_buffer=40, seed=3, prefetch=prefetch)
    first = [b["keys"] for b in loader]
    again = ShardLoader(shards, 8, clip_transform(28), shuffle_buffer=40, seed=3, prefetch=prefetch)
    a = iter(again)
    served = [next(a)["keys"]]
    b = iter(again)
    served.append(next(b)["keys"])
    served += [x["keys"] for x in a]  # ended by the later loop: nothing more
    served += [x["keys"] for x in b]
    assert served == first and again.state_dict()["batches"] == len(first)
