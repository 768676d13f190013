"""tessera.losses (C++ math in tessera._C.losses) against plain formulas written here and against
open_clip; gradcheck in float64; and two Gloo processes (DDP over a small two-tower model) against
one process on the combined batch, the equivalence documented in tessera/losses/distributed.py."""
import datetime
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tessera import _C
from tessera.train.distributed import shutdown_distributed
from tessera.losses import ClipLoss, SigLipLoss, all_gather_with_grad, clamp_logit_scale, gather_features

from _spawn import spawn_ranks

F64 = torch.float64
SIZES = [(1, 3), (2, 5), (5, 8), (9, 4), (16, 32)]


# ---- plain formulas --------------------------------------------------------------------------

def plain_clip(img, txt, scale):
    """mean over both directions of logsumexp(row) - positive logit."""
    logits = scale * img @ txt.T
    pos = logits.diagonal()
    return ((logits.logsumexp(1) - pos).mean() + (logits.logsumexp(0) - pos).mean()) / 2


def plain_siglip(img, txt, scale, bias):
    """sum over pairs of softplus(-z * logit) / B, z = +1 on the diagonal, -1 elsewhere."""
    logits = scale * img @ txt.T + bias
    z = 2 * torch.eye(img.shape[0], dtype=img.dtype) - 1
    return torch.log1p(torch.exp(-z * logits)).sum() / img.shape[0]


def _features(b, d, dtype=F64, normalize=True):
    img, txt = torch.randn(b, d, dtype=dtype), torch.randn(b, d, dtype=dtype)
    if normalize:
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    return img.requires_grad_(), txt.requires_grad_()


def _grads(loss, leaves):
    return torch.autograd.grad(loss, leaves)


# ---- single process --------------------------------------------------------------------------

@pytest.mark.parametrize("b,d", SIZES)
def test_clip_loss_matches_formula(b, d):
    img, txt = _features(b, d)
    scale = torch.tensor(14.3, dtype=F64, requires_grad=True)
    ours = ClipLoss()(img, txt, scale)
    ref = plain_clip(img, txt, scale)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    for g, r in zip(_grads(ours, (img, txt, scale)), _grads(ref, (img, txt, scale))):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-12)
    out = ClipLoss()(img, txt, 14.3, output_dict=True)  # a float scale, as open_clip allows
    assert set(out) == {"contrastive_loss"}
    torch.testing.assert_close(out["contrastive_loss"], ref.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("b,d", SIZES)
def test_siglip_loss_matches_formula(b, d):
    img, txt = _features(b, d)
    scale = torch.tensor(10.0, dtype=F64, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=F64, requires_grad=True)
    ours = SigLipLoss()(img, txt, scale, bias)
    ref = plain_siglip(img, txt, scale, bias)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(_grads(ours, (img, txt, scale, bias)), _grads(ref, (img, txt, scale, bias))):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    assert set(SigLipLoss()(img, txt, scale, bias, output_dict=True)) == {"contrastive_loss"}


@pytest.mark.parametrize("b,d", [(1, 4), (7, 16), (32, 64)])
def test_single_process_matches_open_clip_float32(b, d):
    open_clip_loss = pytest.importorskip("open_clip.loss")
    img, txt = _features(b, d, dtype=torch.float32)
    scale = torch.tensor(50.0, requires_grad=True)
    bias = torch.tensor(-5.0, requires_grad=True)
    for ours, theirs, args in [
        (ClipLoss(), open_clip_loss.ClipLoss(), (scale,)),
        (SigLipLoss(), open_clip_loss.SigLipLoss(), (scale, bias)),
    ]:
        leaves = (img, txt) + args
        a, r = ours(img, txt, *args), theirs(img, txt, *args)
        torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-6)
        for g, h in zip(_grads(a, leaves), _grads(r, leaves)):
            torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-6)


def test_gradcheck_through_cpp():
    b, world, d = 3, 2, 4
    img, txt = _features(b, d)
    all_img, all_txt = _features(world * b, d)
    scale = torch.tensor(3.0, dtype=F64, requires_grad=True)
    bias = torch.tensor(-1.5, dtype=F64, requires_grad=True)
    L = _C.losses

    def clip(i, t, s):
        return L.clip_loss(i, t, s)["contrastive_loss"]

    def clip_gathered(i, t, ai, at, s, local):
        return L.clip_loss(i, t, s, all_image_features=ai, all_text_features=at, local_loss=local,
                           rank=1)["contrastive_loss"]

    def siglip(i, t, s, bb):
        return L.siglip_loss(i, t, s, logit_bias=bb)["contrastive_loss"]

    def siglip_gathered(i, at, s, bb):
        return L.siglip_loss(i, at[b:2 * b], s, logit_bias=bb, all_text_features=at, rank=1)["contrastive_loss"]

    assert torch.autograd.gradcheck(clip, (img, txt, scale))
    assert torch.autograd.gradcheck(lambda *a: clip_gathered(*a, True), (img, txt, all_img, all_txt, scale))
    assert torch.autograd.gradcheck(lambda *a: clip_gathered(*a, False), (img, txt, all_img, all_txt, scale))
    assert torch.autograd.gradcheck(siglip, (img, txt, scale, bias))
    assert torch.autograd.gradcheck(siglip_gathered, (img, all_txt, scale, bias))
    assert torch.autograd.gradgradcheck(clip, (img, txt, scale))


