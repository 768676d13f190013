"""tessera.ops: soft-DTW, GAK and the triple kernel against every path enumerated by hand,
gradcheck in double, tslearn and pysdtw on the same inputs, and the papers' closed forms."""
import math

import numpy as np
import pytest
import torch

import tessera.ops as ops


def all_paths(n, m):
    """Every monotone alignment of [0, n) x [0, m) with steps (1, 0), (0, 1), (1, 1)."""
    out = []

    def walk(i, j, path):
        if (i, j) == (n - 1, m - 1):
            out.append(path)
            return
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            if i + di < n and j + dj < m:
                walk(i + di, j + dj, path + [(i + di, j + dj)])

    walk(0, 0, [(0, 0)])
    return out


def brute_force(cost, gamma):
    totals = torch.stack([sum(cost[i, j] for i, j in p) for p in all_paths(*cost.shape)])
    return totals.min() if gamma == 0 else -gamma * torch.logsumexp(-totals / gamma, 0)


@pytest.mark.parametrize("gamma", [1.0, 0.1, 0.0])
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 1), (2, 3), (4, 4), (4, 3)])
def test_soft_dtw_equals_every_path_enumerated(gamma, shape):
    cost = torch.rand(3, *shape, dtype=torch.float64, requires_grad=True)
    ours = ops.soft_dtw(cost, gamma)
    ref = torch.stack([brute_force(c, gamma) for c in cost])
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours, = torch.autograd.grad(ours.sum(), cost)
    g_ref, = torch.autograd.grad(ref.sum(), cost)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ops.soft_dtw(cost.detach().float(), gamma), ref.float(), rtol=1e-6, atol=1e-6)


def test_hard_dtw_gradient_is_the_optimal_path():
    cost = torch.full((4, 5), 5.0, dtype=torch.float64)
    path = [(0, 0), (1, 1), (1, 2), (2, 3), (3, 4)]
    for i, j in path:
        cost[i, j] = 0.1
    cost.requires_grad_()
    value = ops.soft_dtw(cost, 0.0)
    assert value.item() == pytest.approx(0.5)
    grad, = torch.autograd.grad(value, cost)
    expected = torch.zeros_like(grad)
    for i, j in path:
        expected[i, j] = 1
    assert torch.equal(grad, expected)


def test_hard_dtw_ties_go_to_the_diagonal():
    cost = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)  # three optimal paths
    grad, = torch.autograd.grad(ops.soft_dtw(cost, 0.0), cost)
    assert grad.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_gradcheck_in_double(gamma):
    cost = torch.rand(2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: ops.soft_dtw(c, gamma), (cost,))
    lengths = (torch.tensor([3, 5]), torch.tensor([6, 2]))
    assert torch.autograd.gradcheck(lambda c: ops.soft_dtw(c, gamma, lengths), (cost,))


