"""The decoding step's fused kernels (csrc/tessera/ops/decode_attention.cpp, decode_elementwise.cpp)
against what they replace: SDPA for one query against a cache (GQA heads, a padding mask, a cache
view with its capacity stride), and the op sequences of transformers' LlamaRMSNorm and
apply_rotary_pos_emb, bit for bit where both round the same way."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tessera import _C


def sdpa(q, k, v, mask=None):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                          None if mask is None else mask.double())


def cache_view(b, heads, length, dim, dtype, capacity=40):
    """Keys as the KV cache holds them: the first `length` positions of a longer buffer."""
    return torch.randn(b, heads, capacity, dim).to(dtype)[:, :, :length]


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize("heads, kv_heads, length", [(4, 4, 1), (4, 4, 37), (8, 2, 17), (6, 1, 33)])
def test_one_query_attention_is_sdpa(dtype, tol, heads, kv_heads, length):
    q = torch.randn(2, 1, heads, 24).to(dtype).transpose(1, 2)  # as the projections leave it
    k, v = cache_view(2, kv_heads, length, 24, dtype), cache_view(2, kv_heads, length, 24, dtype)
    out = _C.ops.decode_attention(q, k, v)
    assert out.shape == (2, heads, 1, 24) and out.dtype == dtype
    torch.testing.assert_close(out.double(), sdpa(q, k, v), rtol=tol, atol=tol)
    scaled = _C.ops.decode_attention(q, k, v, scale=0.3)
    ref = F.scaled_dot_product_attention(q.double(), k.double().repeat_interleave(heads // kv_heads, 1),
                                         v.double().repeat_interleave(heads // kv_heads, 1), scale=0.3)
    torch.testing.assert_close(scaled.double(), ref, rtol=tol, atol=tol)


def test_a_padding_mask_is_added_to_the_scores():
    q, k, v = torch.randn(3, 4, 1, 16), cache_view(3, 4, 9, 16, torch.float32), cache_view(3, 4, 9, 16, torch.float32)
    keep = torch.ones(3, 9, dtype=torch.bool)
    keep[0, :4] = False  # left padding
    keep[2, :1] = False
    mask = torch.where(keep, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]
    torch.testing.assert_close(_C.ops.decode_attention(q, k, v, mask).double(), sdpa(q, k, v, mask),
                               rtol=1e-6, atol=1e-6)


def argmax_cases():
    """Rows torch.argmax must agree on: ties, NaN (the first one wins), -inf rows, signed zeros,
    lengths off the 16-lane blocks."""
    g = torch.Generator().manual_seed(0)
    yield torch.randn(3, 32000, generator=g)
    for n in (1, 15, 16, 17, 100):
        yield torch.randn(2, n, generator=g)
    tie = torch.randn(1, 50, generator=g)
    tie[0, [7, 23, 41]] = 9.0
    yield tie
    for spots in ([3], [40, 5], [49]):
        nan = torch.randn(1, 50, generator=g)
        nan[0, spots] = float("nan")
        nan[0, 0] = 99.0
        yield nan
    yield torch.full((2, 33), float("-inf"))
    yield torch.tensor([[-0.0, 0.0, -1.0], [0.0, -0.0, -2.0]])
    infs = torch.randn(1, 40, generator=g)
    infs[0, [11, 30]] = float("inf")
    yield infs


def check_argmax():
    for scores in argmax_cases():
        assert torch.equal(_C.ops.decode_argmax(scores), scores.argmax(-1)), scores


def test_argmax_is_torch_argmax():
    check_argmax()


@pytest.mark.parametrize("isa", ["avx2", "portable"])
def test_every_lower_instruction_set_too(isa):
    """Attention's loops and the argmax are compiled for each instruction set decode_linear picks
    from; a lower one than this CPU's best runs their tests in a process that asks for it."""
    isas = ["avx512", "avx2", "portable"]
    if isas.index(isa) <= isas.index(_C.ops.decode_linear_isa()):
        pytest.skip(f"this CPU's best is {_C.ops.decode_linear_isa()}")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                          "one_query_attention_is_sdpa or padding_mask or argmax_is_torch_argmax"],
                         cwd=os.path.dirname(__file__), env=dict(os.environ, TESSERA_DECODE_ISA=isa),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "10 passed" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]


