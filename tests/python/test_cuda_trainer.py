"""The trainer on a CUDA device against the CPU (issue 18); the model families' half is
test_cuda.py, what both share _device.py.

The CLIP demo recipe (recipes/fashion_mnist_clip.yaml, shortened by overrides): the device's
losses equal the CPU's (the first within 1e-4, the rest within TRAIN_LOSS_REL, since AdamW
amplifies rounding differences step after step), with PyTorch's fused AdamW and its state on the
device; a checkpoint written on the device resumes on the CPU and one written on the CPU resumes
on the device, ending where an uninterrupted run ends; the data loader hands out pinned batches
exactly when asked and CUDA is present; FSDP2 with one rank (NCCL; Gloo in CPU mode) trains.
"""
import gc
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Optional

import pytest
import torch

import tessera

sys.path.insert(0, os.path.dirname(__file__))
from _device import (CPU_MODE, CUDA_MARKS, DEVICE, FP32_REL, ROOT, TRAIN_LOSS_REL,  # noqa: E402
                     TRAIN_WEIGHT_REL, assert_scaled_close, exact_fp32)  # noqa: F401
from _recipes import FMNIST  # noqa: E402

pytestmark = CUDA_MARKS

DEMO = ROOT / "recipes" / "fashion_mnist_clip.yaml"
STEPS = 6
LR = 1e-3  # the demo recipe's
TOWER = "{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, hidden_act: gelu"
SHORT = [  # the demo recipe, tiny and short
    "model.config.projection_dim=32",
    f"model.config.text_config={TOWER}, vocab_size: 49408, max_position_embeddings: 16, eos_token_id: 49407, "
    "bos_token_id: 49406, pad_token_id: 0}",
    f"model.config.vision_config={TOWER}, image_size: 28, patch_size: 7, num_channels: 3}}",
    "data.batch_size=32", "data.num_workers=1", f"optim.lr={LR}",
    f"train.steps={STEPS}", "train.log_every=1", "train.checkpoint_every=2", f"train.keep_checkpoints={STEPS}",
    "train.threads=2", "eval.zero_shot=false",
]


def _write_idx_dataset(root: pathlib.Path, n: int = 512) -> None:
    """Fashion-MNIST's file format (uncompressed idx) with n random 28 x 28 images per split."""
    import numpy as np

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        # a class-dependent mean brightness, so the captions say something about the image
        images = np.clip(rng.normal(20 * labels[:, None, None], 40, (n, 28, 28)), 0, 255).astype(np.uint8)
        (root / f"{split}-images-idx3-ubyte").write_bytes(
            np.array([0x803, n, 28, 28], dtype=">i4").tobytes() + images.tobytes())
        (root / f"{split}-labels-idx1-ubyte").write_bytes(np.array([0x801, n], dtype=">i4").tobytes() + labels.tobytes())


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory) -> str:
    """The demo recipe's Fashion-MNIST where installed; else random images in its file format
    (a GPU machine may lack the dataset: the trainer's path is the same)."""
    if os.path.isdir(FMNIST):
        return FMNIST
    root = tmp_path_factory.mktemp("fashion_mnist_like")
    _write_idx_dataset(root)
    return str(root)


class _Crash(Exception):
    pass


def _fit(out, root: str, device: str, crash_at: Optional[int] = None, resume: bool = False, overrides=()):
    from tessera.train import load_recipe
    from tessera.train.clip_task import ClipTask
    from tessera.train.distributed import DistInfo
    from tessera.train.trainer import Trainer

    class Task(ClipTask):
        def compute_loss(self, wrapped, model, batch, step):
            if step == crash_at:
                raise _Crash()
            return super().compute_loss(wrapped, model, batch, step)

    recipe = load_recipe(str(DEMO), [*SHORT, f"data.root={root}", *overrides])
    trainer = Trainer(recipe, Task(recipe), str(out), DistInfo(device=torch.device(device)), progress=False)
    if crash_at is None:
        trainer.fit(resume=resume)
    else:
        with pytest.raises(_Crash):
            trainer.fit(resume=resume)
    return trainer


def _losses(out):
    rows = [json.loads(line) for line in open(pathlib.Path(out) / "metrics.jsonl")]
    return torch.tensor([r["loss"] for r in rows if "loss" in r], dtype=torch.float64)


def _weights(out, step=STEPS):
    return tessera.from_pretrained(str(pathlib.Path(out) / "checkpoints" / f"step-{step:08d}")).state_dict()


