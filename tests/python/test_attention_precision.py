"""Reduced-precision attention on a CPU computes in fp32 where ATen's bf16/fp16 kernels are the slow
ones (csrc/tessera/nn/attention_precision.h). References: SDPA on fp32 copies rounded once (what the
rule promises, bit for bit), a float64 formula (the rule is at least as exact as the bf16 kernel),
and the bf16 kernel itself wherever the rule does not apply.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tessera
from _clip_reference import one_thread, pixel_batch, text_batch, tiny_config

CAPS = dict.fromkeys(tessera._C.ops.cpu_flags(), True)  # what the C++ rule reads (ATen)
ops = tessera.ops
pytestmark = pytest.mark.skipif(CAPS.get("amx_bf16", False), reason="bf16 has a matrix unit here: rule off")


def _qkv(b=2, h=4, hkv=4, q_len=9, k_len=9, d=16, dtype=torch.bfloat16, grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, q_len, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, k_len, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, k_len, d, generator=g).to(dtype)
    return [t.requires_grad_(grad) for t in (q, k, v)]


def _grads(fn, q, k, v, g):
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves)
    out.backward(g)
    return out.detach(), [t.grad for t in leaves]


def _fp32_rounded(mask=None, causal=False, gqa=False):
    def fn(q, k, v):
        m = None if mask is None else mask.float()
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=m, is_causal=causal,
                                              enable_gqa=gqa).to(q.dtype)
    return fn


def _tessera(mask=None, causal=False):
    return lambda q, k, v: ops.attention(q, k, v, mask, causal)


@pytest.mark.parametrize("case", ["plain", "causal", "mask", "gqa"])
def test_training_call_is_fp32_sdpa_rounded_once(case):
    hkv = 2 if case == "gqa" else 4
    q, k, v = _qkv(hkv=hkv)
    mask = None
    if case == "mask":
        mask = torch.zeros(2, 1, 9, 9, dtype=torch.bfloat16)
        mask[1, ..., 6:] = float("-inf")
    causal = case == "causal"
    g = torch.randn(2, 4, 9, 16).to(torch.bfloat16)
    assert ops.cpu_attention_in_fp32.applies(q, k, v)
    out, grads = _grads(_tessera(mask, causal), q, k, v, g)
    ref, ref_grads = _grads(_fp32_rounded(mask, causal, gqa=hkv != 4), q, k, v, g)
    assert out.dtype == torch.bfloat16 and all(t.dtype == torch.bfloat16 for t in grads)
    assert torch.equal(out, ref)
    for name, a, b in zip("qkv", grads, ref_grads):
        assert torch.equal(a, b), f"d{name}"


def test_at_least_as_exact_as_the_bf16_kernel():
    """Against float64 on the same bf16 inputs, outputs and every gradient: the rule's error is at
    most the bf16 kernel's (which is the rule switched off)."""
    q, k, v = _qkv(b=4, h=4, q_len=50, k_len=50, d=64, seed=1)
    g = torch.randn(4, 4, 50, 64).to(torch.bfloat16)
    exact, exact_grads = _grads(lambda *t: F.scaled_dot_product_attention(*(x.double() for x in t)), q, k, v,
                                g.double())
    fast, fast_grads = _grads(_tessera(), q, k, v, g)
    with ops.cpu_attention_in_fp32(False):
        assert not ops.cpu_attention_in_fp32.applies(q, k, v)
        slow, slow_grads = _grads(_tessera(), q, k, v, g)
    err = lambda a, b: (a.double() - b).abs().max().item()  # noqa: E731
    assert err(fast, exact) <= err(slow, exact)
    for name, a, b, e in zip("qkv", fast_grads, slow_grads, exact_grads):
        assert err(a, e) <= err(b, e), f"d{name}: fp32 path {err(a, e):.3g} vs bf16 kernel {err(b, e):.3g}"


def test_the_switch_and_where_the_rule_stops():
    q, k, v = _qkv()
    g = torch.randn(2, 4, 9, 16).to(torch.bfloat16)
    bf16_kernel = lambda q, k, v: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    with ops.cpu_attention_in_fp32(False):
        assert not ops.cpu_attention_in_fp32.enabled()
        out, grads = _grads(_tessera(), q, k, v, g)
    ref, ref_grads = _grads(bf16_kernel, q, k, v, g)
    assert ops.cpu_attention_in_fp32.enabled(), "the context manager restores the setting"
    assert torch.equal(out, ref) and all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    # Inference keeps the bf16 kernel (faster there); so do long key sequences, dropout and fp32.
    with torch.no_grad():
        assert not ops.cpu_attention_in_fp32.applies(q, k, v)
        assert torch.equal(ops.attention(q, k, v), bf16_kernel(q, k, v))
    assert not ops.cpu_attention_in_fp32.applies(*_qkv(q_len=4, k_len=321))
    assert ops.cpu_attention_in_fp32.applies(*_qkv(q_len=4, k_len=320))
    assert not ops.cpu_attention_in_fp32.applies(q, k, v, dropout_p=0.1)
    assert not ops.cpu_attention_in_fp32.applies(*_qkv(dtype=torch.float32))
    frozen = [t.detach() for t in (q, k, v)]
    assert not ops.cpu_attention_in_fp32.applies(*frozen), "nothing to differentiate: no backward"