def test_what_it_does_not_serve_is_refused():
    q, k = torch.randn(1, 2, 2, 8), torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match=r"one query \[B, H, 1, D\]"):
        _C.ops.decode_attention(q, k, k)
    with pytest.raises(ValueError, match=r"one query"):
        _C.ops.decode_attention(q[:, :, :1], k.double(), k.double())
    for bad in (torch.randn(9, 5), torch.randn(2, 5).double(), torch.randn(5), torch.randn(2, 0)):
        with pytest.raises(ValueError, match="decode_argmax: CPU fp32 scores"):
            _C.ops.decode_argmax(bad)


def rms_reference(x, w, eps):
    """transformers' LlamaRMSNorm.forward."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_is_the_op_sequence(dtype):
    x, w = torch.randn(2, 3, 200).to(dtype) * 3, torch.randn(200).to(dtype)
    out = _C.ops.decode_rms_norm(x, w, 1e-5)
    ref = rms_reference(x, w, 1e-5)
    assert out.dtype == dtype and out.shape == x.shape
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    else:  # the fp32 mean's last bit may differ (summation order): at most one bf16 step apart
        assert ((out.float() - ref.float()).abs() <= ref.float().abs() * 2 ** -7).all()
        assert (out == ref).float().mean() > 0.99


def rotate_reference(x, cos, sin):
    """transformers' apply_rotary_pos_emb for one tensor: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_is_the_op_sequence_bit_for_bit(dtype):
    x = torch.randn(2, 1, 4, 32).to(dtype).transpose(1, 2)
    angles = torch.randn(2, 1, 16) * 5
    emb = torch.cat([angles, angles], -1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    out = _C.ops.decode_rotary(x, cos, sin)
    assert torch.equal(out, rotate_reference(x, cos, sin))
    with pytest.raises(ValueError, match=r"tables \[2, 1, 32\]"):
        _C.ops.decode_rotary(x, cos[:, :, :16], sin)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_decoding_through_them_equals_recomputation(dtype):
    """Grouped-query heads and a left-padded batch: every step of the cached generation (one
    query: these kernels) picks what the full forward over the prefix (SDPA, the op sequences)
    picks."""
    import tessera

    torch.manual_seed(0)
    cfg = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64)
    model = tessera.LlamaForCausalLM(cfg).eval().to(dtype)
    ids = torch.randint(3, 97, (2, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    kw = dict(attention_mask=mask, max_new_tokens=12, eos_token_id=[])
    cached = model.generate(ids, **kw)
    assert torch.equal(cached, model.generate(ids, use_cache=False, **kw))
    # The cached steps went through the fused layer (nn::decode_layer): 11 steps x 2 layers.
    before = _C.ops.fused_decoding_steps()
    model.generate(ids, **kw)
    assert _C.ops.fused_decoding_steps() - before == 22


def test_the_fused_layer_serves_hooked_layers_and_steps_aside_where_it_must():
    """The fused step is the layer's own forward: a forward hook on a layer (which routes the
    layers through Python) still sees every step, with the ids of the modules' path; past 8 rows
    or with the switch off, the modules run and the counter stays."""
    import tessera

    torch.manual_seed(1)
    cfg = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=64)
    model = tessera.LlamaForCausalLM(cfg).eval().to(torch.bfloat16)
    ids = torch.randint(3, 97, (3, 5))
    kw = dict(max_new_tokens=6, eos_token_id=[])
    seen = []
    handle = model.model.layers[1].register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))
    before = _C.ops.fused_decoding_steps()
    hooked = model.generate(ids, **kw)
    assert _C.ops.fused_decoding_steps() - before == 5 * 2 and seen == [5] + [1] * 5
    handle.remove()
    _C.ops.set_fused_decoding_enabled(False)
    try:
        assert torch.equal(model.generate(ids, **kw), hooked)
    finally:
        _C.ops.set_fused_decoding_enabled(True)
    assert _C.ops.fused_decoding_steps() - before == 10
    model.generate(torch.randint(3, 97, (9, 5)), **kw)  # 9 rows: the modules' ATen path
    assert _C.ops.fused_decoding_steps() - before == 10
