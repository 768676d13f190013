"""Every model family and the trainer on a CUDA device against the CPU (issue 18).

Models (tiny: the Hugging Face fixtures' configurations in ../shared/fixtures/hf, or small
configs where a family has none): forward outputs and every parameter's gradient on the device
equal the CPU's in fp32, within 1e-4 of the output's scale (FP32_REL); under bf16 autocast on the
device the outputs stay within 5e-2 of the device's own fp32 outputs' scale (BF16_REL) and the
gradients point the same way (cosine >= BF16_GRAD_COS); greedy generation (LLaMA, LLaVA, BLIP-2)
gives the CPU's ids token for token.

Trainer (the CLIP demo recipe, recipes/fashion_mnist_clip.yaml, shortened by overrides): the
device's losses equal the CPU's (the first within 1e-4, the rest within TRAIN_LOSS_REL, since
AdamW amplifies rounding differences step after step), with PyTorch's fused AdamW and its state
on the device; a checkpoint written on the device resumes on the CPU and one written on the CPU
resumes on the device, ending where an uninterrupted run ends; the data loader hands out pinned
batches exactly when asked and CUDA is present; FSDP2 with one rank (NCCL) trains.

Needs a GPU; without one every test is skipped. TESSERA_TEST_DEVICE=cpu runs the same code with
the CPU standing in for the device (CPU against CPU, NCCL replaced by Gloo), so the tests and
their assertions can be checked on a machine without a GPU:

    TESSERA_TEST_DEVICE=cpu pytest -m cuda tests/python/test_cuda.py
"""
import gc
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import pytest
import torch
from safetensors.torch import load_file

import tessera

sys.path.insert(0, os.path.dirname(__file__))
from _recipes import FMNIST  # noqa: E402

DEVICE = os.environ.get("TESSERA_TEST_DEVICE", "cuda")
CPU_MODE = DEVICE == "cpu"
ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE not in ("cuda", "cpu"), reason="TESSERA_TEST_DEVICE must be cuda or cpu"),
              pytest.mark.skipif(not CPU_MODE and not torch.cuda.is_available(),
                                 reason="needs a CUDA device (TESSERA_TEST_DEVICE=cpu runs these tests on the CPU)")]

FP32_REL = 1e-4        # device vs CPU, fp32: max |diff| <= FP32_REL x max |CPU value|
GRAD_FLOOR = 1e-2      # a gradient's scale is at least GRAD_FLOOR x the largest gradient of the model
BF16_REL = 5e-2        # bf16 autocast vs fp32 (same device): max |diff| <= BF16_REL x max |fp32 value|
BF16_GRAD_COS = 0.98   # cosine between the bf16 and fp32 gradients (all parameters as one vector)
TRAIN_LOSS_REL = 1e-3  # trainer losses, device vs CPU, after a few AdamW steps
TRAIN_WEIGHT_REL = 1e-2  # final weights' difference, against the norm of the last 4 steps' update