def test_per_pair_lengths_equal_unpadded_calls():
    cost = torch.rand(37, 9, 11)  # over two CPU chunks of 16 pairs, the last one partly empty
    n, m = torch.randint(1, 10, (37,)), torch.randint(1, 12, (37,))
    padded = cost.clone().requires_grad_()
    out = ops.soft_dtw(padded, 0.2, (n, m))
    out.backward(torch.arange(37.0))
    for b in range(37):
        alone = cost[b, : n[b], : m[b]].clone().requires_grad_()
        value = ops.soft_dtw(alone, 0.2)
        (value * b).backward()
        torch.testing.assert_close(out[b], value, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(padded.grad[b, : n[b], : m[b]], alone.grad, rtol=1e-5, atol=1e-6)
        outside = padded.grad[b].clone()
        outside[: n[b], : m[b]] = 0
        assert not outside.any(), f"pair {b}: gradient in the padding"


def test_against_tslearn_on_series_and_cost():
    from tslearn.metrics import soft_dtw as ts_soft_dtw
    from tslearn.metrics.soft_dtw_loss_pytorch import _SoftDTWLossPyTorch

    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    cost = torch.cdist(x, y).square()
    for gamma in (1.0, 0.1):
        assert ops.soft_dtw(cost, gamma).item() == pytest.approx(ts_soft_dtw(x.numpy(), y.numpy(), gamma=gamma),
                                                                 rel=1e-10)
    batch = torch.rand(4, 8, 6, dtype=torch.float64, requires_grad=True)
    ref_in = batch.detach().clone().requires_grad_()
    ours, ref = ops.soft_dtw(batch, 0.5), _SoftDTWLossPyTorch.apply(ref_in, 0.5)
    # tslearn's loss passes its tables through torch.Tensor(...), i.e. float32, even for double input
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(batch.grad, ref_in.grad, rtol=1e-5, atol=1e-6)


def test_against_pysdtw_with_packed_sequences():
    import pysdtw
    from torch.nn.utils.rnn import pack_padded_sequence

    n, m = torch.tensor([7, 3, 5, 1]), torch.tensor([2, 6, 6, 4])
    x, y = torch.randn(4, 7, 3, dtype=torch.float64), torch.randn(4, 6, 3, dtype=torch.float64)
    ref = pysdtw.SoftDTW(gamma=0.5, use_cuda=False, dist_func=pysdtw.distance.pairwise_l2_squared_exact)(
        pack_padded_sequence(x, n, batch_first=True, enforce_sorted=False),
        pack_padded_sequence(y, m, batch_first=True, enforce_sorted=False))
    cost = (x.unsqueeze(2) - y.unsqueeze(1)).square().sum(-1)
    # pysdtw's CPU path also returns its table through torch.Tensor(...): float32
    torch.testing.assert_close(ops.soft_dtw(cost, 0.5, (n, m)), ref, rtol=1e-6, atol=1e-6)


def test_long_sequences_stay_finite_in_float32():
    cost = (torch.rand(2, 512, 512, dtype=torch.float64) * 4).requires_grad_()
    ref = ops.soft_dtw(cost, 0.1)
    ref.sum().backward()
    c32 = cost.detach().float().requires_grad_()
    out = ops.soft_dtw(c32, 0.1)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(c32.grad).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=0)
    # R ~ 600 holds ~6e-5 absolute in float32 and each weight's exponent divides that by gamma;
    # normalised weights keep the alignment mass exact, so E stays within ~2e-4 of float64's
    torch.testing.assert_close(c32.grad.double(), cost.grad, rtol=0, atol=1e-3)
    # the expected alignment of a path-sum: entries in [0, 1], at least one full path's mass
    assert c32.grad.min() >= 0 and c32.grad.max() <= 1 + 1e-5


def _gak_by_the_definition(x, y, sigma):
    """Cuturi's sum-product recursion written out: M[i, j] = (M[i, j-1] + M[i-1, j-1] + M[i-1, j]) k(x_i, y_j)."""
    n, m = len(x), len(y)
    phi = torch.cdist(x, y).square() / (2 * sigma**2)
    k = torch.exp(-(phi + torch.log(2 - torch.exp(-phi))))
    M = [[0.0] * (m + 1) for _ in range(n + 1)]
    M[0][0] = 1.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            M[i][j] = (M[i][j - 1] + M[i - 1][j - 1] + M[i - 1][j]) * k[i - 1, j - 1].item()
    return M[n][m]


