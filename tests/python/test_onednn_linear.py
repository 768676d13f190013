"""fp32 linear layers through oneDNN (csrc/tessera/ops/onednn_linear.cpp): the op and its
gradients against the plain formula, gradcheck-style agreement with torch's own backward, the
cases it must leave to torch's linear (other dtypes, small products, autocast, subclasses, switched
off), and the layers that take it by themselves: a Q-Former against transformers' with the path on,
forward and every gradient, the profiler showing where the products ran."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import tessera
import tessera.ops

ONEDNN = "mkldnn::_linear_pointwise"
pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="LibTorch built without oneDNN")


def reference(x, w, b=None):
    y = x.double() @ w.double().T
    return y if b is None else y + b.double()


def assert_fp32_sum(y, x, w, b=None):
    """Within fp32 rounding of a sum of `inner` products taken in another order."""
    bound = 1e-6 * (x.abs().double() @ w.abs().double().T + (0 if b is None else b.abs().double())) + 1e-7
    assert bool(((y.double() - reference(x, w, b)).abs() <= bound).all())


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
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not applies(x, w, b)                              # autocast decides dtypes
        with torch.backends.mkldnn.flags(enabled=False):
            assert not applies(x, w, b)
        with tessera.ops.onednn_linear(False):
            assert not applies(x, w, b) and not tessera.ops.onednn_linear.enabled()
        assert applies(x, w, b) and tessera.ops.onednn_linear.enabled()  # the context restored it
    with tessera.ops.onednn_linear(False):
        assert not ran(lambda: tessera.ops.linear(x, w, b))
    x.requires_grad_(True)
    assert applies(x, w, b)  # training takes it too (its own backward, below)
    assert not applies(torch.empty(256, 256, device="meta"), w, b)
    # Under a dispatch mode (here PyTorch's FLOP counter) torch's linear runs, so the mode sees it.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        assert not applies(x, w, b)
        tessera.ops.linear(x, w, b)
    assert counter.get_total_flops() == 2 * 256 * 256 * 256


@pytest.mark.parametrize("needs", ["x", "w", "b", "xwb"])
def test_gradients_equal_torch_linear(needs):
    g = torch.Generator().manual_seed(len(needs))
    x0, w0, b0 = (torch.randn(*shape, generator=g) for shape in ((2, 96, 320), (288, 320), (288,)))
    grad_out = torch.randn(2, 96, 288, generator=g)
    results = []
    for use in (True, False):
        x, w, b = (t.clone().requires_grad_(name in needs) for t, name in ((x0, "x"), (w0, "w"), (b0, "b")))
        with tessera.ops.onednn_linear(use):
            assert ran(lambda: tessera.ops.linear(x, w, b)) == use
            y = tessera.ops.linear(x, w, b)
            y.backward(grad_out)
        results.append((y.detach(), [t.grad for t in (x, w, b)]))
    (y1, g1), (y2, g2) = results
    assert (y1 - y2).abs().max() <= 1e-5 * y2.abs().max()
    for a, r, t in zip(g1, g2, "xwb"):
        assert (a is None) == (t not in needs)
        if a is not None:
            assert (a - r).abs().max() <= 1e-5 * r.abs().max(), t


def test_backward_ran_through_onednn_and_a_double_backward_works():
    x = torch.randn(128, 256, requires_grad=True)
    w = torch.randn(256, 256, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        tessera.ops.linear(x, w).pow(2).sum().backward()
    assert sum(e.count for e in prof.key_averages() if e.key == ONEDNN) == 2  # forward and dX (dW: ATen mm)
    # create_graph: the backward's own products run through ATen and are differentiable.
    y = tessera.ops.linear(x, w).pow(2).sum()
    (gx,) = torch.autograd.grad(y, x, create_graph=True)
    (gw,) = torch.autograd.grad(gx.sum(), w)
    with tessera.ops.onednn_linear(False):
        y = tessera.ops.linear(x, w).pow(2).sum()
        (rx,) = torch.autograd.grad(y, x, create_graph=True)
        (rw,) = torch.autograd.grad(rx.sum(), w)
    assert (gx - rx).abs().max() <= 1e-5 * rx.abs().max() and (gw - rw).abs().max() <= 1e-4 * rw.abs().max()


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
    # Training: every gradient as transformers', and the products ran through oneDNN.
    ours.train(), ref.train()
    assert ran(lambda: ours(queries, encoder_hidden_states=image).last_hidden_state.sum().backward())
    for model, out in ((ours, lambda: ours(queries, encoder_hidden_states=image)),
                       (ref, lambda: ref(query_embeds=queries, encoder_hidden_states=image))):
        model.zero_grad()
        out().last_hidden_state.pow(2).mean().backward()
    theirs = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        r = theirs[name].grad
        assert (p.grad - r).abs().max() <= 1e-4 * r.abs().max() + 1e-9, name