@pytest.fixture(autouse=True, scope="module")
def _exact_fp32():
    """No TF32 in matmuls or convolutions (patch embeddings): fp32 on the device means fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --------------------------------------------------------------------------- comparisons

def max_diff_within(got: torch.Tensor, want: torch.Tensor, rel: float, scale: Optional[float] = None) -> tuple:
    """(ok, max |diff|, allowed): |got - want| <= rel x scale, scale defaulting to max |want|."""
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = want.abs().max().item() if scale is None else scale
    err = (got - want).abs().max().item() if want.numel() else 0.0
    allowed = rel * scale
    return err <= allowed and torch.isfinite(got).all().item(), err, allowed


def assert_scaled_close(got, want, rel, what, scale=None):
    ok, err, allowed = max_diff_within(got, want, rel, scale)
    assert ok, f"{what}: max |diff| {err:.3g} > allowed {allowed:.3g} ({rel:g} x scale)"


def assert_grads_close(got: Dict[str, torch.Tensor], want: Dict[str, torch.Tensor], rel: float):
    assert got.keys() == want.keys()
    largest = max(g.abs().max().item() for g in want.values())
    assert largest > 0, "no gradient reached the parameters"
    for name, g in want.items():
        # Relative to the gradient's own scale, with a floor: some gradients are zero in exact
        # arithmetic (an attention key's bias) and hold only rounding noise on each device.
        scale = max(g.abs().max().item(), GRAD_FLOOR * largest)
        assert_scaled_close(got[name], g, rel, f"grad {name}", scale)


def test_comparisons_catch_a_difference():
    """The helpers fail on a difference just above the tolerance, so CPU-against-CPU passes mean
    the assertions ran, not that they cannot fail."""
    want = torch.randn(5, 7)
    got = want.clone()
    assert max_diff_within(got, want, FP32_REL)[0]
    got[2, 3] += 2 * FP32_REL * want.abs().max()
    assert not max_diff_within(got, want, FP32_REL)[0]
    assert not max_diff_within(want * float("nan"), want, FP32_REL)[0]
    with pytest.raises(AssertionError, match="grad b"):
        assert_grads_close({"a": want, "b": want * 0 + 1e-3}, {"a": want, "b": want * 0}, FP32_REL)


# --------------------------------------------------------------------------- model families

@dataclass
class Case:
    build: Callable[[Callable], torch.nn.Module]          # fixture_dir -> model (CPU, fp32)
    inputs: Callable[[Callable], Dict[str, torch.Tensor]]  # fixture_dir -> inputs (CPU)
    run: Callable[[torch.nn.Module, Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]
    generate: Optional[Callable] = None                   # (model, inputs) -> ids
    exact: tuple = ()                                     # outputs that must be equal (ids, masks)


def _io(name):
    return lambda fixture_dir: load_file(str(fixture_dir(name) / "io.safetensors"))


def _pretrained(name, cls=None):
    def build(fixture_dir):
        load = cls.from_pretrained if cls is not None else tessera.from_pretrained
        return load(str(fixture_dir(name)))
    return build


def _clip_run(m, x):
    o = m(input_ids=x["input_ids"], pixel_values=x["pixel_values"], attention_mask=x["attention_mask"],
          return_loss=True)
    return {"loss": o.loss, "image_embeds": o.image_embeds, "text_embeds": o.text_embeds,
            "logits_per_image": o.logits_per_image}


def _vqkd_inputs(_):
    g = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g), "target": torch.randn(2, 16, 12, generator=g)}


VQKD_CONFIG = dict(encoder_config=dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=64),
                   codebook_size=16, codebook_dim=8, teacher_dim=12,
                   kmeans_init=False)  # k-means at the first forward draws from the global RNG: the copies would differ


def _vqkd_run(m, x):
    o = m(x["pixel_values"], target=x["target"])
    return {"loss": o.loss, "reconstruction": o.reconstruction, "indices": o.indices}


def _sugar_build(fixture_dir):
    from tessera.models.sugar import RetrievalProjector, SugarModel

    llava = tessera.from_pretrained(str(fixture_dir("llava")))
    torch.manual_seed(0)
    return SugarModel(llava, RetrievalProjector(llava.config["text_config"]["hidden_size"], hidden=32, dim=16))


def _sugar_inputs(fixture_dir):
    x = dict(_io("llava")(fixture_dir))
    ids = x["input_ids"]
    g = torch.Generator().manual_seed(0)
    x["labels"] = ids.masked_fill(ids == 990, -100)
    x["point_weights"] = torch.rand(3, *ids.shape, generator=g)  # 3 points pooled over the sequence
    return x


def _sugar_run(m, x):
    o = m(x["input_ids"], pixel_values=x["pixel_values"], labels=x["labels"], point_weights=x["point_weights"])
    return {"logits": o["logits"], "loss_sum": o["loss_sum"], "r": o["r"]}


CASES = {
    "clip": Case(_pretrained("clip"), _io("clip"), _clip_run),
    "clip_vision": Case(_pretrained("clip", tessera.CLIPVisionModel), _io("clip"),
                        lambda m, x: {k: getattr(m(x["pixel_values"]), k) for k in ("last_hidden_state",
                                                                                    "pooler_output")}),
    "mae": Case(_pretrained("mae"), _io("mae"),
                lambda m, x: {k: getattr(m(x["pixel_values"], noise=x["noise"]), k)
                              for k in ("loss", "logits", "mask", "ids_restore")}, exact=("mask", "ids_restore")),
    "beit": Case(_pretrained("beit"), _io("beit"),
                 lambda m, x: {"logits": m(x["pixel_values"], bool_masked_pos=x["bool_masked_pos"]).logits}),
    "vqkd": Case(lambda _: tessera.VQKD(VQKD_CONFIG), _vqkd_inputs, _vqkd_run, exact=("indices",)),
    "llama": Case(_pretrained("llama"), _io("llama"),
                  lambda m, x: {k: getattr(m(x["input_ids"], labels=x["input_ids"]), k) for k in ("logits", "loss")},
                  generate=lambda m, x: m.generate(x["input_ids"], max_new_tokens=8)),
    "llava": Case(_pretrained("llava"), _io("llava"),
                  lambda m, x: {"logits": m(x["input_ids"], pixel_values=x["pixel_values"]).logits},
                  generate=lambda m, x: m.generate(x["input_ids"], pixel_values=x["pixel_values"], max_new_tokens=6)),
    "qformer": Case(_pretrained("qformer"), _io("qformer"),
                    lambda m, x: {"last_hidden_state": m(x["query_embeds"],
                                                         encoder_hidden_states=x["encoder_hidden_states"]
                                                         ).last_hidden_state}),
    "qformer_text": Case(_pretrained("qformer_text"), _io("qformer_text"),
                         lambda m, x: {"last_hidden_state": m(x["query_embeds"],
                                                              encoder_hidden_states=x["encoder_hidden_states"]
                                                              ).last_hidden_state}),
    "blip2": Case(_pretrained("blip2"), _io("blip2"),
                  lambda m, x: {"logits": m(x["pixel_values"], x["input_ids"]).logits},
                  generate=lambda m, x: m.generate(x["pixel_values"], x["input_ids"], max_new_tokens=6)),
    "blip2_itr": Case(_pretrained("blip2_itr"), _io("blip2_itr"),
                      lambda m, x: {"itc": m(x["pixel_values"], x["input_ids"], x["attention_mask"]).logits_per_image,
                                    "itm": m(x["pixel_values"], x["input_ids"], x["attention_mask"],
                                             use_image_text_matching_head=True).logits_per_image}),
    "sugar": Case(_sugar_build, _sugar_inputs, _sugar_run),
}


def _to(x: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in x.items()}


def _pair(case: Case, fixture_dir):
    """The model on the CPU and an identical copy on the device, both in eval mode (no dropout,
    no drop-path, VQ-KD's codebook frozen: the two runs must compute the same function)."""
    cpu = case.build(fixture_dir).eval()
    dev = case.build(fixture_dir)
    dev.load_state_dict(cpu.state_dict())
    dev = dev.to(DEVICE).eval()
    if not CPU_MODE:
        assert all(p.device.type == "cuda" for p in dev.parameters())
    return cpu, dev


def _objective(outputs: Dict[str, torch.Tensor], exact) -> torch.Tensor:
    """A scalar that every float output feeds, with fixed random weights (the same on both devices)."""
    total = 0
    for i, (name, o) in enumerate(sorted(outputs.items())):
        if name in exact or not o.is_floating_point():
            continue
        w = torch.randn(o.shape, generator=torch.Generator().manual_seed(i)).to(o.device)
        total = total + (o.float() * w).mean()
    return total


def _forward_backward(case, model, x, autocast: bool = False):
    model.zero_grad(set_to_none=True)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16, enabled=autocast):
        out = case.run(model, x)
        _objective(out, case.exact).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads


@pytest.mark.parametrize("family", list(CASES))
def test_forward_and_gradients_equal_the_cpu(family, fixture_dir):
    case = CASES[family]
    cpu, dev = _pair(case, fixture_dir)
    x = case.inputs(fixture_dir)
    want, want_grads = _forward_backward(case, cpu, x)
    got, got_grads = _forward_backward(case, dev, _to(x, DEVICE))
    assert got.keys() == want.keys()
    for name, w in want.items():
        assert got[name].device.type == torch.device(DEVICE).type, name
        if name in case.exact or not w.is_floating_point():
            assert torch.equal(got[name].cpu(), w), name
        else:
            assert_scaled_close(got[name], w, FP32_REL, name)
    trainable = {n for n, p in cpu.named_parameters() if p.requires_grad}
    assert set(want_grads) and set(want_grads) <= trainable
    assert_grads_close(got_grads, want_grads, FP32_REL)


@pytest.mark.parametrize("family", list(CASES))
def test_bf16_autocast_stays_close_to_fp32(family, fixture_dir):
    case = CASES[family]
    _, dev = _pair(case, fixture_dir)
    x = _to(case.inputs(fixture_dir), DEVICE)
    want, want_grads = _forward_backward(case, dev, x)
    got, got_grads = _forward_backward(case, dev, x, autocast=True)
    for name, w in want.items():
        if name in case.exact or not w.is_floating_point():
            continue  # ids and masks may flip where bf16 moves a near-tie
        assert_scaled_close(got[name], w, BF16_REL, f"bf16 {name}")
    assert got_grads.keys() == want_grads.keys()
    a = torch.cat([got_grads[n].float().flatten() for n in sorted(want_grads)])
    b = torch.cat([want_grads[n].float().flatten() for n in sorted(want_grads)])
    assert torch.isfinite(a).all()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    assert cos >= BF16_GRAD_COS, f"bf16 gradients: cosine {cos:.4f} with the fp32 ones"