def test_clip_label_cache():
    loss = ClipLoss(cache_labels=True)
    first = loss.get_ground_truth(torch.device("cpu"), 4)
    assert loss.get_ground_truth(torch.device("cpu"), 4) is first
    assert torch.equal(loss.get_ground_truth(torch.device("cpu"), 6), torch.arange(6))
    local = ClipLoss(local_loss=True, rank=2, world_size=4)
    assert torch.equal(local.get_ground_truth(torch.device("cpu"), 3), torch.arange(6, 9))
    assert ClipLoss().get_ground_truth(torch.device("cpu"), 3) is not ClipLoss().get_ground_truth(
        torch.device("cpu"), 3)


def test_clamp_logit_scale_clamps_the_log_parameter_in_place():
    p = nn.Parameter(torch.tensor(6.0))
    assert clamp_logit_scale(p) is p
    assert p.item() == pytest.approx(math.log(100))
    assert p.requires_grad and p.grad_fn is None
    with torch.no_grad():
        p.fill_(-2.0)
    clamp_logit_scale(p, max=20.0)
    assert p.item() == 0.0


def test_bad_input_errors():
    img, txt = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="same shape"):
        ClipLoss()(img, txt[:3], 1.0)
    with pytest.raises(ValueError, match="scalar"):
        SigLipLoss()(img, txt, torch.ones(2), -1.0)
    with pytest.raises(ValueError, match="neither"):
        _C.losses.clip_loss(img, txt, torch.tensor(1.0), all_image_features=torch.randn(8, 8))
    with pytest.raises(TypeError, match="int64"):
        _C.losses.clip_loss(img, txt, torch.tensor(1.0), labels=torch.arange(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="dist_impl"):
        SigLipLoss(dist_impl="ring")


# ---- two processes ---------------------------------------------------------------------------
# One spawn runs every distributed case (starting processes is the slow part); each rank saves
# its results and the tests below compare them with one process on the combined batch.

WORLD, LOCAL_B = 2, 3
TOWER_CASES = {
    "clip_global": dict(loss="clip", local_loss=False, gather_with_grad=True),
    "clip_local": dict(loss="clip", local_loss=True, gather_with_grad=True),
    "clip_global_nograd": dict(loss="clip", local_loss=False, gather_with_grad=False),
    "clip_local_nograd": dict(loss="clip", local_loss=True, gather_with_grad=False),
    "siglip": dict(loss="siglip"),
}


class Towers(nn.Module):
    """Two linear towers with normalised outputs and a learnable temperature (and SigLIP bias)."""

    def __init__(self, siglip=False, image_dim=6, text_dim=5, embed_dim=4):
        super().__init__()
        self.image = nn.Linear(image_dim, embed_dim)
        self.text = nn.Linear(text_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0) if siglip else math.log(1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0)) if siglip else None

    def forward(self, images, texts):
        return (F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1),
                self.logit_scale.exp(), self.logit_bias)


def _tower_inputs():
    g = torch.Generator().manual_seed(1234)
    n = WORLD * LOCAL_B
    return torch.randn(n, 6, generator=g, dtype=F64), torch.randn(n, 5, generator=g, dtype=F64)


def _towers(case):
    torch.manual_seed(99)
    return Towers(siglip=TOWER_CASES[case]["loss"] == "siglip").double()


def _make_loss(case, rank, world, impl):
    c = TOWER_CASES[case]
    if impl == "open_clip":
        import open_clip.loss as lib
    else:
        import tessera.losses as lib
    if c["loss"] == "siglip":
        return lib.SigLipLoss(rank=rank, world_size=world)
    return lib.ClipLoss(local_loss=c["local_loss"], gather_with_grad=c["gather_with_grad"], rank=rank,
                        world_size=world)


def _run_towers(model, loss_fn, images, texts):
    img, txt, scale, bias = model(images, texts)
    args = (scale,) if bias is None else (scale, bias)
    loss = loss_fn(img, txt, *args)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _gather_objective(q, g):
    """A rank-dependent function of the gathered batch, rank q's share of the joint objective."""
    w = torch.randn(g.shape[1], 3, generator=torch.Generator().manual_seed(100 + q), dtype=g.dtype)
    return (q + 1) * torch.sin(g @ w).pow(2).sum()


