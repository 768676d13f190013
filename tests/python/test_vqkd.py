"""VQ-KD's quantizer against its formulas (nearest code by cosine, straight-through gradient,
EMA update by hand, dead-code restart), the EMA kept identical across two gloo ranks and equal
to one process on the joined batch, and the tokenizer model (loss formula, save/load, errors)."""
import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import tessera
from tessera.models import NormEMAQuantizer
from tessera.train.distributed import shutdown_distributed

from _spawn import spawn_ranks

F64 = torch.float64


def _quantizer(k=6, d=4, decay=0.8, **kw):
    torch.manual_seed(0)
    return NormEMAQuantizer(k, d, decay=decay, **kw).double()


def test_lookup_is_the_nearest_code_by_cosine():
    q = _quantizer().eval()
    z = torch.randn(3, 5, 4, dtype=F64)
    out = q(z)
    zn, e = F.normalize(z, dim=-1), q.embedding
    brute = torch.tensor([[max(range(6), key=lambda j: float(zn[b, i] @ e[j])) for i in range(5)] for b in range(3)])
    assert torch.equal(out.indices, brute)
    torch.testing.assert_close(out.quantized, e[brute])
    torch.testing.assert_close(out.loss, F.mse_loss(e[brute], zn))  # beta = 1


def test_straight_through_gradient_is_that_of_the_normalisation():
    q = _quantizer().eval()
    z = torch.randn(2, 5, 4, dtype=F64, requires_grad=True)
    w = torch.randn(2, 5, 4, dtype=F64)
    (got,) = torch.autograd.grad((q(z).quantized * w).sum(), z)
    (expect,) = torch.autograd.grad((F.normalize(z, dim=-1) * w).sum(), z)
    torch.testing.assert_close(got, expect)
    # The commitment term is smooth where the assignment does not change: gradcheck in double.
    assert torch.autograd.gradcheck(lambda t: q(t).loss, (z,), eps=1e-7, atol=1e-6)


def test_ema_update_equals_the_formula_by_hand():
    q = _quantizer(decay=0.8).train()
    e0, z = q.embedding.clone(), torch.randn(10, 4, dtype=F64)
    out = q(z)
    zn = F.normalize(z, dim=-1)
    e, size = e0.clone(), torch.zeros(6, dtype=F64)
    for j in range(6):
        members = zn[out.indices == j]
        size[j] = 0.2 * len(members)
        if len(members):
            mean = F.normalize(members.sum(0) / len(members), dim=0)
            e[j] = F.normalize(0.8 * e0[j] + 0.2 * mean, dim=0)
    torch.testing.assert_close(q.embedding, e)
    torch.testing.assert_close(q.cluster_size, size)
    assert not torch.equal(q.embedding, e0)
    q.eval()
    before = q.embedding.clone()
    q(z)
    assert torch.equal(q.embedding, before), "no update outside training"


def test_dead_codes_restart_on_recent_inputs_and_usage_counts_codes():
    q = _quantizer(k=8, decay=0.5, dead_code_threshold=0.5).train()
    z = torch.randn(1, 6, 4, dtype=F64) * torch.tensor([1.0, 0, 0, 0], dtype=F64) + torch.tensor([3.0, 0, 0, 0],
                                                                                                   dtype=F64)
    q(z)  # every input is ~e_x: one or two codes take all of them
    dead = q.cluster_size < 0.5
    assert dead.sum() >= 6
    assert q.usage()["codes_used"] < 0.5 and q.usage()["perplexity"] < 3
    n = q.restart_dead_codes(torch.Generator().manual_seed(0))
    assert n == int(dead.sum())
    recent = F.normalize(z.reshape(-1, 4), dim=-1)
    for row in q.embedding[dead]:
        assert torch.isclose((recent - row).abs().sum(1), torch.zeros((), dtype=F64), atol=1e-12).any()
    assert (q.cluster_size[dead] == 0.5).all()