@pytest.mark.skipif(CAPS.get("amx_fp16", False) or CAPS.get("avx512_fp16", False), reason="native fp16 here")
def test_fp16_runs_in_fp32_at_any_length_with_or_without_grad():
    q, k, v = _qkv(q_len=3, k_len=600, dtype=torch.float16, grad=False)
    assert ops.cpu_attention_in_fp32.applies(q, k, v)
    assert torch.equal(ops.attention(q, k, v), _fp32_rounded()(q, k, v))


@pytest.mark.skipif(not (CAPS.get("amx_fp16", False) or CAPS.get("avx512_fp16", False)), reason="no native fp16")
def test_fp16_keeps_its_own_kernel_where_the_cpu_has_native_fp16():
    q, k, v = _qkv(q_len=3, k_len=600, dtype=torch.float16, grad=False)
    assert not ops.cpu_attention_in_fp32.applies(q, k, v)
    assert torch.equal(ops.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_autocast_does_not_cast_the_fp32_operands_back():
    q, k, v = _qkv()
    g = torch.randn(2, 4, 9, 16).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = _grads(_tessera(), q, k, v, g)
    ref, ref_grads = _grads(_fp32_rounded(), q, k, v, g)
    assert torch.equal(out, ref) and all(torch.equal(a, b) for a, b in zip(grads, ref_grads))


def test_checkpointed_layers_take_the_same_path_in_both_passes():
    """The reentrant checkpoint's first pass runs without grad and its recomputation with it; a rule
    keyed on grad alone would give the forward of one kernel and the gradient of another. Under
    bf16 autocast, CLIP with and without checkpointing: loss and every gradient bit-equal."""
    config = tiny_config(text=dict(num_hidden_layers=2), vision=dict(num_hidden_layers=2))
    ids, mask = text_batch(config["text_config"], batch=4, seq_len=config["text_config"]["max_position_embeddings"])
    px = pixel_batch(config["vision_config"], batch=4)
    runs = []
    state = tessera.CLIPModel(config).state_dict()
    with one_thread():
        for ckpt in (False, True):
            model = tessera.CLIPModel(config).train()
            model.load_state_dict(state)
            model.set_gradient_checkpointing(ckpt)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True).loss
            loss.backward()
            runs.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss0, grads0), (loss1, grads1) = runs
    assert torch.equal(loss0, loss1)
    assert grads0.keys() == grads1.keys()
    for name in grads0:
        assert torch.equal(grads0[name], grads1[name]), name


def test_under_autocast_the_rule_reads_autocasts_dtype():
    """A LLaMA layer's q and k leave the fp32 rotary tables in fp32 while v is bf16; autocast runs
    SDPA on all three in bf16, so the rule applies, and rounds the fp32 result to bf16."""
    q, k, v = _qkv(dtype=torch.float32)
    v = v.detach().bfloat16().requires_grad_(True)
    g = torch.randn(2, 4, 9, 16).to(torch.bfloat16)
    assert not ops.cpu_attention_in_fp32.applies(q, k, v), "mixed dtypes outside autocast: SDPA refuses them"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.cpu_attention_in_fp32.applies(q, k, v)
        out, grads = _grads(_tessera(causal=True), q, k, v, g)
        with ops.cpu_attention_in_fp32(False):
            kernel, _ = _grads(_tessera(causal=True), q, k, v, g)
    ref, ref_grads = _grads(lambda *t: _fp32_rounded(causal=True)(*t).bfloat16(), q, k, v, g)
    assert out.dtype == kernel.dtype == torch.bfloat16
    assert torch.equal(out, ref)
    assert [t.dtype for t in grads] == [torch.float32, torch.float32, torch.bfloat16]
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))


