"""Every model family on a CUDA device against the CPU (issue 18); the trainer's half is
test_cuda_trainer.py, what both share _device.py.

Models (tiny: the Hugging Face fixtures' configurations in ../shared/fixtures/hf, or small
configs where a family has none): forward outputs and every parameter's gradient on the device
equal the CPU's in fp32, within 1e-4 of the output's scale (FP32_REL); under bf16 autocast on the
device the outputs stay within 5e-2 of the device's own fp32 outputs' scale (BF16_REL) and the
gradients point the same way (cosine >= BF16_GRAD_COS); greedy generation (LLaMA, LLaVA, BLIP-2)
gives the CPU's ids token for token; a model built under `with torch.device(...)` lives there.

Needs a GPU; without one every test is skipped. TESSERA_TEST_DEVICE=cpu runs the same code with
the CPU standing in for the device, so the tests and their assertions can be checked on a machine
without a GPU:

    TESSERA_TEST_DEVICE=cpu pytest -m cuda tests/python/test_cuda.py tests/python/test_cuda_trainer.py
"""
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import pytest
import torch
from safetensors.torch import load_file

import tessera

sys.path.insert(0, os.path.dirname(__file__))
from _device import (BF16_GRAD_COS, BF16_REL, CPU_MODE, CUDA_MARKS, DEVICE, FP32_REL,  # noqa: E402
                     assert_grads_close, assert_scaled_close, exact_fp32, max_diff_within)  # noqa: F401

pytestmark = CUDA_MARKS


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
