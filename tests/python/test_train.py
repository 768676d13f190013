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
from tessera.train import build_task, load_recipe, recipe_from_dict
from tessera.train.clip_task import ClipTask
from tessera.train.distributed import DistInfo
from tessera.train.checkpoint import STATE_FILE
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
    with pytest.raises(ValueError, match="train.steps: expected an integer, got .many."):
        recipe_from_dict({"train": {"steps": "many"}})


def test_short_run_learns(tmp_path):
    summary, _ = fit(tiny_recipe(steps=60, checkpoint_every=0, plots=True), tmp_path)
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
    assert not list((tmp_path / "full").glob("*.png"))  # train.plots: false (the test recipes' setting)

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


@pytest.mark.long
def test_sigkill_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path):
    """A run killed with SIGKILL while it trains and writes checkpoints resumes from the newest
    complete checkpoint and ends bit-identical to a run that was never interrupted."""
    import signal
    import time

    r = tiny_recipe(steps=40, checkpoint_every=2, keep_checkpoints=3, log_every=1)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tessera.train", str(path), "--quiet"]
    subprocess.run([*cmd, "--out", str(tmp_path / "full")], env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "cut")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "cut" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts.is_dir() and any(n.startswith("step-0000001") for n in os.listdir(ckpts))):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    complete = sorted(n for n in os.listdir(ckpts) if n.startswith("step-"))
    assert complete and all((ckpts / n / "dcp" / ".metadata").exists() and (ckpts / n / STATE_FILE).exists()
                            for n in complete), complete
    subprocess.run([*cmd, "--out", str(tmp_path / "cut"), "--resume"], env=env, check=True, capture_output=True,
                   timeout=600)
    a = tessera.from_pretrained(str(tmp_path / "full" / "checkpoints" / "step-00000040")).state_dict()
    b = tessera.from_pretrained(str(tmp_path / "cut" / "checkpoints" / "step-00000040")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_checkpoint_format_versions_are_checked(tmp_path):
    import io

    from tessera.train.checkpoint import load_trainer_state

    for version, hint in ((99, "newer than this tessera reads.*upgrade tessera"), (1, "older than this tessera resumes")):
        buf = io.BytesIO()
        torch.save({"format_version": version}, buf)
        (tmp_path / STATE_FILE).write_bytes(buf.getvalue())
        with pytest.raises(ValueError, match=hint):
            load_trainer_state(str(tmp_path))


def test_bad_train_values_are_rejected():
    for key, value, msg in (("steps", -5, "train.steps must be >= 1, got -5"),
                            ("strategy", "zero3", "train.strategy must be one of ddp, fsdp2"),
                            ("precision", "fp16", "train.precision must be one of fp32, bf16")):
        with pytest.raises(ValueError, match=msg):
            recipe_from_dict({"train": {key: value}})
    with pytest.raises(ValueError, match="optim.accumulation_steps must be >= 1"):
        recipe_from_dict({"optim": {"accumulation_steps": 0}})


def test_non_finite_losses_are_skipped_then_stop(tmp_path):
    class NaNTask(ClipTask):
        def compute_loss(self, wrapped, model, batch, step):
            out = super().compute_loss(wrapped, model, batch, step)
            if step == 1 or step >= 5:
                out["loss"] = out["loss"] * float("nan")
            return out

    with pytest.raises(TrainingDiverged, match="stopping at step 8: 3 consecutive non-finite steps.*step-00000004"):
        fit(tiny_recipe(steps=20, max_bad_steps=3), tmp_path, task_cls=NaNTask)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if r.get("skipped")] == [2, 6, 7, 8]  # numbered as the steps they were
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


def test_mae_recipe_learns_and_draws_reconstructions(tmp_path):
    r = yaml.safe_load(open(ROOT / "recipes" / "fashion_mnist_mae.yaml"))
    r["train"].update(steps=40, eval_every=20, checkpoint_every=40, log_every=5, threads=1)
    r["data"].update(batch_size=128, num_workers=1)
    r["eval"]["max_images"] = 256
    summary, model = fit(r, tmp_path, task_cls=tessera.train.tasks.task_class("mae"))
    assert summary["final_loss"] < 0.8 * summary["first_loss"], summary
    assert summary["eval_loss"] < 0.85, summary  # ~1.0 for a model that predicts the patch mean
    for name in ("reconstruction.png", "loss.png", "reconstructions/eval-001.png"):
        assert (tmp_path / name).stat().st_size > 0
    ckpt = tessera.from_pretrained(str(tmp_path / "checkpoints" / "step-00000040"))
    assert isinstance(ckpt, tessera.ViTMAEForPreTraining)
    assert all(torch.equal(ckpt.state_dict()[k], v) for k, v in model.state_dict().items())


def test_freezing_by_pattern_trains_only_the_rest_and_reports_counts(tmp_path):
    r = tiny_recipe(steps=3)
    r["model"]["freeze"] = [r"^text_model\."]
    r["model"]["trainable"] = [r"^(vision_model|text_model|visual_projection|text_projection)\."]
    from tessera.train.distributed import seed_all

    seed_all(0, 0)  # the trainer's initial weights
    start = {k: v.clone() for k, v in build_task(recipe_from_dict(r)).build_model().state_dict().items()}
    summary, model = fit(r, tmp_path)
    params = dict(model.named_parameters())
    assert summary["trainable_parameters"] == sum(p.numel() for n, p in params.items()
                                                  if not n.startswith("text_model.") and n != "logit_scale")
    assert summary["total_parameters"] == sum(p.numel() for p in params.values())
    after = model.state_dict()
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    frozen = {k for k in start if k.startswith("text_model.") or k == "logit_scale"}
    assert not (changed & frozen), sorted(changed & frozen)[:3]
    assert changed == set(start) - frozen, sorted(set(start) - frozen - changed)[:3]
    r["model"]["freeze"] = ["^no_such_tower"]
    with pytest.raises(ValueError, match="model.freeze: '\\^no_such_tower' matches no parameter"):
        fit(r, tmp_path / "bad")
