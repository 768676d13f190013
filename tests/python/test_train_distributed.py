"""The trainer under torchrun (2 Gloo ranks, CPU): `ddp` and `fsdp2` (also with `optim.in_backward`)
give the losses and weights of one process with the same global batch, every trainable parameter
changes, and a DCP checkpoint resumes onto 2 ranks bit-exactly and onto 1 rank within float
tolerance."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import tessera
from tessera.train import build_task, recipe_from_dict
from tessera.train.distributed import seed_all

sys.path.insert(0, os.path.dirname(__file__))
from _recipes import FMNIST, tiny_recipe  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")]
STEPS = 4
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def recipe(strategy: str, per_rank_batch: int, **train):
    return tiny_recipe(layers=2, batch_size=per_rank_batch, steps=STEPS, checkpoint_every=2, keep_checkpoints=2,
                       strategy=strategy, **train)


TOY_ENV = {**ENV, "PYTHONPATH": os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def train(tmp_path, name: str, r, procs: int, out=None, resume=False, toy=False):
    """tessera.train on `procs` processes; `toy`: the toy task (tests/python/_toy_task.py)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    out = out or tmp_path / name
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
              if procs > 1 else [sys.executable])
    cmd = [*launch, "-m", "tessera.train", str(path), *(["--import", "_toy_task"] if toy else []), "--out", str(out),
           "--quiet", *(["--resume"] if resume else [])]
    run = subprocess.run(cmd, env=TOY_ENV if toy else ENV, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    return out


def weights(out, step=STEPS):
    return tessera.from_pretrained(str(out / "checkpoints" / f"step-{step:08d}")).state_dict()


def losses(out):
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    return [r["loss"] for r in rows if "loss" in r]


def initial_weights(r):
    recipe_obj = recipe_from_dict(r)
    seed_all(recipe_obj.train.seed, 0)
    return build_task(recipe_obj).build_model().state_dict()


def assert_close(a, b, tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    return {
        "tmp": tmp,
        "single": train(tmp, "single", recipe("ddp", 32), 1),
        "ddp": train(tmp, "ddp", recipe("ddp", 16), 2),
        "fsdp2": train(tmp, "fsdp2", recipe("fsdp2", 16), 2),
    }


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_equal_one_process(runs, strategy):
    one, two = runs["single"], runs[strategy]
    assert json.load(open(two / "summary.json"))["strategy"] == strategy
    torch.testing.assert_close(torch.tensor(losses(two)), torch.tensor(losses(one)), rtol=1e-5, atol=1e-5)
    final = weights(two)
    assert_close(final, weights(one), 1e-5)
    start = initial_weights(recipe(strategy, 16))
    unchanged = [k for k in start if torch.equal(start[k], final[k])]
    assert not unchanged, unchanged
    # Evaluation ran (on every rank under fsdp2, each forward gathering the shards) and agrees.
    top1 = [json.load(open(d / "summary.json"))["zero_shot_top1"] for d in (one, two)]
    assert abs(top1[0] - top1[1]) <= 2 / 512, top1


def test_fsdp2_checkpoint_is_sharded_and_exports_hf(runs):
    ckpt = runs["fsdp2"] / "checkpoints" / f"step-{STEPS:08d}"
    files = sorted(os.listdir(ckpt / "dcp"))
    assert ".metadata" in files and sum(f.endswith(".distcp") for f in files) == 2, files
    transformers = pytest.importorskip("transformers")
    hf = transformers.CLIPModel.from_pretrained(str(ckpt))
    ours = weights(runs["fsdp2"])
    for k, v in hf.state_dict().items():
        if k in ours:
            assert torch.equal(v, ours[k]), k


def _resume_from_step2(tmp, source, name):
    out = tmp / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    shutil.rmtree(out / "checkpoints" / f"step-{STEPS:08d}")
    return out


def test_dcp_resume_onto_two_ranks_is_bit_exact(runs):
    out = _resume_from_step2(runs["tmp"], runs["fsdp2"], "resume2")
    train(runs["tmp"], "resume2", recipe("fsdp2", 16), 2, out=out, resume=True)
    a, b = weights(out), weights(runs["fsdp2"])
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert losses(out) == losses(runs["fsdp2"])


def test_dcp_resume_onto_one_rank_continues(runs):
    # Same global batch (32 on one rank = 2 x 16): the same samples per step, summed in another
    # order, so equal within float rounding rather than bit for bit.
    out = _resume_from_step2(runs["tmp"], runs["fsdp2"], "resume1")
    train(runs["tmp"], "resume1", recipe("ddp", 32), 1, out=out, resume=True)
    assert_close(weights(out), weights(runs["fsdp2"]), 1e-5)
    torch.testing.assert_close(torch.tensor(losses(out)), torch.tensor(losses(runs["fsdp2"])), rtol=1e-5, atol=1e-5)


def test_resume_of_a_finished_run_evaluates_it(runs):
    out = _resume_from_step2(runs["tmp"], runs["single"], "done")
    shutil.copytree(runs["single"] / "checkpoints" / f"step-{STEPS:08d}", out / "checkpoints" / f"step-{STEPS:08d}")
    path = runs["tmp"] / "done.yaml"
    path.write_text(yaml.safe_dump(recipe("ddp", 32)))
    run = subprocess.run([sys.executable, "-m", "tessera.train", str(path), "--out", str(out), "--quiet", "--resume"],
                         env=ENV, timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "the run is complete (4/4 steps)" in run.stdout
    summary = json.load(open(out / "summary.json"))
    assert summary["train_steps"] == STEPS and summary["zero_shot_top1"] > 0 and summary["final_loss"] is not None


def test_fsdp2_bf16_with_checkpointing_and_accumulation_trains(runs):
    r = recipe("fsdp2", 8, precision="bf16")
    r["model"]["gradient_checkpointing"] = True
    r["optim"]["accumulation_steps"] = 2
    out = train(runs["tmp"], "fsdp2_bf16", r, 2)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert all(row["loss"] == row["loss"] and row["grad_norm"] > 0 for row in rows if "loss" in row)
    final, start = weights(out), initial_weights(r)
    assert final["logit_scale"].dtype == torch.float32  # bf16 compute, fp32 master weights
    unchanged = [k for k in start if torch.equal(start[k], final[k])]
    assert not unchanged, unchanged


def _toy_weighted(tmp_path, name, strategy, procs, batch):
    """A run of the toy task whose loss is a token-weighted mean (tests/python/_toy_task.py)."""
    # in_backward scales the token sum before backward (no accumulation there: one micro-batch).
    optim = ({"accumulation_steps": 1, "in_backward": True, "grad_clip": 0.0} if "in_backward" in strategy
             else {"accumulation_steps": 2})
    r = {"task": "toy_regression", "data": {"samples": 128, "batch_size": batch},
         "optim": {"lr": 0.05, "warmup_fraction": 0.0, "weight_decay": 0.0, **optim},
         "train": {"plots": False, "steps": 3, "log_every": 1, "checkpoint_every": 3, "threads": 1,
                   "strategy": strategy.split()[0]}}
    return train(tmp_path, name, r, procs, toy=True)


@pytest.fixture(scope="module")
def toy_one(tmp_path_factory):
    """One process of 16 rows, with accumulation or stepping inside backward: the reference both
    strategies' two ranks of 8 must equal (the strategy means nothing to one process)."""
    tmp = tmp_path_factory.mktemp("toy")
    return {kind: _toy_weighted(tmp, kind.replace(" ", "_"), kind, 1, 16) for kind in ("ddp", "ddp in_backward")}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2", "fsdp2 in_backward"])
def test_token_weighted_loss_across_ranks_equals_one_process(tmp_path, toy_one, strategy):
    outs = [toy_one["ddp in_backward" if "in_backward" in strategy else "ddp"],
            _toy_weighted(tmp_path, "toy2", strategy, 2, 8)]
    one, two = (losses(o) for o in outs)
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-5, atol=1e-5)
    a, b = (tessera.models.weights.load_weights(str(o / "checkpoints" / "step-00000003")) for o in outs)
    assert_close(a, b, 1e-5)


def test_fsdp2_stepping_inside_backward_equals_one_process(runs):
    """optim.in_backward under FSDP2: each rank steps its shards from FSDP2's reduce-scatter hook,
    the replicated logit_scale after its gradient is averaged by hand; equal to one process."""
    def inside(strategy, batch):
        r = recipe(strategy, batch)
        # Unclipped, AdamW's default eps lets the rounding noise of gradients that are zero in
        # exact arithmetic (key biases) move weights by ~2e-5 between 1 and 2 ranks, stepping
        # after backward as well; a larger eps keeps the comparison on the real gradients.
        r["optim"].update(in_backward=True, grad_clip=0.0, eps=1e-3)
        return r

    one = train(runs["tmp"], "inside1", inside("ddp", 32), 1)
    two = train(runs["tmp"], "inside2", inside("fsdp2", 16), 2)
    torch.testing.assert_close(torch.tensor(losses(two)), torch.tensor(losses(one)), rtol=1e-5, atol=1e-5)
    final = weights(two)
    assert_close(final, weights(one), 1e-5)
    start = initial_weights(inside("fsdp2", 16))
    unchanged = [k for k in start if torch.equal(start[k], final[k])]
    assert not unchanged, unchanged


def vqkd_recipe(strategy: str, per_rank_batch: int):
    """The shipped VQ-KD recipe, shrunk, with a random CLIP teacher; no dead-code restarts (those
    pick rank 0's inputs, so they differ from one process by design)."""
    import pathlib

    r = yaml.safe_load(open(pathlib.Path(__file__).resolve().parents[2] / "recipes" / "fashion_mnist_vqkd.yaml"))
    r["model"]["config"]["encoder_config"].update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                  intermediate_size=64)
    r["model"]["config"].update(codebook_size=32, dead_code_threshold=0.0)
    r["teacher"] = {"config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "image_size": 28, "patch_size": 7}}
    r["data"].update(batch_size=per_rank_batch, num_workers=1)
    r["train"].update(steps=STEPS, checkpoint_every=STEPS, eval_every=0, log_every=1, strategy=strategy, threads=1,
                      plots=False)
    r["eval"]["max_images"] = 128
    return r


@pytest.fixture(scope="module")
def vqkd_one(tmp_path_factory):
    """One process of 32 images: what both strategies' two ranks of 16 must equal."""
    return train(tmp_path_factory.mktemp("vqkd"), "one", vqkd_recipe("ddp", 32), 1)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_vqkd_on_two_ranks_equals_one_process_codebook_included(tmp_path, vqkd_one, strategy):
    """The EMA codebook is all-reduced: two ranks of 16 images update it exactly as one process of
    32, and every trainable parameter and the codebook move."""
    one = vqkd_one
    two = train(tmp_path, strategy, vqkd_recipe(strategy, 16), 2)
    torch.testing.assert_close(torch.tensor(losses(two)), torch.tensor(losses(one)), rtol=1e-5, atol=1e-5)
    final = weights(two)
    assert_close(final, weights(one), 1e-5)
    start = initial_weights(vqkd_recipe(strategy, 16))
    unchanged = [k for k in start if k != "quantize.cluster_size" and torch.equal(start[k], final[k])]
    assert not unchanged, unchanged


def test_fsdp2_trains_with_a_frozen_scalar(runs):
    """open_clip's --lock-logit-scale: fully_shard refused the frozen 0-dim logit_scale ("doesn't
    support scalar parameters"), which one process and DDP train with."""
    r = recipe("fsdp2", 16)
    r["model"]["freeze"] = ["^logit_scale$"]
    out = train(runs["tmp"], "fsdp2_frozen_scale", r, 2)
    final, start = weights(out), initial_weights(r)
    assert torch.equal(final["logit_scale"], start["logit_scale"])
    unchanged = [k for k in start if torch.equal(start[k], final[k]) and k != "logit_scale"]
    assert not unchanged, unchanged


def _toy_run(tmp_path, name, data, train):
    """A 2-rank DDP run of the toy task (tests/python/_toy_task.py); the finished process."""
    r = {"task": "toy_regression", "data": {"samples": 64, "batch_size": 8, **data},
         "optim": {"lr": 0.05, "warmup_fraction": 0.0},
         "train": {"plots": False, "steps": 4, "log_every": 1, "checkpoint_every": 0, "threads": 1, **train}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "tessera.train", str(path), "--import", "_toy_task", "--out", str(tmp_path / name),
                           "--quiet"], env=TOY_ENV, timeout=300, capture_output=True, text=True)


@pytest.mark.long
def test_a_stalled_rank_fails_the_run_after_train_timeout_s_naming_it(tmp_path):
    """A rank that stalls (not dies) held the others silently for torch's default, 30 minutes on
    Gloo; from the second step on train.timeout_s bounds the wait, and the error names it.
    Start-up and the first step keep torch's default (a rank that stalls there passes)."""
    run = _toy_run(tmp_path, "stall", {"stall_rank": 1, "stall_s": 30}, {"timeout_s": 3, "eval_every": 2})
    assert run.returncode != 0
    assert "train.timeout_s (3 s)" in run.stderr, run.stderr[-3000:]
    run = _toy_run(tmp_path, "first", {"stall_rank": 1, "stall_step": 0, "stall_s": 9}, {"timeout_s": 4})
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.long
def test_what_rank0_does_alone_is_waited_for_under_rank0_timeout_s(tmp_path):
    """While rank 0 evaluates, writes and hashes a checkpoint's files, writes the summary and plots
    alone, the others wait under train.rank0_timeout_s, not in the next step's (or shutdown's)
    collective under train.timeout_s, which failed the run before (a slow checkpoint failed it at
    every resume); past rank0_timeout_s, the error names that setting."""
    # timeout_s leaves the collectives (checkpoint writes that fsync included) room on a loaded
    # machine (pytest-xdist's other worker); each solo phase sleeps twice as long.
    slow = {"eval_sleep_s": 8, "plot_sleep_s": 8, "manifest_sleep_s": 8}
    run = _toy_run(tmp_path, "alone", slow, {"timeout_s": 4, "eval_every": 2, "checkpoint_every": 2, "plots": True})
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in open(tmp_path / "alone" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "eval_mse" in r] == [2, 4]
    assert sorted(os.listdir(tmp_path / "alone" / "checkpoints")) == ["step-00000002", "step-00000004"]
    run = _toy_run(tmp_path, "slow", {"eval_sleep_s": 30}, {"rank0_timeout_s": 3, "eval_every": 2})
    assert run.returncode != 0
    assert "train.rank0_timeout_s (3 s) while rank 0 worked alone" in run.stderr, run.stderr[-3000:]
    assert "train.timeout_s" not in run.stderr.replace("train.rank0_timeout_s", "")