@pytest.mark.parametrize("family", [f for f, c in CASES.items() if c.generate is not None])
def test_greedy_generation_equals_the_cpu(family, fixture_dir):
    case = CASES[family]
    cpu, dev = _pair(case, fixture_dir)
    x = case.inputs(fixture_dir)
    with torch.no_grad():
        want = case.generate(cpu, x)
        got = case.generate(dev, _to(x, DEVICE))
    assert got.device.type == torch.device(DEVICE).type
    assert torch.equal(got.cpu(), want)
    # and both are transformers' ids (the fixture; LLaMA's was generated from the first prompt)
    assert torch.equal(want[:len(x["greedy"])], x["greedy"])


@pytest.mark.skipif(CPU_MODE, reason="a CUDA GEMM's output dtype")
def test_decoding_logits_of_a_bf16_head_are_fp32():
    """The head of a bf16 model writes fp32 logits while decoding on CUDA (one GEMM accumulating
    and writing fp32), as the CPU kernels do, so greedy picks are not decided by bf16 rounding;
    it stands aside for autograd and autocast, where at::linear's dtype rules hold."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(3, 1, 96, device=DEVICE, generator=g).bfloat16()
    w = torch.randn(1000, 96, device=DEVICE, generator=g).bfloat16()
    b = torch.randn(1000, device=DEVICE, generator=g).bfloat16()
    y = tessera._C.ops.cuda_linear_fp32_out(x, w, b)
    assert y.dtype == torch.float32 and y.shape == (3, 1, 1000)
    want = x.double() @ w.double().T + b.double()
    assert (y.double() - want).abs().max() <= 1e-4 * want.abs().max()  # bf16 output would be ~4e-3 off
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert tessera._C.ops.cuda_linear_fp32_out(x, w) is None
    assert tessera._C.ops.cuda_linear_fp32_out(x, w.requires_grad_()) is None
    assert tessera._C.ops.cuda_linear_fp32_out(x.cpu(), w.detach().cpu()) is None


@pytest.mark.skipif(CPU_MODE, reason="which CUDA attention backend a decoding step takes")
def test_decoding_steps_leave_cudnn_attention_out():
    """cuDNN's attention builds a plan per new key length, so every step of a generation paid one
    (48 ms/token on an H200 where the steps took 13): steps leave it out, the prefill may use it,
    and the user's switch is as it was afterwards."""
    from torch.profiler import ProfilerActivity, profile

    cfg = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    model = tessera.LlamaForCausalLM(cfg).to(DEVICE, torch.bfloat16).eval()
    ids = torch.randint(3, 256, (1, 5), device=DEVICE)
    layers, new = cfg["num_hidden_layers"], 6

    def cudnn_calls(avoid: bool) -> int:
        tessera._C.ops.set_step_attention_avoids_cudnn(avoid)
        try:
            with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
                out = model.generate(ids, max_new_tokens=new, eos_token_id=[])
        finally:
            tessera._C.ops.set_step_attention_avoids_cudnn(True)
        assert out.shape == (1, 5 + new)
        return sum(e.count for e in prof.key_averages() if "cudnn_attention" in e.key)

    assert torch.backends.cuda.cudnn_sdp_enabled()
    assert cudnn_calls(True) <= layers  # the prefill's, if SDPA picks cuDNN for it
    assert torch.backends.cuda.cudnn_sdp_enabled(), "the user's cuDNN switch was left off"
    # Where SDPA prefers cuDNN (Hopper and later), the steps took it before: the count can tell.
    without_rule = cudnn_calls(False)
    assert without_rule == 0 or without_rule > layers, without_rule


# --------------------------------------------------------------------------- the trainer

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


def test_a_model_built_under_the_device_lives_there(fixture_dir):
    """`with torch.device(...)`: built on the CPU (the same draws as a CPU build) and moved there."""
    config = tessera.from_pretrained(str(fixture_dir("llama"))).config
    torch.manual_seed(0)
    want = tessera.LlamaForCausalLM(config)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = tessera.LlamaForCausalLM(config)
    for (name, p), q in zip(model.named_parameters(), want.parameters()):
        assert p.device.type == DEVICE and torch.equal(p.cpu(), q), name