def _gather_inputs():
    return torch.randn(WORLD * LOCAL_B, 4, generator=torch.Generator().manual_seed(7), dtype=F64)


def _dist_worker(rank, world, init_file, out_dir):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        res = {}
        # The gather Function alone: gathered values, and the gradient of the joint objective.
        x = _gather_inputs()[rows].clone().requires_grad_()
        g = all_gather_with_grad(x)
        res["gathered"] = g.detach().clone()
        _gather_objective(rank, g).backward()
        res["gather_grad"] = x.grad.clone()
        # Without grad: values gathered, only this rank's spliced block carries a gradient.
        y = _gather_inputs()[rows].clone().requires_grad_()
        gi, gt = gather_features(y, 2 * y, gather_with_grad=False, rank=rank, world_size=world)
        (gi.sum() + gt.pow(2).sum()).backward()
        res["nograd_gathered"], res["nograd_grad"] = gi.detach().clone(), y.grad.clone()
        # DDP over the towers, with our loss and with open_clip's.
        images, texts = _tower_inputs()
        for case in TOWER_CASES:
            for impl in ("tessera", "open_clip"):
                model = DDP(_towers(case))
                loss, grads = _run_towers(model, _make_loss(case, rank, world, impl), images[rows], texts[rows])
                res[(case, impl)] = (loss, {n.removeprefix("module."): v for n, v in grads.items()})
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
        shutdown_distributed()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    spawn_ranks(_dist_worker, (WORLD, str(tmp / "init"), str(tmp)), WORLD)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _single_process(case):
    model = _towers(case)
    images, texts = _tower_inputs()
    return _run_towers(model, _make_loss(case, 0, 1, "tessera"), images, texts)


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_gather_with_grad_backward_equals_one_process(dist_results):
    x = _gather_inputs().requires_grad_()
    sum(_gather_objective(q, x) for q in range(WORLD)).backward()
    for rank, res in enumerate(dist_results):
        torch.testing.assert_close(res["gathered"], x.detach(), rtol=0, atol=0)
        torch.testing.assert_close(res["gather_grad"], x.grad[rank * LOCAL_B:(rank + 1) * LOCAL_B],
                                   rtol=0, atol=1e-12)


def test_gather_without_grad_splices_the_local_block(dist_results):
    x = _gather_inputs()
    for rank, res in enumerate(dist_results):
        torch.testing.assert_close(res["nograd_gathered"], x, rtol=0, atol=0)
        # d/dy [sum(y) + sum((2y)^2)] through this rank's own block only.
        torch.testing.assert_close(res["nograd_grad"], 1 + 8 * x[rank * LOCAL_B:(rank + 1) * LOCAL_B])


@pytest.mark.parametrize("case", ["clip_global", "clip_local", "siglip"])
def test_ddp_equals_one_process_on_the_combined_batch(dist_results, case):
    loss, grads = _single_process(case)
    losses = [res[(case, "tessera")][0] for res in dist_results]
    if case == "clip_global":
        for per_rank in losses:  # every rank computes the whole [N, N] loss
            torch.testing.assert_close(per_rank, loss, rtol=0, atol=1e-12)
    # Each rank's loss is 1/W of the joint objective's share: their mean is the one-process loss.
    torch.testing.assert_close(sum(losses) / WORLD, loss, rtol=0, atol=1e-12)
    for res in dist_results:  # DDP averaged: the same on every rank, and equal to one process
        ddp_grads = res[(case, "tessera")][1]
        assert set(ddp_grads) == set(grads)
        assert _max_diff(ddp_grads, grads) <= 1e-9


def test_ddp_without_gather_grad_scales_tower_grads(dist_results):
    # open_clip's default (gather_with_grad=False), global loss: each rank sees only its own rows'
    # path, so after DDP averaging the tower gradients are 1/W of one process's, while the
    # temperature, computed whole on every rank, gets the full gradient.
    loss, grads = _single_process("clip_global_nograd")
    for res in dist_results:
        got_loss, got = res[("clip_global_nograd", "tessera")]
        torch.testing.assert_close(got_loss, loss, rtol=0, atol=1e-12)
        torch.testing.assert_close(got["logit_scale"], grads["logit_scale"], rtol=0, atol=1e-12)
        for name in ("image.weight", "image.bias", "text.weight", "text.bias"):
            torch.testing.assert_close(got[name], grads[name] / WORLD, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", list(TOWER_CASES))
def test_ddp_equals_open_clip(dist_results, case):
    for res in dist_results:
        loss, grads = res[(case, "tessera")]
        ref_loss, ref_grads = res[(case, "open_clip")]
        torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-12)
        assert _max_diff(grads, ref_grads) <= 1e-12
