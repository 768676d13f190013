"""Sugar under torchrun (2 Gloo ranks, CPU, ddp and fsdp2): the same global batch gives one
process's L_g and L_d, step by step, and its weights (LoRA merged, multimodal and retrieval
projectors): points are drawn per sample, L_d's rows are gathered with gradient, and the token
count of L_g is summed over ranks."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from tessera import _C

sys.path.insert(0, os.path.dirname(__file__))
from _sugar_runs import FMNIST, make_runs, recipe  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _C.data.drawing_available(), reason="built without OpenCV"),
              pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")]
STEPS = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train(root, name, strategy, batch, procs):
    r = recipe(root, steps=STEPS, batch_size=batch)
    r["data"]["eval"] = r["data"]["pairs"] = ""  # evaluation is not what is compared
    r["train"].update(threads=1, strategy=strategy)
    # AdamW's default eps turns the summation-order noise of a gradient near zero into a visible
    # update (a few of the projector's 1024 weights moved 2e-5 apart between 1 and 2 ranks, ddp and
    # fsdp2 alike, once the demo data changed); a larger eps compares the real gradients.
    r["optim"]["eps"] = 1e-3
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
              if procs > 1 else [sys.executable])
    run = subprocess.run([*launch, "-m", "tessera.train", str(path), "--out", str(root / name), "--quiet"],
                         env=ENV, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    return root / name


def terms(out):
    return [(row["generative"], row["discriminative"]) for row in map(json.loads, open(out / "metrics.jsonl"))
            if "discriminative" in row]


def weights(out):
    ckpt = out / "checkpoints" / f"step-{STEPS:08d}"
    state = dict(_C.core.load_safetensors(str(ckpt / "model.safetensors"))[0])
    state.update({f"retrieval_projector.{k}": v for k, v in
                  _C.core.load_safetensors(str(ckpt / "retrieval_projector.safetensors"))[0].items()})
    return state


def test_two_ranks_equal_one_process(tmp_path):
    root = make_runs(tmp_path)
    one = train(root, "one", "ddp", 8, 1)
    ref_terms, ref = terms(one), weights(one)
    assert len(ref_terms) == STEPS
    for strategy in ("ddp", "fsdp2"):
        two = train(root, strategy, strategy, 4, 2)
        torch.testing.assert_close(torch.tensor(terms(two)), torch.tensor(ref_terms), rtol=1e-5, atol=1e-5)
        got = weights(two)
        assert got.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5, msg=f"{strategy}: {k}")


def test_fsdp2_rank_with_only_text_rows_equals_one_process(tmp_path):
    """A rank whose rows hold no image skipped the tower that FSDP2 all-gathers: the ranks'
    collectives paired up wrongly (gloo aborted; NCCL hangs). It now runs an idle image row that
    holds no point and no label, so the run equals one process."""
    root = make_runs(tmp_path)
    rows = [json.loads(line) for line in open(root / "set" / "train.jsonl")]
    with_image = next(r for r in rows if any("image" in s for s in r["segments"]))
    text_only = next(r for r in rows if all("text" in s for s in r["segments"]) and len(r["segments"]) > 1)
    (root / "set" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (with_image, text_only)))
    one = train(root, "one", "ddp", 2, 1)  # each step: both rows; two ranks: one row each
    two = train(root, "fsdp2", "fsdp2", 1, 2)
    assert len(terms(one)) == STEPS
    torch.testing.assert_close(torch.tensor(terms(two)), torch.tensor(terms(one)), rtol=1e-5, atol=1e-5)
    ref, got = weights(one), weights(two)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5, msg=k)