def test_bad_quantizer_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="codebook_size must be positive, got 0"):
        NormEMAQuantizer(0, 4)
    with pytest.raises(ValueError, match="codebook_size must be a positive integer, got 0"):
        tessera.VQKD({"codebook_size": 0})
    with pytest.raises(ValueError, match="codebook_dim 4"):
        NormEMAQuantizer(3, 4)(torch.randn(2, 5))


# ---- k-means initialisation (BEiT v2's `kmeans_init`) ----------------------------------------
def _beit2_kmeans(samples, k, iters=10):
    """BEiT v2's kmeans(..., use_cosine_sim=True), restated from its definition (global RNG)."""
    n = len(samples)
    means = samples[torch.randperm(n)[:k]] if n >= k else samples[torch.randint(0, n, (k,))]
    for _ in range(iters):
        buckets = (samples @ means.t()).max(-1).indices
        bins = torch.bincount(buckets, minlength=k)
        new = torch.zeros(k, samples.shape[1], dtype=samples.dtype)
        for i, b in enumerate(buckets.tolist()):
            new[b] += samples[i]
        new = F.normalize(new / bins.masked_fill(bins == 0, 1)[:, None], dim=-1)
        means = torch.where((bins == 0)[:, None], means, new)
    return means, bins


@pytest.mark.parametrize("n", [40, 4])  # more inputs than codes, and fewer (drawn with replacement)
def test_first_forward_starts_the_codebook_from_beit2_kmeans(n):
    q = _quantizer(k=6, kmeans_init=True).train()
    assert not q.initted and not q.embedding.any()
    z = torch.randn(1, n, 4, dtype=F64)
    torch.manual_seed(5)
    q(z)
    torch.manual_seed(5)
    rows = F.normalize(z.reshape(-1, 4), dim=-1)  # tessera orders the rows first (rank-split invariance)
    means, _ = _beit2_kmeans(rows[torch.argsort(rows @ torch.linspace(1, 2, 4, dtype=F64))], 6)
    e = means.clone()  # then one EMA step, as the reference's forward does after its init
    out_idx = (F.normalize(z.reshape(-1, 4), dim=-1) @ means.t()).argmax(-1)
    for j in range(6):
        members = F.normalize(z.reshape(-1, 4), dim=-1)[out_idx == j]
        if len(members):
            e[j] = F.normalize(0.8 * means[j] + 0.2 * F.normalize(members.mean(0), dim=0), dim=0)
    torch.testing.assert_close(q.embedding, e)
    assert q.initted and torch.equal(q.updates, torch.tensor(1))
    after = q.embedding.clone()
    q.eval()(z)
    assert torch.equal(q.embedding, after), "k-means runs once"


def test_kmeans_start_does_not_depend_on_row_order_under_bf16_autocast():
    """bf16 keys tie for rows that differ: the sort then kept the order they came in, which is how
    the batch was split across ranks. The start is computed without autocast, keyed in float64."""
    z = F.normalize(torch.randn(512, 8), dim=-1)
    starts = []
    for order in (torch.arange(512), torch.randperm(512, generator=torch.Generator().manual_seed(1))):
        q = NormEMAQuantizer(32, 8, kmeans_init=True)
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            q.kmeans_init_(z[order].to(torch.bfloat16))
        starts.append(q.embedding.clone())
    assert torch.equal(starts[0], starts[1])


def test_kmeans_state_is_checkpointed_and_old_checkpoints_count_as_initialised():
    q = _quantizer(kmeans_init=True).train()
    q(torch.randn(2, 5, 4, dtype=F64))
    fresh = _quantizer(kmeans_init=True)
    fresh.load_state_dict(q.state_dict())
    assert fresh.initted and torch.equal(fresh.embedding, q.embedding)
    old = {k: v for k, v in q.state_dict().items() if k not in ("initted", "updates")}
    fresh = _quantizer(kmeans_init=True)
    fresh.load_state_dict(old)  # written before k-means existed: its codebook is trained
    assert fresh.initted and torch.equal(fresh.embedding, q.embedding)
    with pytest.raises(ValueError, match="kmeans_init must be true or false, got 'yes'"):
        tessera.VQKD({"kmeans_init": "yes"})
    with pytest.raises(ValueError, match="codebook_size must be a positive integer, got True"):
        tessera.VQKD({"codebook_size": True})


