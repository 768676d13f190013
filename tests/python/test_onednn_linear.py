"""fp32 inference through oneDNN (csrc/tessera/ops/onednn_linear.cpp): the op against the plain
formula, the cases it must leave to torch's linear (gradients of either mode, other dtypes, small
products, autocast, dispatch modes, switched off), and the layers that take it by themselves: a
Q-Former against transformers' with the path on, the profiler showing where the products ran, and
training that never reaches it."""
import os
import subprocess
import sys

import pytest
import torch

import tessera
import tessera.ops
from _linear_reference import assert_fp32_sum

ONEDNN = "mkldnn::_linear_pointwise"
pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="LibTorch built without oneDNN")


def ran(fn, name=ONEDNN) -> bool:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return any(e.key == name for e in prof.key_averages())


@pytest.mark.parametrize("shape, out, bias", [((128, 256), 256, True), ((3, 50, 384), 300, False),
                                              ((2, 129, 257), 513, True)])
def test_matches_the_formula(shape, out, bias):
    g = torch.Generator().manual_seed(sum(shape) + out)
    x = torch.randn(*shape, generator=g)
    w = torch.randn(out, shape[-1], generator=g)
    b = torch.randn(out, generator=g) if bias else None
    with torch.no_grad():
        assert tessera.ops.onednn_linear.applies(x, w, b)
        assert ran(lambda: tessera.ops.linear(x, w, b))
        y = tessera.ops.linear(x, w, b)
    assert y.shape == (*shape[:-1], out) and y.dtype == torch.float32
    assert_fp32_sum(y.reshape(-1, out), x.reshape(-1, shape[-1]), w, b)


def test_a_non_contiguous_input_is_read_as_its_values():
    x = torch.randn(256, 512)[:, ::2]  # [256, 256], stride 2
    w = torch.randn(256, 256)
    with torch.no_grad():
        assert_fp32_sum(tessera.ops.linear(x, w), x, w)


def test_what_stays_on_torch_linear():
    x, w, b = torch.randn(256, 256), torch.randn(256, 256), torch.randn(256)
    applies = tessera.ops.onednn_linear.applies
    with torch.no_grad():
        assert not applies(x[:127], w, b)                          # fewer than 128 rows
        assert not applies(torch.randn(256, 255), torch.randn(256, 255), b)  # a narrow weight
        assert not applies(x, torch.randn(255, 256), None)
        assert not applies(x.bfloat16(), w.bfloat16(), b.bfloat16())  # fp32 only
        assert not applies(x, w.t(), b)                              # a transposed (non-contiguous) weight
        assert not applies(x, w, b.double())
        assert not applies(x, w, torch.randn(255))                  # a wrong bias gets torch's error
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not applies(x, w, b)                              # autocast decides dtypes
        with torch.backends.mkldnn.flags(enabled=False):
            assert not applies(x, w, b)
        with tessera.ops.onednn_linear(False):
            assert not applies(x, w, b) and not tessera.ops.onednn_linear.enabled()
        assert applies(x, w, b) and tessera.ops.onednn_linear.enabled()  # the context restored it
    with tessera.ops.onednn_linear(False):
        assert not ran(lambda: tessera.ops.linear(x, w, b))
    # A gradient through any operand keeps torch's linear, and with it torch's backward.
    for needs_grad in (x, w, b):
        needs_grad.requires_grad_(True)
        assert not applies(x, w, b)
        assert not ran(lambda: tessera.ops.linear(x, w, b))
        needs_grad.requires_grad_(False)
    assert applies(x, w, b)  # grad mode on, but no operand needs a gradient
    assert not applies(torch.empty(256, 256, device="meta"), w, b)
    # Under a dispatch mode (here PyTorch's FLOP counter) torch's linear runs, so the mode sees it.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        assert not applies(x, w, b)
        tessera.ops.linear(x, w, b)
    assert counter.get_total_flops() == 2 * 256 * 256 * 256


def test_a_forward_mode_tangent_is_carried():
    """Forward-mode AD on plain tensors (no autograd graph) would lose its tangent in the op."""
    import torch.autograd.forward_ad as fwAD

    x, w, tangent = torch.randn(256, 256), torch.randn(256, 256), torch.randn(256, 256)
    with torch.no_grad(), fwAD.dual_level():
        dual = fwAD.make_dual(x, tangent)
        assert not tessera.ops.onednn_linear.applies(dual, w)
        out = fwAD.unpack_dual(tessera.ops.linear(dual, w))
    assert out.tangent is not None
    assert_fp32_sum(out.tangent, tangent, w)
    assert_fp32_sum(out.primal, x, w)


def test_the_environment_switches_it_off():
    code = "import tessera.ops; print(tessera.ops.onednn_linear.enabled())"
    env = {**os.environ, "TESSERA_ONEDNN_LINEAR": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_qformer_equals_transformers_with_the_path_on():
    transformers = pytest.importorskip("transformers")
    config = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                  cross_attention_frequency=1, encoder_hidden_size=320, use_qformer_text_input=False,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ref = transformers.Blip2QFormerModel(transformers.Blip2QFormerConfig(**config)).eval()
    ours = tessera.Blip2QFormerModel(config).eval()
    ours.load_state_dict(ref.state_dict())
    queries, image = torch.randn(4, 32, 256), torch.randn(4, 50, 320)  # 128 query rows, 200 image rows
    with torch.no_grad():
        expected = ref(query_embeds=queries, encoder_hidden_states=image).last_hidden_state
        assert ran(lambda: ours(queries, encoder_hidden_states=image))
        got = ours(queries, encoder_hidden_states=image).last_hidden_state
        with tessera.ops.onednn_linear(False):
            assert not ran(lambda: ours(queries, encoder_hidden_states=image))
            plain = ours(queries, encoder_hidden_states=image).last_hidden_state
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    assert (plain - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    # Training takes torch's linear: the same forward under autograd never reaches oneDNN.
    ours.train()
    assert not ran(lambda: ours(queries, encoder_hidden_states=image).last_hidden_state.sum().backward())
    assert all(p.grad is not None for p in ours.parameters() if p.requires_grad)