def _assert_run_close(out, ref, what):
    a, b = _losses(out), _losses(ref)
    assert len(a) == len(b) == STEPS, (what, len(a), len(b))
    assert_scaled_close(a[:1], b[:1], FP32_REL, f"{what}: first loss")
    torch.testing.assert_close(a, b, rtol=TRAIN_LOSS_REL, atol=0, msg=f"{what}: losses")
    wa, wb, start = _weights(out), _weights(ref), _weights(ref, 2)
    assert wa.keys() == wb.keys()
    # Adam moves each weight by about lr per step whatever the gradient's size, so a weight whose
    # gradient is rounding noise (zero in exact arithmetic) may move differently on each device:
    # per tensor, within the steps' total reach; over the model, the difference is small against
    # what steps 3-6 changed.
    for k in wb:
        assert_scaled_close(wa[k], wb[k], 1.0, f"{what}: weight {k}", scale=2 * LR * STEPS)
    diff = sum((wa[k].double() - wb[k].double()).pow(2).sum() for k in wb).sqrt().item()
    moved = sum((wb[k].double() - start[k].double()).pow(2).sum() for k in wb).sqrt().item()
    assert moved > 0 and diff <= TRAIN_WEIGHT_REL * moved, (what, diff, moved)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fmnist_root):
    tmp = tmp_path_factory.mktemp("cuda_runs")
    cpu = tmp / "cpu"
    _fit(cpu, fmnist_root, "cpu")
    dev = tmp / "device"
    trainer = _fit(dev, fmnist_root, DEVICE)
    return {"tmp": tmp, "root": fmnist_root, "cpu": cpu, "device": dev, "trainer": trainer}


def test_clip_demo_recipe_on_the_device_equals_the_cpu(runs):
    trainer = runs["trainer"]
    assert all(p.device.type == torch.device(DEVICE).type for p in trainer.model.parameters())
    # The trainer's optimizer is PyTorch's fused AdamW (one kernel for all parameters), its state
    # on the device with the parameters.
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.defaults["fused"] is True
    states = [s for s in trainer.optimizer.state.values() if s]
    assert states and all(s["exp_avg"].device.type == torch.device(DEVICE).type for s in states)
    _assert_run_close(runs["device"], runs["cpu"], "device vs CPU")


def test_checkpoint_moves_between_the_device_and_the_cpu(runs):
    """Steps 1-2 on the device, 3-4 on the CPU (from the device's checkpoint), 5-6 on the device
    again (from the CPU's checkpoint): the run ends where the uninterrupted device run ends."""
    out = runs["tmp"] / "moved"
    _fit(out, runs["root"], DEVICE, crash_at=3)
    assert sorted(os.listdir(out / "checkpoints")) == ["step-00000002"]
    _fit(out, runs["root"], "cpu", crash_at=5, resume=True)
    assert sorted(os.listdir(out / "checkpoints")) == ["step-00000002", "step-00000004"]
    _fit(out, runs["root"], DEVICE, resume=True)
    _assert_run_close(out, runs["device"], "device -> CPU -> device")


def test_stepping_inside_backward_on_the_device(runs):
    """optim.in_backward on the device: the run stepping after backward (both unclipped), with the
    optimizer state on the device, and an allocator peak no higher (each gradient freed in backward)."""
    peaks = {}
    for name, extra in (("after", []), ("inside", ["optim.in_backward=true"])):
        if not CPU_MODE:
            # The peak above what is held before the run: the previous run's trainer (model and
            # optimizer state, ~17 MB here) is freed first, or it counts against the second run.
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            held = torch.cuda.memory_allocated()
        trainer = _fit(runs["tmp"] / name, runs["root"], DEVICE, overrides=["optim.grad_clip=0", *extra])
        peaks[name] = 0 if CPU_MODE else torch.cuda.max_memory_allocated() - held
        states = [s for s in trainer.optimizer.state.values() if s]
        assert states and all(s["exp_avg"].device.type == torch.device(DEVICE).type for s in states)
        del trainer, states
    _assert_run_close(runs["tmp"] / "inside", runs["tmp"] / "after", "in_backward vs after backward")
    assert peaks["inside"] <= peaks["after"], peaks


def test_data_loader_pins_batches_when_asked(fmnist_root):
    from tessera.data import DataLoader, FashionMNIST, clip_transform

    ds = FashionMNIST(fmnist_root)
    batches = {}
    for pin in (True, False):
        loader = DataLoader(ds, batch_size=8, num_workers=1, transform=clip_transform(28), pin_memory=pin)
        batches[pin] = next(iter(loader))
        loader.stop()
    # Page-locked memory needs CUDA: asked for and CUDA present, the batches are pinned.
    assert batches[True]["pixel_values"].is_pinned() == torch.cuda.is_available()
    assert not batches[False]["pixel_values"].is_pinned()
    assert torch.equal(batches[True]["pixel_values"], batches[False]["pixel_values"])
    moved = batches[True]["pixel_values"].to(DEVICE, non_blocking=True)
    if moved.device.type == "cuda":
        torch.cuda.synchronize()
    assert torch.equal(moved.cpu(), batches[False]["pixel_values"])


