"""One training loop for every objective: a Task supplies the model, the data and the loss;
the Trainer owns optimisation (AdamW, warmup+cosine, clipping, accumulation, bf16 autocast),
DDP, logging (tqdm, metrics.jsonl, plots), non-finite-loss handling and crash-safe checkpoints
with bit-exact resume."""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from typing import Any, Dict, Optional

import torch
from torch import nn

from .. import _C
from ..models.weights import load_weights
from .checkpoint import latest_checkpoint, load_trainer_state, rng_state, save_checkpoint, set_rng_state
from .config import Recipe, recipe_to_dict
from .distributed import DistInfo, all_true, init_distributed, seed_all
from .optim import build_optimizer, warmup_cosine


class TrainingDiverged(RuntimeError):
    """Raised after `max_bad_steps` consecutive non-finite losses."""


class Trainer:
    def __init__(self, recipe: Recipe, task, out_dir: str, info: Optional[DistInfo] = None, progress: bool = True):
        self.recipe = recipe
        self.task = task
        self.out_dir = out_dir
        self.info = info or init_distributed()
        self.progress = progress and self.info.is_main
        self.metrics_path = os.path.join(out_dir, "metrics.jsonl")

    # ---- helpers ------------------------------------------------------------------------
    def _log(self, row: Dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """On resume, forget rows logged after the checkpoint (they will be logged again)."""
        if not self.info.is_main or not os.path.exists(self.metrics_path):
            return
        with open(self.metrics_path, encoding="utf-8") as f:
            rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
        _C.core.write_file_atomic(self.metrics_path, "".join(rows).encode())

    def _autocast(self):
        if self.recipe.train.precision == "bf16":
            return torch.autocast(self.info.device.type, dtype=torch.bfloat16)
        if self.recipe.train.precision != "fp32":
            raise ValueError(f"train.precision must be fp32 or bf16, got {self.recipe.train.precision!r}")
        return nullcontext()

    # ---- the loop -----------------------------------------------------------------------
    def fit(self, resume: bool = False) -> Dict[str, Any]:
        cfg, info = self.recipe, self.info
        t_start = time.time()
        os.makedirs(self.out_dir, exist_ok=True)
        cores = os.cpu_count() or 1
        torch.set_num_threads(cfg.train.threads or max(1, cores // info.world_size))
        seed_all(cfg.train.seed, info.rank)

        model = self.task.build_model().to(info.device)
        if cfg.model.gradient_checkpointing:
            model.set_gradient_checkpointing(True)
        model.train()
        wrapped: nn.Module = model
        if info.world_size > 1:
            ids = [info.device.index] if info.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        optimizer = build_optimizer(model, cfg.optim)
        total = cfg.train.steps
        scheduler = warmup_cosine(optimizer, total, int(cfg.optim.warmup_fraction * total), cfg.optim.min_lr_ratio)
        loader = self.task.train_loader(info.rank, info.world_size)

        step, skipped, bad_in_row = 0, 0, 0
        ckpt = latest_checkpoint(self.out_dir) if resume else None
        if ckpt:
            model.load_state_dict(load_weights(ckpt), strict=True)
            state = load_trainer_state(ckpt)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, skipped = state["step"], state["skipped_steps"]
            loader.load_state_dict(state["data"])
            set_rng_state(state["rng"][info.rank] if isinstance(state["rng"], list) else state["rng"])
            self._truncate_metrics(step)
        elif info.is_main and os.path.exists(self.metrics_path):
            os.remove(self.metrics_path)

        def batches():
            while True:  # the loader resumes mid-epoch after load_state_dict
                yield from loader
                loader.set_epoch(loader.epoch + 1)

        stream = batches()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=step, desc="train", dynamic_ncols=True)
        accum = max(1, cfg.optim.accumulation_steps)
        last_t, samples = time.time(), 0
        first_loss = None
        while step < total:
            terms: Dict[str, float] = {}
            finite = True
            for micro in range(accum):
                batch = next(stream)
                sync = micro == accum - 1 or info.world_size == 1
                ctx = wrapped.no_sync() if not sync and hasattr(wrapped, "no_sync") else nullcontext()
                with ctx:
                    with self._autocast():
                        out = self.task.compute_loss(wrapped, model, batch, step)
                    loss = out["loss"] / accum
                    finite = all_true(bool(torch.isfinite(loss.detach()).all()), info)
                    if not finite:
                        break
                    loss.backward()
                samples += len(batch["labels"]) * info.world_size
                for k, v in out.items():
                    terms[k] = terms.get(k, 0.0) + float(v.detach()) / accum
            if not finite:
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                bad_in_row += 1
                self._log({"step": step, "skipped": True, "reason": "non-finite loss"})
                if bad_in_row >= cfg.train.max_bad_steps:
                    last = latest_checkpoint(self.out_dir)
                    raise TrainingDiverged(
                        f"stopping at step {step}: {bad_in_row} consecutive non-finite losses "
                        f"(train.max_bad_steps={cfg.train.max_bad_steps}); last good checkpoint: {last or 'none'}"
                    )
                step += 1
                scheduler.step()
                continue
            bad_in_row = 0
            if cfg.optim.grad_clip > 0:
                terms["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            self.task.after_step(model)
            step += 1
            first_loss = terms["loss"] if first_loss is None else first_loss

            if step % cfg.train.log_every == 0 or step == total:
                now = time.time()
                rate = samples / max(now - last_t, 1e-9)
                row = {"step": step, "lr": scheduler.get_last_lr()[0], "samples_per_s": rate, **terms}
                self._log(row)
                last_t, samples = now, 0
                if bar:
                    bar.set_postfix(loss=f"{terms['loss']:.3f}", lr=f"{row['lr']:.2e}", sps=f"{rate:.0f}")
            if bar:
                bar.update(1)
            if cfg.train.checkpoint_every and (step % cfg.train.checkpoint_every == 0 or step == total):
                self._checkpoint(model, optimizer, scheduler, step, skipped, loader.state_dict())
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step != total:
                self._evaluate(model, step, final=False)
        if bar:
            bar.close()
        loader.stop()
        if loader.skipped and info.is_main:
            print(loader.report())
        metrics = self._evaluate(model, step, final=True)
        summary = {
            "train_steps": step,
            "skipped_steps": skipped,
            "seconds": time.time() - t_start,
            "first_loss": first_loss,
            "final_loss": terms.get("loss") if step else None,
            "world_size": info.world_size,
            **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        }
        if info.is_main:
            _C.core.write_file_atomic(os.path.join(self.out_dir, "summary.json"),
                                      (json.dumps(summary, indent=2) + "\n").encode())
            self.task.plot(self.out_dir, self.metrics_path, metrics)
        self.model = model
        return summary

    def _checkpoint(self, model, optimizer, scheduler, step, skipped, data_state) -> None:
        info = self.info
        rng = rng_state()
        if info.world_size > 1:  # every rank's generators, so each resumes its own stream
            gathered = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        if info.is_main:
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "skipped_steps": skipped,
                "rng": rng,
                "data": data_state,
            }
            save_checkpoint(self.out_dir, model, state, recipe_to_dict(self.recipe), self.recipe.train.keep_checkpoints)
        if info.world_size > 1:
            torch.distributed.barrier()

    def _evaluate(self, model, step: int, final: bool) -> Dict[str, Any]:
        if not self.info.is_main:
            return {}
        was_training = model.training
        model.eval()
        with self._autocast():
            metrics = self.task.evaluate(model, final=final)
        model.train(was_training)
        self._log({"step": step, **{k: v for k, v in metrics.items() if isinstance(v, float)}})
        return metrics
