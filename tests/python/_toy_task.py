"""A second task, defined outside tessera: least squares on masked tokens, with a token-weighted
loss. `tessera train --import _toy_task` finds it (tests put this folder on PYTHONPATH)."""
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from tessera.train import Task, TensorLoader, TokenLoss, register_task


@dataclass
class ToyData:
    samples: int = 256
    tokens: int = 6
    dim: int = 8
    batch_size: int = 16
    eval_sleep_s: float = 0.0    # a slow evaluation (rank 0's, while the others wait)
    plot_sleep_s: float = 0.0    # slow plots at the end (rank 0's)
    manifest_sleep_s: float = 0.0  # a slow disk under the checkpoint files rank 0 writes alone
    stall_rank: int = -1         # this rank sleeps stall_s before step stall_step (a stalled rank)
    stall_step: int = 1
    stall_s: float = 0.0


def toy_tensors(samples: int, tokens: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, tokens, dim, generator=g)
    w = torch.randn(dim, dim, generator=torch.Generator().manual_seed(1234))  # the same target for every split
    lengths = torch.randint(1, tokens + 1, (samples,), generator=g)
    mask = torch.arange(tokens)[None, :] < lengths[:, None]  # a different number of valid tokens per row
    return {"x": x, "y": x @ w, "mask": mask}


class ToyModel(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.proj(self.norm(x) + x)


@register_task("toy_regression")
class ToyRegression(Task):
    sections = {"data": ToyData}

    def build_model(self):
        if self.recipe.data.manifest_sleep_s:
            from tessera.train import checkpoint

            real, pause = checkpoint.write_manifest, self.recipe.data.manifest_sleep_s
            checkpoint.write_manifest = lambda folder: (time.sleep(pause), real(folder))[1]
        return ToyModel(self.recipe.data.dim)

    def train_loader(self, rank, world_size):
        d = self.recipe.data
        return TensorLoader(toy_tensors(d.samples, d.tokens, d.dim), d.batch_size, seed=self.recipe.train.seed,
                            rank=rank, world_size=world_size)

    def compute_loss(self, wrapped, model, batch, step):
        d = self.recipe.data
        if d.stall_s and step == d.stall_step and dist.is_initialized() and dist.get_rank() == d.stall_rank:
            time.sleep(d.stall_s)
        err = (wrapped(batch["x"]) - batch["y"]).pow(2).sum(-1)
        mask = batch["mask"]
        return {"loss": TokenLoss(err[mask].sum(), int(mask.sum()))}

    def plot(self, out_dir, metrics_path, metrics):
        time.sleep(self.recipe.data.plot_sleep_s)

    def evaluate(self, model, final=False):
        d = self.recipe.data
        time.sleep(d.eval_sleep_s)
        t = toy_tensors(64, d.tokens, d.dim, seed=1)
        with torch.no_grad():
            err = (model(t["x"]) - t["y"]).pow(2).sum(-1)[t["mask"]].mean()
        return {"eval_mse": float(err)}
