"""train.log_to: TensorBoard receives exactly what metrics.jsonl holds (scalars by step, training
and evaluation apart), the run's pictures, and a resumed run's events past its checkpoint are
dropped as its jsonl rows are."""
import json
import os
import sys

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
    fit(tiny_recipe(steps=6, checkpoint_every=0, log_to=["jsonl", "tensorboard"]), tmp_path)
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


@pytest.mark.parametrize("log_to, message", [
    (["jsonl", "wandb"], "unknown sink 'wandb'"),
    (["tensorboard"], "must include 'jsonl'"),
])
def test_bad_sinks_are_named(log_to, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_dict(tiny_recipe(log_to=log_to))
