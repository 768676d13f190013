"""The L2-normalised EMA vector quantizer of VQ-KD (Peng et al. 2022, BEiT v2): codes and inputs
live on the unit sphere, lookup is by cosine similarity, gradients pass straight through
(Bengio et al. 2013), and the codebook moves by exponential moving averages of the inputs
assigned to each code, not by gradients. With torch.distributed initialised, the assignment
counts and sums are all-reduced before the update, so every rank keeps the same codebook.
Codes that fall out of use (bias-corrected EMA count below `dead_code_threshold`) can be
restarted on recent inputs (`restart_dead_codes`, rank 0's choice broadcast). BEiT v2 has no
restart; it starts the codebook from k-means over the first batch (`kmeans_init`, as here: ten
spherical k-means iterations, empty clusters keep their mean). Across ranks the first batches are
gathered and rank 0's clustering is broadcast, where BEiT v2 let each rank cluster its own batch
and the codebooks drift apart.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor   # [..., dim] codes, with the straight-through gradient of the normalised input
    indices: torch.Tensor     # [...] int64 code ids
    loss: torch.Tensor        # [] beta * ||sg(code) - z||^2 (commitment)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def spherical_kmeans(samples: torch.Tensor, k: int, iters: int = 10,
                     generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(means [k, dim], cluster sizes [k]) of unit-norm `samples` [n, dim] by k-means under cosine
    similarity, as BEiT v2's `kmeans(..., use_cosine_sim=True)`: the first means are k distinct
    samples (drawn with replacement when there are fewer than k), each iteration assigns every
    sample to its most similar mean and renormalises the members' average; a mean with no members
    stays where it was. The sizes are those of the last assignment."""
    n = samples.shape[0]
    if n == 0:
        raise ValueError("k-means initialisation of the codebook needs at least one input vector")
    device = samples.device
    pick = (torch.randperm(n, generator=generator)[:k] if n >= k
            else torch.randint(0, n, (k,), generator=generator))
    means = samples[pick.to(device)]
    sizes = torch.zeros(k, dtype=torch.long, device=device)
    for _ in range(iters):
        assign = (samples @ means.t()).argmax(-1)
        sizes = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(means).index_add_(0, assign, samples)
        new = F.normalize(sums / sizes.clamp(min=1).unsqueeze(1).to(sums.dtype), dim=-1)
        means = torch.where((sizes == 0).unsqueeze(1), means, new)
    return means, sizes