def _env():
    # NVIDIA_TF32_OVERRIDE=0: no TF32 in cuBLAS or cuDNN (as _exact_fp32 does in this process),
    # so the subprocess's fp32 is the in-process runs' fp32.
    env = {**os.environ, "OMP_NUM_THREADS": "2", "NVIDIA_TF32_OVERRIDE": "0"}
    if CPU_MODE:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU stands in for the device: Gloo instead of NCCL
    return env


def _torchrun(*args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *args]
    run = subprocess.run(cmd, env=_env(), timeout=timeout, capture_output=True, text=True, cwd=str(ROOT))
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def test_torchrun_one_rank_with_fsdp2_trains_like_one_process(runs):
    """`torchrun --nproc_per_node 1 -m tessera.train RECIPE --set train.strategy=fsdp2`: with one
    rank the trainer runs its single-process path (Wrapped: strategy applies when world_size > 1),
    so its losses are the single process's."""
    out = runs["tmp"] / "torchrun_fsdp2"
    _torchrun("-m", "tessera.train", str(DEMO), "--out", str(out), "--quiet",
              *[a for o in [*SHORT, f"data.root={runs['root']}", "train.strategy=fsdp2"] for a in ("--set", o)])
    _assert_run_close(out, runs["device"], "torchrun 1 rank, fsdp2")


FSDP2_WORKER = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from safetensors.torch import load_file
    import tessera
    from tessera.train.distributed import DistInfo, init_distributed, shutdown_distributed
    from tessera.train.strategy import Wrapped

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    fixture, out = sys.argv[1], sys.argv[2]
    info = init_distributed()
    if not dist.is_initialized():  # one rank: torchrun's environment, joined by hand
        dist.init_process_group(backend="nccl" if info.device.type == "cuda" else "gloo")
    io = load_file(fixture + "/io.safetensors")
    x = {k: io[k].to(info.device) for k in ("input_ids", "pixel_values", "attention_mask")}
    ref = tessera.from_pretrained(fixture).to(info.device)
    model = tessera.from_pretrained(fixture).to(info.device)
    # The trainer's own FSDP2 wrapping (fully_shard per layer and at the root), which it applies
    # when world_size > 1, here over a one-rank process group.
    wrapped = Wrapped(model, DistInfo(0, 1, 0, info.device), "fsdp2")
    wrapped.strategy = "fsdp2"
    wrapped.module = wrapped._fsdp2("fp32", False, False)
    losses = []
    for m, w in ((ref, ref), (wrapped.module, model)):
        opt = torch.optim.AdamW(w.parameters(), lr=1e-3, fused=True)
        step = []
        for _ in range(3):
            loss = m(**x, return_loss=True).loss
            loss.backward()
            if w is model:
                wrapped.finish_gradients()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step.append(loss.item())
        losses.append(step)
    sharded = sum(type(p).__name__ == "DTensor" for p in model.parameters())
    diff = max((a.full_tensor() if hasattr(a, "full_tensor") else a).sub(b).abs().max().item()
               for a, b in zip(model.parameters(), ref.parameters()))
    json.dump({"backend": dist.get_backend(), "device": info.device.type, "losses": losses,
               "sharded": sharded, "params": len(list(model.parameters())), "max_weight_diff": diff}, open(out, "w"))
    shutdown_distributed()
""")


def test_fsdp2_one_rank_over_nccl(fixture_dir, tmp_path):
    """FSDP2 (the trainer's wrapping) over a one-rank NCCL process group (Gloo in CPU mode):
    three AdamW steps equal the unwrapped model's."""
    script, result = tmp_path / "worker.py", tmp_path / "result.json"
    script.write_text(FSDP2_WORKER)
    _torchrun(str(script), str(fixture_dir("clip")), str(result))
    r = json.loads(result.read_text())
    assert r["backend"] == ("gloo" if CPU_MODE else "nccl")
    assert r["device"] == torch.device(DEVICE).type
    assert r["sharded"] > 0 and r["sharded"] >= r["params"] - 1  # all but the replicated logit_scale
    ours, ref = torch.tensor(r["losses"][1]), torch.tensor(r["losses"][0])
    assert_scaled_close(ours, ref, FP32_REL, "fsdp2 losses")
    # Weights whose gradient is rounding noise move by Adam's normalised noise, up to ~lr a step
    # (on CUDA, atomics make that noise differ run to run): within one step of lr 1e-3.
    assert r["max_weight_diff"] <= 1e-3, r
