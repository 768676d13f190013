"""tessera.ops.soft_dtw on CUDA (csrc/tessera/ops/soft_dtw_cuda.cu) against the CPU kernel:
forward and backward, gamma 1, 0.1 and 0 (hard DTW, which must pick the same path bit for bit),
per-pair lengths, pairs longer than a thread block (N = M = 1500), one pair and a batch of 64.
Needs a GPU; without one every test here is skipped. Without a GPU, the kernels' per-diagonal
code is still checked on the host by tests/cpp/test_soft_dtw_wavefront.cpp."""
import pytest
import torch

import tessera.ops

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

L = 1500  # beyond one block (512 threads): threads take several cells of a diagonal
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(scope="module")
def has_kernels() -> bool:
    """Whether this library was built with the CUDA kernels (TESSERA_CUDA): the op says when not."""
    try:
        tessera.ops.soft_dtw(torch.ones(1, 1, 1, device="cuda"))
        return True
    except RuntimeError as e:
        if "built without CUDA" in str(e):
            return False
        raise


def _value_and_grad(cost, gamma, lengths, grad_out):
    leaf = cost.detach().clone().requires_grad_(True)
    value = tessera.ops.soft_dtw(leaf, gamma, lengths)
    value.backward(grad_out)
    return value.detach(), leaf.grad


def _problem(batch: int, dtype):
    """Squared distances of random sequences; pair 0 full length, the rest random lengths."""
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, L, 3, generator=g, dtype=torch.float64)
    y = torch.randn(batch, L, 3, generator=g, dtype=torch.float64)
    cost = (torch.cdist(x, y) ** 2).to(dtype)
    n = torch.randint(1, L + 1, (batch,), generator=g)
    m = torch.randint(1, L + 1, (batch,), generator=g)
    n[0], m[0] = L, L
    if batch > 2:
        n[1], m[1] = 1, L  # a single row, a single column
        n[2], m[2] = L, 1
    grad_out = (torch.rand(batch, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    return cost, (n, m), grad_out


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("gamma", [1.0, 0.1, 0.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_the_cpu_kernel(has_kernels, batch, gamma, dtype):
    if not has_kernels:
        pytest.skip("this tessera library was built without CUDA kernels")
    cost, (n, m), grad_out = _problem(batch, dtype)
    value, grad = _value_and_grad(cost, gamma, (n, m), grad_out)
    value_gpu, grad_gpu = _value_and_grad(cost.cuda(), gamma, (n.cuda(), m.cuda()), grad_out.cuda())
    assert value_gpu.device.type == "cuda" and grad_gpu.device.type == "cuda"
    value_gpu, grad_gpu = value_gpu.cpu(), grad_gpu.cpu()
    if gamma == 0:  # min and + round alike on both devices: the same path, the same bits
        assert torch.equal(value_gpu, value)
        assert torch.equal(grad_gpu, grad)
        return
    tol = TOL[dtype]
    torch.testing.assert_close(value_gpu, value, rtol=tol, atol=0)
    if dtype == torch.float64:
        # relative to the largest entry: most of the expected alignment is exp-small
        torch.testing.assert_close(grad_gpu, grad, rtol=tol, atol=tol * grad.abs().max().item())
        return
    # In float32 the gradient's recursion over ~3000 diagonals drifts from the exact one by up to
    # ~4e-4 of its largest entry on the CPU too (an H200 differed from the CPU by 3e-5, 2026-12-04),
    # and each device rounds its exp differently: so both are held to the float64 answer on the
    # same inputs, and the device may be no less accurate than the CPU kernel.
    _, exact = _value_and_grad(cost.double(), gamma, (n, m), grad_out.double())
    for measure in (lambda d: d.norm() / exact.norm(), lambda d: d.abs().max() / exact.abs().max()):
        err_cpu, err_gpu = measure(grad.double() - exact).item(), measure(grad_gpu.double() - exact).item()
        assert err_gpu <= 1.5 * err_cpu + 1e-6, (err_gpu, err_cpu)


def test_runs_on_the_current_stream(has_kernels):
    if not has_kernels:
        pytest.skip("this tessera library was built without CUDA kernels")
    cost = torch.rand(3, 40, 30, dtype=torch.float64)
    expected, expected_grad = _value_and_grad(cost, 0.5, None, torch.ones(3, dtype=torch.float64))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        value, grad = _value_and_grad(cost.cuda(), 0.5, None, torch.ones(3, dtype=torch.float64, device="cuda"))
    stream.synchronize()
    torch.testing.assert_close(value.cpu(), expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(grad.cpu(), expected_grad, rtol=1e-10, atol=1e-12)


def test_error_without_cuda_kernels(has_kernels):
    if has_kernels:
        pytest.skip("this tessera library has the CUDA kernels")
    with pytest.raises(RuntimeError, match="built without CUDA; move the cost to the CPU"):
        tessera.ops.soft_dtw(torch.rand(2, 5, 4, device="cuda"))
