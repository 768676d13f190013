"""The masked-image-modeling tasks end to end on Fashion-MNIST with their shipped recipes (shrunk,
and with a small random CLIP teacher instead of the demo's): VQ-KD learns and uses its codebook,
BEiT learns to predict its tokens, feature-target MIM learns the teacher's features, a BEiT run
resumes bit-exactly (masks are reseeded per step), and `tessera eval --probe` reads the runs."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml

import tessera
from tessera.train import recipe_from_dict
from tessera.train.distributed import DistInfo
from tessera.train.tasks import task_class
from tessera.train.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
from _recipes import FMNIST  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
ROOT = pathlib.Path(__file__).resolve().parents[2]
TEACHER = {"config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 28, "patch_size": 7}}
ENCODER = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 96}


def recipe(name, steps=30, **sections):
    r = yaml.safe_load(open(ROOT / "recipes" / f"fashion_mnist_{name}.yaml"))
    r["train"].update(steps=steps, eval_every=0, checkpoint_every=steps, log_every=1, threads=1)
    r["data"].update(batch_size=64, num_workers=1)
    r["eval"]["max_images"] = 256
    for key, value in sections.items():
        r[key] = value
    return r


def fit(r, out, resume=False, task_cls=None):
    rec = recipe_from_dict(r)
    trainer = Trainer(rec, (task_cls or task_class(rec.task))(rec), str(out), DistInfo(), progress=False)
    return trainer.fit(resume=resume), trainer.model


@pytest.fixture(scope="module")
def vqkd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vqkd")
    r = recipe("vqkd", teacher=TEACHER)
    r["model"]["config"]["encoder_config"].update(ENCODER)
    r["model"]["config"]["codebook_size"] = 64
    summary, model = fit(r, out)
    return out, summary, model


def test_vqkd_learns_and_uses_its_codebook(vqkd_run):
    out, summary, model = vqkd_run
    assert summary["final_loss"] < 0.7 * summary["first_loss"], summary
    assert summary["codes_used"] > 0.25 and summary["perplexity"] > 8, summary
    loaded = tessera.from_pretrained(str(out / "checkpoints" / "step-00000030"))
    assert isinstance(loaded, tessera.VQKD) and torch.equal(loaded.quantize.embedding, model.quantize.embedding)


def _beit(vqkd_out, steps=30):
    r = recipe("beit", steps=steps, tokenizer={"checkpoint": str(vqkd_out)})
    r["model"]["config"].update(ENCODER)
    return r


def test_beit_predicts_visual_tokens(vqkd_run, tmp_path):
    summary, model = fit(_beit(vqkd_run[0]), tmp_path)
    assert model.config["vocab_size"] == 64
    assert summary["final_loss"] < 0.8 * summary["first_loss"], summary
    assert summary["token_accuracy"] > 3 / 64, summary  # chance is 1/64
    result = subprocess.run([sys.executable, "-m", "tessera.cli", "eval", str(tmp_path), "--probe", "--probe-train",
                             "600", "--probe-test", "200"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["feature_dim"] == 48 and 0.3 < probe["linear_probe"] <= 1 and 0.3 < probe["knn"] <= 1, probe


def test_beit_resume_is_bit_exact(vqkd_run, tmp_path):
    class Crash(Exception):
        pass

    r = _beit(vqkd_run[0], steps=6)
    r["train"]["checkpoint_every"] = 3
    _, full = fit(r, tmp_path / "full")
    base = task_class("beit")

    class Crashing(base):
        def compute_loss(self, wrapped, model, batch, step):
            if step == 4:
                raise Crash()
            return super().compute_loss(wrapped, model, batch, step)

    with pytest.raises(Crash):
        fit(r, tmp_path / "cut", task_cls=Crashing)
    _, resumed = fit(r, tmp_path / "cut", resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("loss", ["cosine", "smooth_l1"])
def test_feature_targets_are_learned(loss, tmp_path):
    r = recipe("mim_features", teacher=TEACHER, loss={"type": loss})
    r["model"]["config"].update(ENCODER)
    summary, model = fit(r, tmp_path)
    assert model.config["vocab_size"] == 48  # the head regresses the teacher's width
    assert summary["final_loss"] < 0.8 * summary["first_loss"], summary


def test_recipe_errors_name_the_problem(vqkd_run, tmp_path):
    r = recipe("beit", tokenizer={"checkpoint": str(tmp_path / "nothing")})
    with pytest.raises(FileNotFoundError, match="tokenizer.checkpoint .*nothing"):
        fit(r, tmp_path)
    r = _beit(vqkd_run[0])
    r["model"]["config"]["vocab_size"] = 100
    with pytest.raises(ValueError, match="model.config.vocab_size is 100 but the beit task needs 64"):
        fit(r, tmp_path)
    r = recipe("mim_features", teacher={**TEACHER, "checkpoint": "runs/demo"})
    with pytest.raises(ValueError, match="either checkpoint .* or config"):
        fit(r, tmp_path)
    r = recipe("beit", tokenizer={"checkpoint": str(vqkd_run[0])}, masking={"ratio": 1.5})
    with pytest.raises(ValueError, match=r"masking.ratio must be in \(0, 1\)"):
        fit(r, tmp_path)
