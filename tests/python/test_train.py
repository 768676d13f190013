"""The trainer: recipes reject unknown keys, training learns, resume is bit-exact, non-finite
losses are skipped and stop the run cleanly, bf16 autocast, torchrun DDP equals one process."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml

import tessera
from tessera.train import load_recipe, recipe_from_dict
from tessera.train.clip_task import ClipTask
from tessera.train.distributed import DistInfo
from tessera.train.trainer import Trainer, TrainingDiverged

sys.path.insert(0, os.path.dirname(__file__))
from _recipes import FMNIST, tiny_recipe  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
ROOT = pathlib.Path(__file__).resolve().parents[2]


def fit(recipe_dict, out, resume=False, task_cls=ClipTask):
    recipe = recipe_from_dict(recipe_dict)
    trainer = Trainer(recipe, task_cls(recipe), str(out), DistInfo(), progress=False)
    summary = trainer.fit(resume=resume)
    return summary, trainer.model


def test_unknown_recipe_key_lists_valid_keys(tmp_path):
    bad = tiny_recipe()
    bad["optim"]["learning_rate"] = 1e-3
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"unknown key\(s\) learning_rate; valid keys: lr, weight_decay"):
        load_recipe(str(p))
    with pytest.raises(ValueError, match="train.steps: expected int"):
        recipe_from_dict({"train": {"steps": "many"}})


def test_short_run_learns(tmp_path):
    summary, _ = fit(tiny_recipe(steps=60, checkpoint_every=0), tmp_path)
    assert summary["final_loss"] < summary["first_loss"] - 0.7, summary
    assert summary["zero_shot_top1"] > 0.3, summary  # chance is 0.1
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {"loss", "lr", "samples_per_s"} <= set(rows[0])
    for name in ("loss.png", "eval.png", "confusion.png", "predictions.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0


class _Crash(Exception):
    pass


def test_resume_is_bit_exact(tmp_path):
    _, full = fit(tiny_recipe(), tmp_path / "full")

    class CrashingTask(ClipTask):
        def compute_loss(self, wrapped, model, batch, step):
            if step == 6:
                raise _Crash()
            return super().compute_loss(wrapped, model, batch, step)

    with pytest.raises(_Crash):
        fit(tiny_recipe(), tmp_path / "cut", task_cls=CrashingTask)
    assert sorted(os.listdir(tmp_path / "cut" / "checkpoints")) == ["step-00000004"]
    _, resumed = fit(tiny_recipe(), tmp_path / "cut", resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    ckpt = tessera.from_pretrained(str(tmp_path / "cut" / "checkpoints" / "step-00000008"))
    assert all(torch.equal(ckpt.state_dict()[k], b[k]) for k in b)


def test_non_finite_losses_are_skipped_then_stop(tmp_path):
    class NaNTask(ClipTask):
        def compute_loss(self, wrapped, model, batch, step):
            out = super().compute_loss(wrapped, model, batch, step)
            if step == 1 or step >= 5:
                out["loss"] = out["loss"] * float("nan")
            return out

    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite losses.*step-00000004"):
        fit(tiny_recipe(steps=20, max_bad_steps=3), tmp_path, task_cls=NaNTask)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert sum(1 for r in rows if r.get("skipped")) == 4
    good = tessera.from_pretrained(str(tmp_path / "checkpoints" / "step-00000004"))
    assert all(torch.isfinite(p).all() for p in good.parameters())


def test_bf16_autocast_trains(tmp_path):
    summary, model = fit(tiny_recipe(steps=4, precision="bf16", checkpoint_every=0), tmp_path)
    assert summary["train_steps"] == 4 and summary["final_loss"] == summary["final_loss"]
    assert model.dtype == torch.float32  # autocast keeps fp32 master weights


def test_checkpoint_with_code_in_its_pickle_is_refused(tmp_path):
    import io
    import os

    from tessera.train.checkpoint import STATE_FILE, load_trainer_state

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    buf = io.BytesIO()
    torch.save({"format_version": 1, "evil": RunsCode()}, buf)
    (tmp_path / STATE_FILE).write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="refused"):
        load_trainer_state(str(tmp_path))
    assert not (tmp_path / "pwned").exists()
