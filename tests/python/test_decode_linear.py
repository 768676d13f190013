"""Decoding with bf16 weights (csrc/tessera/ops/decode_linear.cpp): the kernel against the plain
formula in fp32 over the bf16 weights, the layers that call it by themselves (only without
autograd, at most 8 rows), and a bf16 LLaMA's greedy decoding against its own full forward."""
import os
import subprocess
import sys

import pytest
import torch

import tessera
import tessera.ops
from _linear_reference import assert_fp32_sum, reference


# bodies, tails, odd row counts; rows under 4 KiB of bf16, 4-8 KiB (one weight row at a time for one row
# of x, several for more) and over 8 KiB (several for any x)
SHAPES = [(1, 3), (15, 33), (16, 16), (17, 5), (64, 9), (300, 70), (1000, 7), (2900, 11), (4100, 9)]


def check_formula(rows, inner, out):
    g = torch.Generator().manual_seed(rows * 1000 + inner)
    w = torch.randn(out, inner, generator=g).bfloat16()
    b = torch.randn(out, generator=g)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(rows, inner, generator=g).to(dtype)
        y = tessera.ops.decode_linear(x, w, b)
        assert y.dtype == dtype and y.shape == (rows, out)
        if dtype == torch.float32:
            assert_fp32_sum(y, x, w, b)
        else:  # the fp32 result rounded once to bf16
            torch.testing.assert_close(y, reference(x, w, b).to(dtype), rtol=8e-3, atol=1e-5)
        assert_fp32_sum(tessera.ops.decode_linear(x, w, None, torch.float32), x, w)
    w32 = torch.randn(out, inner, generator=g)  # fp32 weights: another kernel, the same sum
    x = torch.randn(rows, inner, generator=g)
    assert_fp32_sum(tessera.ops.decode_linear(x, w32, b), x, w32, b)
    q, scale = tessera._C.ops.quantize_int8_rows(w32)  # int8: the sum over the dequantized weight
    assert_fp32_sum(tessera._C.ops.decode_linear_int8(x, q, scale, b), x, q.float() * scale[:, None], b)


@pytest.mark.parametrize("rows", range(1, 9))
@pytest.mark.parametrize("inner, out", SHAPES)
def test_the_kernel_is_the_formula(rows, inner, out):
    check_formula(rows, inner, out)


ISAS = ["avx512", "avx2", "portable"]


@pytest.mark.parametrize("isa", ISAS[1:])
def test_every_lower_instruction_set_is_the_formula_too(isa):
    """The CPU's best kernel runs above; each lower one runs here in a process that asks for it."""
    best = tessera._C.ops.decode_linear_isa()
    if ISAS.index(isa) <= ISAS.index(best):
        pytest.skip(f"this CPU's best is {best}")
    code = ("import test_decode_linear as t, tessera\n"
            f"assert tessera._C.ops.decode_linear_isa() == {isa!r}\n"
            "for r in range(1, 9):\n    for s in t.SHAPES: t.check_formula(r, *s)\n")
    env = dict(os.environ, TESSERA_DECODE_ISA=isa)
    run = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__), env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_an_unknown_instruction_set_is_refused_by_name():
    env = dict(os.environ, TESSERA_DECODE_ISA="sse9")
    code = "import tessera, torch; tessera.ops.decode_linear(torch.ones(1, 4), torch.ones(2, 4).bfloat16())"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "TESSERA_DECODE_ISA: expected avx512, avx2 or portable, got 'sse9'" in run.stderr


def test_leading_dimensions_are_kept():
    w = torch.randn(7, 12).bfloat16()
    x = torch.randn(2, 3, 1, 12)
    y = tessera.ops.decode_linear(x, w)
    assert y.shape == (2, 3, 1, 7)
    assert_fp32_sum(y.reshape(6, 7), x.reshape(6, 12), w)


def test_what_it_does_not_serve_is_refused_by_name():
    w = torch.randn(4, 8).bfloat16()
    with pytest.raises(ValueError, match=r"at most 8 rows"):
        tessera.ops.decode_linear(torch.randn(9, 8), w)
    with pytest.raises(ValueError, match=r"bf16, or fp32 with an fp32 x"):
        tessera.ops.decode_linear(torch.randn(1, 8), w.double())
    with pytest.raises(ValueError, match=r"bf16, or fp32 with an fp32 x"):
        tessera.ops.decode_linear(torch.randn(1, 8).bfloat16(), w.float())
    with pytest.raises(ValueError, match=r"without autograd"):
        tessera.ops.decode_linear(torch.randn(1, 8, requires_grad=True), w)


def tiny_llama(dtype):
    torch.manual_seed(0)
    config = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64)
    return tessera.LlamaForCausalLM(config).eval().to(dtype)


def test_bf16_greedy_decoding_follows_its_own_forward():
    """Each greedy token of a bf16 model (decode kernel, fp32 logits) is the argmax of the full
    forward over the prefix (LibTorch's bf16 linear), wherever that argmax is clear."""
    model = tiny_llama(torch.bfloat16)
    ids = torch.randint(3, 300, (2, 5), generator=torch.Generator().manual_seed(1))
    out = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=[])
    checked = 0
    with torch.no_grad():
        for t in range(ids.shape[1], out.shape[1]):
            for row in range(out.shape[0]):  # one row: more than 8 rows would leave the kernel anyway
                logits = model(out[row:row + 1, :t]).logits[0, -1].float()
                top2 = logits.topk(2).values
                if top2[0] - top2[1] > 0.05 * top2.abs().max():
                    assert int(logits.argmax()) == int(out[row, t]), (row, t)
                    checked += 1
    assert checked >= 12


def test_training_a_bf16_layer_keeps_autograd():
    model = tiny_llama(torch.bfloat16).train()
    ids = torch.randint(3, 300, (1, 4))
    out = model(ids, labels=ids)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_autocast_keeps_the_layers_on_its_own_dtypes():
    """Under autocast at::linear computes in the autocast dtype; the kernels would not, so they
    stand aside and a decoding step's layers give what autocast gives."""
    w, x = torch.randn(6, 32), torch.randn(1, 32)
    assert tessera._C.ops.decode_linear_applies(x, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not tessera._C.ops.decode_linear_applies(x, w)
    model = tiny_llama(torch.float32)
    ids = torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(ids).logits.dtype == torch.bfloat16
        assert model.generate(ids, max_new_tokens=3, do_sample=False, eos_token_id=[]).shape == (1, 8)