def test_rows_that_see_no_key_give_zeros_as_sdpa():
    """A boolean row without a true averaged the masked keys (SDPA gives 0); an all -inf row gave
    NaN on the decoding kernel and 0 elsewhere; causal with more queries than keys gave the rows
    before the first key an output. Each is now SDPA's zeros, and their gradients zero too."""
    F = torch.nn.functional
    torch.manual_seed(0)
    q = torch.rand(2, 2, 3, 4, requires_grad=True)
    k, v = torch.rand(2, 2, 5, 4), torch.rand(2, 2, 5, 4)
    mask = torch.rand(2, 1, 3, 5) > 0.4
    mask[0, 0, 1] = False
    out = tessera.ops.attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=0, atol=1e-6)
    assert torch.equal(out[0, :, 1], torch.zeros(2, 4))
    out.sum().backward()
    assert torch.equal(q.grad[0, :, 1], torch.zeros(2, 4))
    blocked = torch.full((2, 1, 1, 5), float("-inf"))
    one = q[:, :, :1].detach()
    torch.testing.assert_close(tessera.ops.attention(one, k, v, mask=blocked),
                               F.scaled_dot_product_attention(one, k, v, attn_mask=blocked), rtol=0, atol=0)
    q5 = torch.rand(2, 2, 5, 4)
    out = tessera.ops.attention(q5, k[:, :, :3], v[:, :, :3], causal=True)
    assert torch.equal(out[:, :, :2], torch.zeros(2, 2, 2, 4))
    sees = torch.ones(5, 3, dtype=torch.bool).tril(-2)  # aligned to the last key: row i sees keys <= i - 2
    torch.testing.assert_close(out[:, :, 2:], F.scaled_dot_product_attention(q5, k[:, :, :3], v[:, :, :3],
                                                                              attn_mask=sees)[:, :, 2:])


@pytest.mark.parametrize("dtype, fill", [(torch.float32, torch.finfo(torch.float32).min), (torch.float32, -1e9),
                                         (torch.float64, torch.finfo(torch.float32).min),
                                         (torch.float16, torch.finfo(torch.float16).min)])
def test_a_row_whose_keys_are_all_masked_averages_them_with_its_true_gradient(dtype, fill):
    """A row masked everywhere (left padding's pad rows, a user's -1e9 mask) is the mean of its
    keys' values, as transformers' eager attention computes it. torch's CPU SDPA backward gave
    each key weight 1 instead of 1/4 there; in fp16 the forward itself changed with requires_grad."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 3, 8, dtype=dtype), torch.randn(1, 2, 4, 8, dtype=dtype), torch.randn(1, 2, 4, 8, dtype=dtype)
    mask = torch.zeros(1, 1, 3, 4, dtype=dtype)
    mask[..., 0, :] = fill  # row 0 sees no key
    with torch.no_grad():
        plain = tessera.ops.attention(q, k, v, mask=mask)
    v.requires_grad_(True)
    out = tessera.ops.attention(q, k, v, mask=mask)
    assert torch.equal(out[:, :, 0], plain[:, :, 0])  # the same with or without gradients
    torch.testing.assert_close(out[:, :, 0], v.mean(2).detach(), atol=1e-3 if dtype == torch.float16 else 1e-6,
                               rtol=0)
    out[:, :, 0].sum().backward()
    torch.testing.assert_close(v.grad, torch.full_like(v, 0.25))  # 1/n per key, not 1


def test_fp16_padding_stays_masked_when_scores_pass_fp16s_range(fixture_dir, tmp_path):
    """fp16 attention runs on fp32 copies on the CPU, and the mask went up as -65504: scores past
    65504 (q/k x300 here) outweighed it, and a padded token's id changed the real tokens' outputs
    by 1.7 where transformers' change nothing."""
    import shutil

    from safetensors.torch import load_file, save_file

    transformers = pytest.importorskip("transformers")
    source = fixture_dir("clip")
    state = {k: v * 300 if ("q_proj" in k or "k_proj" in k) else v
             for k, v in load_file(str(source / "model.safetensors")).items()}
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(source / "config.json", tmp_path)
    io = load_file(str(source / "io.safetensors"))
    ids, mask = io["input_ids"], io["attention_mask"]
    pad = int((mask[1] == 0).nonzero()[0, 0])
    other = ids.clone()
    other[1, pad] = (other[1, pad] + 11) % 999
    ours = tessera.from_pretrained(str(tmp_path), dtype=torch.float16)
    theirs = transformers.CLIPModel.from_pretrained(str(tmp_path), dtype=torch.float16).eval()
    with torch.no_grad():
        a, b = (ours.text_model(input_ids=i, attention_mask=mask).last_hidden_state[1, :pad] for i in (ids, other))
        want = theirs.text_model(input_ids=ids, attention_mask=mask).last_hidden_state[1, :pad]
    assert torch.equal(a, b)
    torch.testing.assert_close(a.float(), want.float(), atol=2e-2, rtol=0)