def test_gak_against_the_definition_and_tslearn():
    from tslearn.metrics import gak as ts_gak, unnormalized_gak

    x, y = torch.randn(5, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    raw = ops.gak(x, y, sigma=1.5, normalized=False).item()
    assert raw == pytest.approx(_gak_by_the_definition(x, y, 1.5), rel=1e-10)
    assert raw == pytest.approx(unnormalized_gak(x.numpy(), y.numpy(), sigma=1.5), rel=1e-10)
    assert ops.gak(x, y, sigma=1.5).item() == pytest.approx(ts_gak(x.numpy(), y.numpy(), sigma=1.5), rel=1e-10)


def test_gak_delta_bandwidth_per_pair_and_lengths():
    x, y = torch.randn(3, 6, 4, dtype=torch.float64), torch.randn(3, 5, 4, dtype=torch.float64)
    n, m = torch.tensor([6, 2, 4]), torch.tensor([5, 5, 1])
    batched = ops.gak(x, y, delta=0.7, lengths=(n, m))
    for b in range(3):
        sigma = 0.7 * math.sqrt((n[b] + m[b]).item() / 2)
        alone = ops.gak(x[b, : n[b]], y[b, : m[b]], sigma=sigma)
        assert batched[b].item() == pytest.approx(alone.item(), rel=1e-10)


def test_nan_padding_past_the_lengths_is_never_read():
    """The padding was said to be ignored, yet a NaN there (tslearn's to_time_series_dataset pads
    variable-length series with NaN) was refused: now it is zeroed before any check, and the
    values and gradients equal tslearn's on the unpadded series, with no NaN reaching a gradient."""
    from tslearn.metrics import gak as ts_gak, soft_dtw as ts_soft_dtw
    from tslearn.utils import to_time_series_dataset

    series = [torch.randn(5, 2, dtype=torch.float64).numpy(), torch.randn(3, 2, dtype=torch.float64).numpy()]
    x = torch.from_numpy(to_time_series_dataset(series)).requires_grad_()  # [2, 5, 2], NaN past row 1's 3 steps
    y = x.detach().flip(0).clone().requires_grad_()
    n, m = torch.tensor([5, 3]), torch.tensor([3, 5])
    cost = (x.unsqueeze(2) - y.unsqueeze(1)).square().sum(-1)  # NaN in the padding only
    got = ops.soft_dtw(cost, 0.5, lengths=(n, m))
    want = [ts_soft_dtw(series[b], series[1 - b], gamma=0.5) for b in range(2)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    k = ops.gak(x, y, sigma=1.3, lengths=(n, m))
    want = [ts_gak(series[b], series[1 - b], sigma=1.3) for b in range(2)]
    torch.testing.assert_close(k, torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    k.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert not x.grad[1, 3:].any() and not y.grad[0, 3:].any()  # padding: zero gradient


def test_normalized_gak_is_one_on_the_diagonal_and_one_slice_is_s_over_2_minus_s():
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(ops.gak(x, x, delta=0.5), torch.ones(4, dtype=torch.float64))
    a, b = torch.nn.functional.normalize(torch.randn(2, 1, 8, dtype=torch.float64), dim=-1)
    delta = 0.6
    s = math.exp(-(1 - torch.dot(a[0], b[0]).item()) / delta**2)  # |a-b|^2 = 2 (1 - cos) for unit vectors
    assert ops.gak(a, b, delta=delta).item() == pytest.approx(s / (2 - s), rel=1e-10)


def test_gak_is_differentiable_in_double():
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.gak(a, b, delta=1.3), (x, y))


def test_triple_kernel_cost_against_the_formula():
    B, N, M = 2, 3, 4
    xf, yf = torch.randn(B, N, 5), torch.randn(B, M, 5)
    xs, ys = torch.randn(B, N, 6), torch.randn(B, M, 6)
    xi, yi = torch.rand(B, N) > 0.5, torch.rand(B, M) > 0.5
    cost = ops.triple_kernel_cost(xf, xs, xi, yf, ys, yi)
    unit = torch.nn.functional.normalize
    for b in range(B):
        for i in range(N):
            for j in range(M):
                first = xi[b, i] == yi[b, j]
                u, v = (xf[b, i], yf[b, j]) if first else (xs[b, i], ys[b, j])
                expected = (unit(u, dim=0) - unit(v, dim=0)).square().sum()
                assert cost[b, i, j].item() == pytest.approx(expected.item(), abs=1e-5)
    same = ops.gak_from_cost(ops.triple_kernel_cost(xf, xs, xi, xf, xs, xi),
                             ops.triple_kernel_cost(xf, xs, xi, xf, xs, xi),
                             ops.triple_kernel_cost(xf, xs, xi, xf, xs, xi), delta=0.5)
    torch.testing.assert_close(same, torch.ones(B))


@pytest.mark.parametrize("call, message", [
    (lambda: ops.soft_dtw(torch.rand(2, 3, 4, 5)), "must be \\[B, N, M\\] or \\[N, M\\]"),
    (lambda: ops.soft_dtw(torch.rand(2, 0, 4)), "at least one step"),
    (lambda: ops.soft_dtw(torch.rand(3, 4), gamma=-1), "gamma must be 0 \\(hard DTW\\) or a normal positive"),
    (lambda: ops.soft_dtw(torch.rand(3, 4).double(), gamma=1e-310), "gamma must be 0 .* normal positive"),
    (lambda: ops.soft_dtw(torch.tensor([[0.0, float("nan")]])), r"cost\[0, 0, 1\] is nan; entries must be finite"),
    (lambda: ops.soft_dtw(torch.rand(2, 3, 4), lengths=(torch.tensor([3, 4]), torch.tensor([4, 4]))),
     "x_lengths\\[1\\] = 4 is out of range"),
    (lambda: ops.soft_dtw(torch.rand(2, 3, 4), lengths=(torch.tensor([3, 3]), torch.tensor([0, 4]))),
     "y_lengths\\[0\\] = 0 is out of range"),
    (lambda: ops.soft_dtw(torch.rand(2, 3, 4), lengths=(torch.tensor([3]), torch.tensor([4]))),
     "x_lengths must be \\[2\\]"),
    (lambda: ops.soft_dtw(torch.rand(2, 3, 4), lengths=torch.tensor([3, 4])), "must be a pair"),
    (lambda: ops.soft_dtw(torch.rand(2, 3, 4), lengths=([3, 2], None)), "needs both x_lengths and y_lengths"),
    (lambda: ops.gak(torch.rand(2, 3, 4), torch.rand(2, 5, 4), lengths=(None, [5, 2])), "needs both"),
    (lambda: ops.gak(torch.rand(2, 3, 4), torch.rand(2, 3, 5)), "same batch size and feature width"),
    (lambda: ops.gak(torch.rand(2, 3, 4), torch.rand(3, 4)), "both be"),
    (lambda: ops.gak(torch.rand(3, 4), torch.rand(3, 4), sigma=1.0, delta=1.0), "sigma or delta"),
    (lambda: ops.gak(torch.rand(3, 4), torch.rand(3, 4), sigma=0.0), "sigma must be > 0"),
    (lambda: ops.gak_from_cost(torch.rand(2, 3, 4)), "x-x cost"),
    (lambda: ops.gak_from_cost(-torch.rand(2, 3, 4), normalized=False), "must be >= 0"),
    (lambda: ops.triple_kernel_cost(torch.rand(2, 3, 4), torch.rand(2, 3, 6), torch.ones(2, 3, dtype=torch.bool),
                                    torch.rand(2, 5, 4), torch.rand(2, 5, 7), torch.ones(2, 5, dtype=torch.bool)),
     "y_second has shape"),
])
def test_bad_input_is_a_value_error_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_forbidden_cell_is_a_large_cost_within_the_bound(dtype):
    """The dtype's max as a forbidden cell made the path sums inf, and inf - inf NaN spread into the
    cells a cheap path passes through (NaN gradients in float32, a NaN value in float64): refused,
    naming the bound, below which the band's answer is exact."""
    cost = torch.rand(5, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    band = (torch.arange(5).view(-1, 1) - torch.arange(5).view(1, -1)).abs() <= 1
    with pytest.raises(ValueError, match=r"cost\[0, 0, 2\] is .*; entries must be finite and at most"):
        ops.soft_dtw(cost.masked_fill(~band, torch.finfo(dtype).max), gamma=0.1)
    big = (torch.finfo(dtype).max / (2 * 10)) / 2
    forbidden = cost.masked_fill(~band, big).requires_grad_()
    value = ops.soft_dtw(forbidden, gamma=0.1)
    value.backward()
    want = ops.soft_dtw(cost.masked_fill(~band, 1e4), gamma=0.1)  # the forbidden cells weigh e^-1e5 there
    torch.testing.assert_close(value.detach(), want)
    assert torch.isfinite(forbidden.grad).all() and (forbidden.grad[~band] == 0).all()


def test_integer_cost_is_a_type_error():
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.soft_dtw(torch.ones(3, 3, dtype=torch.long))


def test_gak_refuses_what_it_would_silently_reinterpret():
    """An integer cost made the bandwidth an integer (sigma 1.5 became 1), float lengths were
    truncated (2.7 read as 2), and a NaN or a negative length surfaced as soft-DTW's message about
    the cost; each now names gak's own argument."""
    torch.manual_seed(0)
    x, y = torch.randn(2, 5, 3), torch.randn(2, 6, 3)
    xy = torch.cdist(x, y) ** 2
    cases = [
        (lambda: ops.gak_from_cost(xy.round().long(), normalized=False, sigma=1.5), TypeError,
         "the x-y cost must be float32 or float64"),
        (lambda: ops.gak(x.long(), y.long(), sigma=1.9), TypeError, "x and y must be float32 or float64"),
        (lambda: ops.gak(x, y, lengths=(torch.tensor([2.7, 3.0]), torch.tensor([5, 5]))), TypeError,
         "gak: x_lengths must be an integer tensor"),
        (lambda: ops.gak(x, y, lengths=([-9, 3], [5, 5])), ValueError, r"gak: x_lengths\[0\] = -9"),
        (lambda: ops.gak_from_cost(xy.masked_fill(xy > 1, float("nan")), normalized=False), ValueError,
         "the x-y cost has a non-finite entry"),
        (lambda: ops.gak_from_cost(xy, -torch.ones(2, 5, 5), torch.zeros(2, 6, 6)), ValueError,
         "the x-x cost must be >= 0"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_a_second_derivative_is_refused_not_silently_zero():
    """The backward is not differentiable: with create_graph the gradient came back without a
    graph, so a gradient penalty added nothing and gradgradcheck failed on the numbers."""
    x = torch.rand(2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 4, 5, dtype=torch.float64)
    for f in (lambda a: ops.soft_dtw(a, 1.0), lambda a: ops.gak(torch.rand(2, 3, 5, dtype=torch.float64) + a[:, :, :1],
                                                                  y, sigma=0.7)):
        with pytest.raises(ValueError, match="no second derivative"):
            torch.autograd.grad(f(x).sum(), x, create_graph=True)
    (g,) = torch.autograd.grad(ops.soft_dtw(x, 1.0).sum(), x)  # once is fine
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("dtype, gamma", [(torch.float32, 1e-40), (torch.float32, 1e300), (torch.float64, 1e308)])
def test_gamma_is_checked_in_the_costs_precision(dtype, gamma):
    """1e-40 passed the float64 check and gave a float32 cost NaN gradients; 1e300 gave -inf."""
    with pytest.raises(ValueError, match="normal positive number that a (Float|Double) cost of 3 x 4 can carry"):
        ops.soft_dtw(torch.rand(2, 3, 4, dtype=dtype), gamma)
    assert torch.isfinite(ops.soft_dtw(torch.rand(2, 3, 4, dtype=torch.float64), 1e300)).all()


@pytest.mark.parametrize("gamma", [1.0, 0.0])
@pytest.mark.parametrize("batch", [1, 2, 4, 5, 8, 9, 16, 17])
def test_every_lane_width_equals_each_pair_run_alone(gamma, batch):
    """A batch runs in 1, 4, 8 or 16 lanes, the narrowest that holds it (every lane costs a full
    table: 16 lanes for one 2048-step pair were ~550 MiB more); each width, padded lanes and
    per-pair lengths included, computes what a pair run on its own computes."""
    g = torch.Generator().manual_seed(batch)
    cost = torch.rand(batch, 7, 5, dtype=torch.float64, generator=g)
    n, m = torch.randint(1, 8, (batch,), generator=g), torch.randint(1, 6, (batch,), generator=g)
    batched = cost.clone().requires_grad_()
    values = ops.soft_dtw(batched, gamma=gamma, lengths=(n, m))
    values.sum().backward()
    for b in range(batch):
        alone = cost[b:b + 1, : n[b], : m[b]].clone().requires_grad_()
        value = ops.soft_dtw(alone, gamma=gamma)
        value.sum().backward()
        torch.testing.assert_close(value, values[b:b + 1].detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(alone.grad[0], batched.grad[b, : n[b], : m[b]], rtol=1e-12, atol=0)
        assert not batched.grad[b, n[b]:].any() and not batched.grad[b, :, m[b]:].any()


def test_triple_kernel_cost_keeps_tiny_distances_and_normalises_zero_blocks_as_f_normalize():
    """2 - 2 a.b in the features' precision cancelled: a distance of ~1e-8 between near-identical
    slices read as 0 in float32 (and 1e-7 off in float64), and a zero block sat at distance 2 from
    itself. Against |F.normalize(a) - F.normalize(b)|^2 in float64: within 1e-15, a few float64
    ulps of the unit scale (the cancellation left by one matmul over every pair)."""
    torch.manual_seed(0)
    u = torch.randn(1, 3, 768, dtype=torch.float64)
    v = u + 1e-4 * torch.randn(1, 3, 768, dtype=torch.float64) / 768 ** 0.5
    v[0, 2] = 0
    u[0, 1] = 0
    v[0, 1] = 0
    unit = torch.nn.functional.normalize
    want = (unit(u, dim=-1).unsqueeze(2) - unit(v, dim=-1).unsqueeze(1)).square().sum(-1)
    assert want[0, 1, 1] == 0 and want[0, 0, 2] == pytest.approx(1) and want[0, 0, 0] < 1e-7
    flags = torch.zeros(1, 3, dtype=torch.bool)
    for dtype, rel in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        a, b = u.to(dtype), v.to(dtype)
        got = ops.triple_kernel_cost(a, a, flags, b, b, flags).double()
        # float32 features themselves round at ~6e-8 of each unit vector: the tiny entry is
        # compared against the float32 vectors' own distance, the rest against float64's.
        exact32 = (unit(a.double(), dim=-1).unsqueeze(2) - unit(b.double(), dim=-1).unsqueeze(1)).square().sum(-1)
        torch.testing.assert_close(got, exact32 if dtype == torch.float32 else want, rtol=rel, atol=1e-15)
        assert got[0, 0, 0] > 0  # 1.2e-11: read as 0 before


def test_loose_arguments_are_refused_not_coerced():
    """is_image of 0.5 or NaN read as True, normalized="false" as True, gamma=True as 1.0."""
    x = torch.rand(1, 2, 4)
    yes = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(TypeError, match=r"x_is_image must be a bool \(or 0/1 integer\) tensor, got Float"):
        ops.triple_kernel_cost(x, x, torch.tensor([[0.5, 0.0]]), x, x, yes)
    with pytest.raises(ValueError, match="y_is_image holds values other than 0 and 1"):
        ops.triple_kernel_cost(x, x, yes, x, x, torch.tensor([[2, 0]]))
    torch.testing.assert_close(ops.triple_kernel_cost(x, x, torch.tensor([[1, 0]]), x, x, yes),
                               ops.triple_kernel_cost(x, x, torch.tensor([[True, False]]), x, x, yes))
    cost = torch.rand(2, 3)  # a 0-d tensor or array is a number, as float() took it before
    assert ops.soft_dtw(cost, gamma=torch.tensor(0.5)).item() == ops.soft_dtw(cost, gamma=0.5).item()
    assert ops.gak(x, x, sigma=np.float64(2.0)).item() == ops.gak(x, x, sigma=torch.tensor(2.0)).item()
    with pytest.raises(TypeError, match="gak: normalized must be True or False, got str 'false'"):
        ops.gak(x, x, normalized="false")
    with pytest.raises(TypeError, match="gak_from_cost: normalized must be True or False"):
        ops.gak_from_cost(torch.rand(1, 2, 2), normalized=0)
    with pytest.raises(TypeError, match="soft_dtw: gamma must be a real number, got bool True"):
        ops.soft_dtw(torch.rand(2, 3), gamma=True)
    with pytest.raises(TypeError, match="gak: sigma must be a real number"):
        ops.gak(x, x, sigma="2")
    assert ops.gak(x, x, normalized=np.bool_(False)).item() == ops.gak(x, x, normalized=False).item()
    learned = torch.tensor(0.5, requires_grad=True)  # .item() cut it from the graph: gamma.grad stayed None
    with pytest.raises(TypeError, match=r"soft_dtw: gamma is a tensor that requires grad, but no gradient flows"):
        ops.soft_dtw(cost, gamma=learned)
    with pytest.raises(TypeError, match=r"gak: sigma is a tensor that requires grad"):
        ops.gak(x, x, sigma=learned)


def test_gak_names_the_features_at_fault():
    """A NaN in x, or float32 features whose squared distances overflow, were reported as a
    non-finite "x-y cost", which the caller never passed; a meta cost leaked Tensor.item()'s error."""
    x, y = torch.rand(2, 3, 4), torch.rand(2, 5, 4)
    with pytest.raises(ValueError, match="gak: y has a non-finite entry"):
        ops.gak(x, y.masked_fill(y > 0.5, float("nan")))
    with pytest.raises(ValueError, match="gak: the squared distances of x( and y)? overflow Float .*float64"):
        ops.gak(x * 1e20, y)
    assert torch.isfinite(ops.gak(x.double() * 1e20, y.double(), normalized=False)).all()
    with pytest.raises(ValueError, match="soft_dtw: cost must be on the CPU or a CUDA device, got meta"):
        ops.soft_dtw(torch.rand(2, 3, 4, device="meta"))
    with pytest.raises(ValueError, match="gak: x must be on the CPU or a CUDA device, got meta"):
        ops.gak(torch.rand(2, 3, 4, device="meta"), torch.rand(2, 3, 4, device="meta"))
    with pytest.raises(ValueError, match="gak: the cost must be on the CPU or a CUDA device, got meta"):
        ops.gak_from_cost(torch.rand(2, 3, 4, device="meta"), normalized=False)
    m = torch.rand(2, 3, 4, device="meta")  # shapes only: the op runs on meta
    assert ops.triple_kernel_cost(m, m, torch.ones(2, 3, dtype=torch.bool, device="meta"), m, m,
                                  torch.ones(2, 3, dtype=torch.bool, device="meta")).shape == (2, 3, 3)


def test_triple_kernel_cost_gradients_in_double():
    """Near-identical pairs (distance ~1e-10) among the others."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 5, dtype=torch.float64)
    y = torch.cat([x[:, :2] + 1e-5 * torch.randn(1, 2, 5, dtype=torch.float64), torch.randn(1, 2, 5, dtype=torch.float64)], 1)
    flags_x, flags_y = torch.tensor([[True, False, True]]), torch.tensor([[True, False, False, True]])
    assert (ops.triple_kernel_cost(x, x, flags_x, y, y, flags_y) < 1e-6).sum() == 2
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.triple_kernel_cost(a, a * 2, flags_x, b, b * 2, flags_y), (x, y))


def test_triple_kernel_cost_tiny_norms_and_duplicates_at_scale():
    """A block whose norm is under F.normalize's clamp is not a unit vector (it read as one:
    distance 2 from itself); 512 identical rows, every pair summed directly, keep memory bounded
    with gradients on (each chunk's graph was kept: 3 GB)."""
    import resource

    unit = torch.nn.functional.normalize
    tiny = torch.full((1, 2, 8), 1e-20, dtype=torch.float64)
    tiny[0, 1] = 0
    flags = torch.zeros(1, 2, dtype=torch.bool)
    want = (unit(tiny, dim=-1).unsqueeze(2) - unit(tiny, dim=-1).unsqueeze(1)).square().sum(-1)
    torch.testing.assert_close(ops.triple_kernel_cost(tiny, tiny, flags, tiny, tiny, flags), want, atol=1e-15, rtol=0)
    same = torch.randn(1, 1, 768).expand(1, 512, 768).contiguous().requires_grad_(True)
    flags = torch.zeros(1, 512, dtype=torch.bool)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cost = ops.triple_kernel_cost(same, same, flags, same, same, flags)
    cost.sum().backward()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert cost.abs().max() == 0 and torch.isfinite(same.grad).all()
    assert grown_mib < 200, grown_mib


def test_triple_kernel_cost_rounds_the_exact_value_once_and_follows_f_normalize_gradients():
    """`d + (exact - d)` rounded twice in float32 (a distance of 1e-12 came back 1.2e-2 off, 1e-14
    as 0; bf16 lost most); a block under F.normalize's clamp had its |unit|^2 detached (gradients
    6 % off F.normalize's)."""
    torch.manual_seed(2)
    x = torch.randn(1, 16, 768, dtype=torch.float64)
    y = x + 1e-6 * torch.randn(1, 16, 768, dtype=torch.float64)
    flags = torch.zeros(1, 16, dtype=torch.bool)
    unit = torch.nn.functional.normalize
    for dtype, rel in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        a, b = x.to(dtype), y.to(dtype)
        want = (unit(a.double(), dim=-1).unsqueeze(2) - unit(b.double(), dim=-1).unsqueeze(1)).square().sum(-1)
        got = ops.triple_kernel_cost(a, a, flags, b, b, flags)
        near = want < 1e-2  # the 16 near-identical pairs: exactly the float64 value rounded once
        assert near.sum() == 16 and torch.equal(got[near], want.to(dtype)[near])
        torch.testing.assert_close(got[~near].double(), want[~near], rtol=rel, atol=0)
    a = torch.cat([torch.randn(1, 2, 6, dtype=torch.float64), torch.full((1, 1, 6), 1e-13, dtype=torch.float64)], 1)
    a.requires_grad_(True)
    b = torch.randn(1, 3, 6, dtype=torch.float64, requires_grad=True)
    three = torch.zeros(1, 3, dtype=torch.bool)
    weights = torch.randn(1, 3, 3, dtype=torch.float64)
    got = torch.autograd.grad((ops.triple_kernel_cost(a, a, three, b, b, three) * weights).sum(), (a, b))
    ref = lambda u, v: (unit(u, dim=-1).unsqueeze(2) - unit(v, dim=-1).unsqueeze(1)).square().sum(-1)  # noqa: E731
    want = torch.autograd.grad((ref(a, b) * weights).sum(), (a, b))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9 * w.abs().max().item())