def _gather_rows(flat: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, in rank order (ranks may hold different numbers of rows)."""
    counts = [torch.zeros((), dtype=torch.long, device=flat.device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor(len(flat), device=flat.device))
    most = int(max(counts))
    padded = torch.zeros(most, flat.shape[1], dtype=flat.dtype, device=flat.device)
    padded[:len(flat)] = flat
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(c)] for p, c in zip(parts, counts)])


class NormEMAQuantizer(nn.Module):
    def __init__(self, codebook_size: int, dim: int, decay: float = 0.99, beta: float = 1.0,
                 dead_code_threshold: float = 0.0, kmeans_init: bool = False):
        super().__init__()
        if codebook_size <= 0:
            raise ValueError(f"codebook_size must be positive, got {codebook_size}")
        if dim <= 0:
            raise ValueError(f"codebook_dim must be positive, got {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.codebook_size, self.dim, self.decay, self.beta = int(codebook_size), int(dim), float(decay), float(beta)
        self.dead_code_threshold = float(dead_code_threshold)
        # Buffers, not parameters: the codebook follows the EMA, and checkpoints carry it.
        # With k-means, the codebook is zero until the first forward clusters its inputs (`initted`).
        start = torch.zeros(codebook_size, dim) if kmeans_init else F.normalize(torch.randn(codebook_size, dim), dim=-1)
        self.register_buffer("embedding", start)
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        # EMA updates so far: the counts start at zero, so after t updates a code used c times per
        # step has d-weighted count c (1 - d^t); restarts compare the bias-corrected count.
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self._recent: Optional[torch.Tensor] = None  # last inputs seen in training (dead-code restarts)

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}, decay={self.decay}, beta={self.beta}"

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        if z.shape[-1] != self.dim:
            raise ValueError(f"quantizer input must end in codebook_dim {self.dim}, got shape {tuple(z.shape)}")
        z = F.normalize(z, dim=-1)
        flat = z.reshape(-1, self.dim)
        if not bool(self.initted):  # BEiT v2 clusters the first batch it sees, in any mode
            if _distributed() and not self.training:
                # Evaluation may run on rank 0 alone, where gathering the ranks' rows would wait
                # for ranks that never come.
                raise RuntimeError("the VQ-KD codebook is not initialised: under torch.distributed, k-means runs on "
                                   "the first training batch (were all steps so far skipped?)")
            self.kmeans_init_(flat.detach())
        codebook = self.embedding.to(flat.dtype)
        indices = (flat @ codebook.t()).argmax(-1)  # nearest code by cosine similarity
        codes = codebook[indices].view_as(z)
        if self.training:
            self.ema_update(flat.detach(), indices)
            self._recent = flat.detach()
        loss = self.beta * F.mse_loss(codes.detach(), z)
        return QuantizerOutput(z + (codes - z).detach(), indices.view(z.shape[:-1]), loss)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """cluster_size <- d*cluster_size + (1-d)*counts; each used code moves towards the
        normalised mean of its inputs and is renormalised; unused codes stay."""
        onehot = F.one_hot(indices, self.codebook_size).to(torch.float32)
        counts = onehot.sum(0)
        sums = onehot.t() @ flat.to(torch.float32)  # [K, dim]
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.updates.add_(1)
        means = F.normalize(sums / counts.clamp(min=1).unsqueeze(1), dim=-1)
        target = torch.where((counts > 0).unsqueeze(1), means, self.embedding)
        self.embedding.mul_(self.decay).add_(target, alpha=1 - self.decay)
        self.embedding.copy_(F.normalize(self.embedding, dim=-1))

    @torch.no_grad()
    def kmeans_init_(self, flat: torch.Tensor, generator: Optional[torch.Generator] = None) -> None:
        """Starts the codebook from spherical k-means over `flat` [n, dim] (unit rows): every rank's
        rows gathered and put in one order, rank 0 clusters, all take its codebook. The EMA counts
        stay at zero, as in BEiT v2 (its k-means sizes go to a statistic nothing reads)."""
        with torch.autocast(flat.device.type, enabled=False):  # bf16 keys tie and reorder rows
            rows = (_gather_rows(flat) if _distributed() else flat).to(self.embedding.dtype)
            # Rows in an order of their own (by a fixed projection, in float64 so that only equal
            # rows tie), so that the clustering depends on the batch, not on how it was split
            # across ranks: two ranks start where one process does.
            key = torch.linspace(1.0, 2.0, self.dim, dtype=torch.float64, device=rows.device)
            rows = rows[torch.argsort(rows.double() @ key, stable=True)]
            means = spherical_kmeans(rows, self.codebook_size, generator=generator)[0]
        self.embedding.copy_(means.to(self.embedding))
        if _distributed():
            dist.broadcast(self.embedding, 0)
        self.initted.fill_(True)

    @torch.no_grad()
    def restart_dead_codes(self, generator: Optional[torch.Generator] = None) -> int:
        """Moves codes whose EMA count is below `dead_code_threshold` onto random recent inputs
        (rank 0 chooses; broadcast). Returns how many were restarted."""
        if self.dead_code_threshold <= 0 or self._recent is None:
            return 0
        # Bias-corrected, as Adam corrects its moments: uncorrected, codes in use at step 1 (count
        # c (1 - d)) fell under the threshold and were moved.
        warmed = 1.0 - self.decay ** float(self.updates)
        dead = self.cluster_size < self.dead_code_threshold * max(warmed, 1e-12)
        n = int(dead.sum())
        if n:
            pick = torch.randint(len(self._recent), (n,), generator=generator).to(self._recent.device)
            self.embedding[dead] = self._recent[pick].to(self.embedding.dtype)
            self.cluster_size[dead] = self.dead_code_threshold
        if _distributed():
            dist.broadcast(self.embedding, 0)
            dist.broadcast(self.cluster_size, 0)
        return n

    # Checkpoints written before `updates` and `initted` existed: their EMA has run for a whole
    # training and their codebook is trained (read by load_state_dict below and by the trainer's
    # resume from DCP).
    checkpoint_defaults = {"updates": 1 << 30, "initted": True}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name, value in self.checkpoint_defaults.items():
            state_dict.setdefault(prefix + name, torch.tensor(value))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def usage(self) -> dict:
        """Codebook statistics from the EMA counts: the fraction of codes in use and the
        perplexity (exp of the entropy of code frequencies; K when all are used equally)."""
        total = float(self.cluster_size.sum())
        if total <= 0:
            return {"codes_used": 0.0, "perplexity": 0.0}
        p = self.cluster_size / total
        entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()
        return {"codes_used": float((self.cluster_size > 1e-3 * total / self.codebook_size).float().mean()),
                "perplexity": float(entropy.exp())}
