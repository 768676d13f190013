"""train.log_to: TensorBoard and offline W&B receive exactly what metrics.jsonl holds (scalars by step, training
and evaluation apart), the run's pictures, and a resumed run's events past its checkpoint are
dropped as its jsonl rows are."""
import json
import os
import sys
import time

import pytest

from tessera.train import recipe_from_dict
from tessera.train.clip_task import ClipTask
from tessera.train.distributed import DistInfo
from tessera.train.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
from _recipes import FMNIST, tiny_recipe  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")


def events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def fit(recipe, out, resume=False, task_cls=ClipTask):
    recipe = recipe_from_dict(recipe)
    return Trainer(recipe, task_cls(recipe), str(out), DistInfo(), progress=False).fit(resume=resume)


def test_tensorboard_holds_what_metrics_jsonl_holds(tmp_path):
    fit(tiny_recipe(steps=6, checkpoint_every=0, log_to=["jsonl", "tensorboard"], plots=True), tmp_path)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    acc = events(tmp_path)
    train = [r for r in rows if "samples_per_s" in r]
    logged = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in logged] == [r["step"] for r in train] == list(range(1, 7))
    assert [v for _, v in logged] == pytest.approx([r["loss"] for r in train], rel=1e-6)  # event files hold float32
    assert [e.step for e in acc.Scalars("train/lr")] == [r["step"] for r in train]
    final_eval = [r for r in rows if "zero_shot_top1" in r][-1]
    assert acc.Scalars("eval/zero_shot_top1")[-1].value == pytest.approx(final_eval["zero_shot_top1"])
    pictures = set(acc.Tags()["images"])
    assert {"loss", "confusion"} <= pictures, pictures


def test_a_resumed_run_drops_events_past_its_checkpoint(tmp_path):
    class Crash(Exception):
        pass

    class CrashingTask(ClipTask):
        def compute_loss(self, wrapped, model, batch, step):
            if step == 6:
                raise Crash()
            return super().compute_loss(wrapped, model, batch, step)

    recipe = tiny_recipe(steps=8, checkpoint_every=4, log_to=["jsonl", "tensorboard"])
    with pytest.raises(Crash):
        fit(recipe, tmp_path, task_cls=CrashingTask)  # logs steps 1-6, checkpoint at 4
    fit(recipe, tmp_path, resume=True)
    steps = [e.step for e in events(tmp_path).Scalars("train/loss")]
    assert steps == list(range(1, 9)), steps


def test_a_run_that_starts_over_starts_its_events_over(tmp_path):
    """--overwrite (or a resume before the first checkpoint) starts metrics.jsonl over; the old
    event files stayed, so TensorBoard showed every step twice with two values."""
    recipe = tiny_recipe(steps=4, checkpoint_every=0, log_to=["jsonl", "tensorboard"])
    fit(recipe, tmp_path)
    recipe["train"]["seed"] = 7
    recipe = recipe_from_dict(recipe)
    Trainer(recipe, ClipTask(recipe), str(tmp_path), DistInfo(), progress=False).fit(overwrite=True)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    logged = [(e.step, e.value) for e in events(tmp_path).Scalars("train/loss")]
    assert logged == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in rows if "samples_per_s" in r]


def test_a_run_without_plots_sends_no_pictures(tmp_path):
    """train.plots: false: the sinks got RUN/*.png all the same, an earlier run's pictures in a
    folder run again."""
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "loss.png")
    fit(tiny_recipe(steps=2, checkpoint_every=0, log_to=["jsonl", "tensorboard"]), tmp_path)
    assert events(tmp_path).Tags()["images"] == []


def test_an_unwritable_event_folder_is_named(tmp_path):
    (tmp_path / "tensorboard").write_text("a file where the folder goes")
    with pytest.raises(ValueError, match=r"cannot write the event folder .*tensorboard"):
        fit(tiny_recipe(steps=2, checkpoint_every=0, log_to=["jsonl", "tensorboard"]), tmp_path)


@pytest.mark.parametrize("log_to, message", [
    (["jsonl", "mlflow"], "unknown sink 'mlflow'"),
    (["tensorboard"], "must include 'jsonl'"),
])
def test_bad_sinks_are_named(log_to, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_dict(tiny_recipe(log_to=log_to))


def wandb_records(path):
    """The records of an offline W&B run file: a 7-byte header, then LevelDB's log format (32 KiB
    blocks of [crc 4][length 2][type 1] chunks: full, or first/middle/last) around protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # a chunk still being written
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def finished_records(path, timeout=60.0):
    """The run file's records once its exit record is there: run.finish() returns before W&B's
    service process has flushed the file (seen as an empty history on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path) if path.stat().st_size > 7 else []
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record {timeout:.0f} s after finish()"
        time.sleep(0.1)


def wandb_history(run_dir):
    (path,) = run_dir.glob("run-*.wandb")
    rows, config = [], {}
    for r in finished_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind in ("config", "run"):  # the run record carries wandb.init's config
            updates = r.config.update if kind == "config" else r.run.config.update
            config.update({u.key: json.loads(u.value_json) for u in updates})
    return rows, config


def test_wandb_offline_holds_what_metrics_jsonl_holds(tmp_path):
    """An offline W&B run under RUN/wandb, read back from W&B's own file: the training scalars by
    step as metrics.jsonl has them, the evaluation apart, the pictures, the recipe as config; a
    resumed run continues the same W&B run id."""
    pytest.importorskip("wandb")
    recipe = tiny_recipe(steps=4, checkpoint_every=2, log_to=["jsonl", "wandb"], plots=True)
    fit(recipe, tmp_path)
    run_id = (tmp_path / "wandb-id").read_text().strip()
    (run,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    history, config = wandb_history(run)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train = [r for r in rows if "samples_per_s" in r]
    logged = {h["_step"]: h["train/loss"] for h in history if "train/loss" in h}
    assert logged == pytest.approx({r["step"]: r["loss"] for r in train})
    final_eval = [r for r in rows if "zero_shot_top1" in r][-1]
    assert [h["eval/zero_shot_top1"] for h in history if "eval/zero_shot_top1" in h][-1] == \
        pytest.approx(final_eval["zero_shot_top1"])
    assert any(h.get("confusion/_type") == "image-file" for h in history)  # the pictures, as W&B images
    assert config["task"] == "clip" and config["train"]["steps"] == 4
    recipe["train"]["steps"] = 6
    fit(recipe, tmp_path, resume=True)
    assert (tmp_path / "wandb-id").read_text().strip() == run_id
    assert all(r.name.endswith(run_id) for r in (tmp_path / "wandb").glob("offline-run-*"))
    # A run that starts over is a new W&B run, as its metrics.jsonl is new.
    recipe = recipe_from_dict(recipe)
    Trainer(recipe, ClipTask(recipe), str(tmp_path), DistInfo(), progress=False).fit(overwrite=True)
    assert (tmp_path / "wandb-id").read_text().strip() != run_id