# ---- the EMA across ranks -------------------------------------------------------------------
def _batch(rank):
    return torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(10 + rank), dtype=F64)


def _ema_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        q = _quantizer(dead_code_threshold=0.3, kmeans_init=True).train()
        torch.manual_seed(100 + rank)  # ranks' generators differ: rank 0's clustering is taken
        q(_batch(rank)[:1 + rank])  # ranks may hold different numbers of rows
        torch.save({"embedding": q.embedding}, os.path.join(out_dir, f"kmeans{rank}.pt"))
        # Evaluation may run on one rank: an uninitialised codebook there is refused, never a wait
        # on a gather the other ranks do not join.
        if rank == 0:
            fresh = _quantizer(kmeans_init=True).eval()
            try:
                fresh(_batch(rank))
                raise AssertionError("an uninitialised codebook was used in evaluation")
            except RuntimeError as e:
                assert "not initialised" in str(e)
        q = _quantizer(dead_code_threshold=0.3).train()
        for _ in range(3):
            q(_batch(rank))
        q.restart_dead_codes(torch.Generator().manual_seed(rank))  # ranks choose differently; rank 0 wins
        torch.save({"embedding": q.embedding, "cluster_size": q.cluster_size}, os.path.join(out_dir, f"{rank}.pt"))
        shutdown_distributed()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_ema_is_identical_on_every_rank_and_equals_one_process(tmp_path):
    spawn_ranks(_ema_worker, (2, str(tmp_path / "init"), str(tmp_path)), 2, 120)
    k0, k1 = (torch.load(tmp_path / f"kmeans{r}.pt") for r in range(2))
    one = _quantizer(dead_code_threshold=0.3, kmeans_init=True).train()
    torch.manual_seed(100)
    one(torch.cat([_batch(1)[:2], _batch(0)[:1]]))  # another order: the same clustering
    assert torch.equal(k0["embedding"], k1["embedding"])
    torch.testing.assert_close(k0["embedding"], one.embedding)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in range(2))
    assert torch.equal(r0["embedding"], r1["embedding"]) and torch.equal(r0["cluster_size"], r1["cluster_size"])
    one = _quantizer().train()
    for _ in range(3):
        one(torch.cat([_batch(0), _batch(1)]))
    torch.testing.assert_close(r0["cluster_size"][r0["cluster_size"] >= 0.3], one.cluster_size[one.cluster_size >= 0.3])
    alive = one.cluster_size >= 0.3
    torch.testing.assert_close(r0["embedding"][alive], one.embedding[alive])


# ---- the tokenizer model --------------------------------------------------------------------
_TINY = dict(encoder_config=dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64),
             codebook_size=16, codebook_dim=8, teacher_dim=12)


def test_loss_is_cosine_reconstruction_plus_commitment_and_every_parameter_learns():
    torch.manual_seed(0)
    model = tessera.VQKD(_TINY).train()
    px, target = torch.randn(3, 3, 16, 16), torch.randn(3, 16, 12)
    out = model(px, target=target)
    expect = (1 - F.cosine_similarity(out.reconstruction, target, dim=-1)).mean()
    torch.testing.assert_close(out.rec_loss, expect)
    torch.testing.assert_close(out.loss, expect + out.commit_loss)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert out.indices.shape == (3, 16) and int(out.indices.max()) < 16


def test_save_and_load_round_trip(tmp_path):
    model = tessera.VQKD(_TINY).train()
    px = torch.randn(2, 3, 16, 16)
    model(px)  # an EMA step: the codebook differs from its initial value
    model.save_pretrained(str(tmp_path))
    loaded = tessera.from_pretrained(str(tmp_path))
    assert isinstance(loaded, tessera.VQKD)
    assert torch.equal(loaded.quantize.embedding, model.quantize.embedding)
    assert torch.equal(loaded.get_codebook_indices(px), model.get_codebook_indices(px))
    with pytest.raises(ValueError, match=r"target \(teacher features\) must be \[2, 16, 12\]"):
        model(px, target=torch.randn(2, 16, 5))
