"""One training loop for every objective: a Task supplies the model, the data and the loss;
the Trainer owns optimisation (AdamW, warmup+cosine, clipping, accumulation, bf16), the wrap
strategy (DDP or FSDP2), logging (tqdm, metrics.jsonl, plots), non-finite-loss handling and
crash-safe checkpoints with bit-exact resume."""
from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist

from .. import _C
from .checkpoint import (check_same_run, discard_checkpoints, latest_checkpoint, load_checkpoint, recipe_changes,
                         restoring, resume_checkpoint, rng_state, save_checkpoint, set_rng_state)
from .config import Recipe, recipe_defaults, recipe_to_dict
from .data_stream import batch_stream, check_fills_a_batch, reshard_data_state
from .distributed import (DistInfo, all_true, bound_collectives, init_distributed, join_rank0_wait,
                          note_collective_timeout, rank0_decides, seed_all, wait_for_rank0)
from .freeze import apply_freezing
from .hardware import BF16_SLOW_WARNING, cpu_has_native_bf16
from .optim import build_optimizer, warmup_cosine
from .run_lock import RunFolderLocked, RunLock
from .strategy import Wrapped
from .tasks import MixedLoss, TokenLoss, pads_unused
from .._warn import warn
from ..io import is_regular_file


class TrainingDiverged(RuntimeError):
    """Raised after `max_bad_steps` consecutive non-finite losses."""


class _CountedCall:
    """The wrapped model as a task sees it: counts forwards so one that goes around the wrapper
    (no gradient sync under DDP/FSDP) is caught."""

    def __init__(self, module):
        self.module, self.calls = module, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.module, name)


def _require_tokens(count: float, step: int) -> None:
    if count <= 0:
        raise ValueError(f"step {step}: the TokenLoss count over the whole step is {count}; no item to average over")


#: What a resume with a changed recipe keeps and what it takes from the recipe (test_trainer_semantics).
RESUMED_SETTINGS = ("The checkpoint's optimizer settings stay (optim.lr, betas, eps, weight_decay: a changed value "
                    "does not take effect); the schedule's shape is the recipe's (train.steps, optim.warmup_fraction, "
                    "optim.min_lr_ratio take effect from the next step), as are clipping, accumulation and batch size")


class Trainer:
    def __init__(self, recipe: Recipe, task, out_dir: str, info: Optional[DistInfo] = None, progress: bool = True):
        self.recipe = recipe
        self.task = task
        self.out_dir = out_dir
        self.info = info or init_distributed()
        self.progress = progress and self.info.is_main
        self.metrics_path = os.path.join(out_dir, "metrics.jsonl")
        self.sinks: List[Any] = []  # tracking sinks besides metrics.jsonl while fit runs (train.log_to)
        if hasattr(task, "out_dir"):
            task.out_dir = out_dir

    # ---- helpers ------------------------------------------------------------------------
    def _log(self, row: Dict[str, Any], kind: str = "train") -> None:
        if not self.info.is_main:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        for sink in self.sinks:
            sink.log(row, kind)

    def _truncate_metrics(self, step: int) -> None:
        """On resume, forget rows logged after the checkpoint (they will be logged again)."""
        if not self.info.is_main or not is_regular_file(self.metrics_path, "the run's metrics log"):
            return
        with open(self.metrics_path, "rb") as f:
            lines = f.read().split(b"\n")
        # A crash mid-append leaves a torn last line; the log is not the checkpoint, so rows that do
        # not read as {"step": int, ...} are dropped and counted rather than stopping the resume.
        rows, dropped = [], 0
        for raw in lines:
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                row_step = row["step"] if isinstance(row, dict) else None
            except (ValueError, RecursionError, KeyError):
                row_step = None
            if not isinstance(row_step, int) or isinstance(row_step, bool):
                dropped += 1
            elif row_step <= step:
                rows.append(raw + b"\n")
        if dropped:
            print(f"resume: {self.metrics_path}: dropped {dropped} row(s) that do not read as a JSON object with an "
                  "integer step (a line torn by a crash?)", file=sys.stderr)
        _C.core.write_file_atomic(self.metrics_path, b"".join(rows))

    def _autocast(self, evaluation: bool = False):
        # FSDP2's policy casts parameters and forward inputs in training; evaluation calls other
        # entry points, so autocast covers it there.
        if self.recipe.train.precision == "bf16" and (evaluation or self.wrapped.autocast_bf16):
            return torch.autocast(self.info.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _warn_slow_bf16(self) -> None:
        if self.recipe.train.precision == "bf16" and self.info.device.type == "cpu" and not cpu_has_native_bf16():
            warn(BF16_SLOW_WARNING)

    # ---- one optimizer step's gradients ---------------------------------------------------
    def accumulate(self, batches: Iterator[Dict[str, Any]], step: int) -> Tuple[Dict[str, float], bool, int]:
        """Runs `accumulation_steps` micro-batches forward and backward, leaving the step's
        gradients on the parameters. A mean loss is divided by the number of micro-batches; a
        `TokenLoss` by its count summed over micro-batches and ranks. Returns (terms, finite,
        samples on this rank)."""
        accum, info, wrapped = max(1, self.recipe.optim.accumulation_steps), self.info, self.wrapped
        terms: Dict[str, float] = {}
        token_sum, token_count, kinds, samples = 0.0, 0.0, set(), 0
        micro_batches, mixed_scale = self._step_batches(batches, accum, step)
        for micro in range(accum):
            batch = micro_batches[micro] if micro < len(micro_batches) else next(batches)
            with wrapped.micro_batch(sync=micro == accum - 1):
                call = _CountedCall(wrapped.module)
                with self._autocast():
                    out = self.task.compute_loss(call, self.model, batch, step)
                if call.calls != 1:
                    raise RuntimeError(
                        f"{type(self.task).__name__}.compute_loss called the wrapped model {call.calls} times; it "
                        "must call `wrapped(...)` exactly once per micro-batch (DDP and FSDP synchronise "
                        "gradients in that call; a forward around it would train each rank on its own)")
                loss = out["loss"]
                kinds.add(type(loss))
                if len(kinds) > 1:
                    raise ValueError(f"{type(self.task).__name__}.compute_loss returned losses of different kinds "
                                     f"({', '.join(sorted(k.__name__ for k in kinds))}) for the micro-batches of a step")
                if isinstance(loss, MixedLoss):
                    value = self._mixed_value(loss, batch, step, mixed_scale, accum, terms)
                elif isinstance(loss, TokenLoss) and self.recipe.optim.in_backward:
                    value = self._token_mean_before_backward(loss, step)
                elif isinstance(loss, TokenLoss):
                    value = loss.sum
                else:
                    value = loss / accum
                if not all_true(bool(torch.isfinite(value.detach()).all()), info):
                    # The step still takes its A micro-batches: the loader's position must stay a
                    # multiple of A, or a resume draws the epoch's groups from other boundaries.
                    for _ in range(max(micro + 1, len(micro_batches)), accum):
                        next(batches)
                    return terms, False, samples
                value.backward()
            samples += self.task.batch_size(batch)
            if isinstance(loss, TokenLoss):
                token_sum += float(loss.sum.detach())
                token_count += float(loss.count)
            for k, v in out.items():
                if k != "loss":
                    terms[k] = terms.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / accum
            if not isinstance(loss, TokenLoss):
                terms["loss"] = terms.get("loss", 0.0) + float(value.detach())
        if info.world_size > 1 and terms:  # log the mean over ranks, not rank 0's share
            keys = sorted(terms)
            values = torch.tensor([terms[k] for k in keys], dtype=torch.float64, device=info.device)
            dist.all_reduce(values)
            terms.update({k: float(v) / info.world_size for k, v in zip(keys, values)})
        scale = 1.0
        if TokenLoss in kinds:
            totals = torch.tensor([token_sum, token_count], dtype=torch.float64, device=info.device)
            if info.world_size > 1:
                dist.all_reduce(totals)
            _require_tokens(float(totals[1]), step)
            # DDP and FSDP average gradients over ranks; undo that and divide by the global count
            # (in_backward: already done to the loss, see _token_mean_before_backward).
            scale = 1.0 if self.recipe.optim.in_backward else info.world_size / float(totals[1])
            terms["loss"] = float(totals[0] / totals[1])
            terms["tokens"] = float(totals[1])
        wrapped.finish_gradients(scale)
        return terms, True, samples

    def _token_mean_before_backward(self, loss: TokenLoss, step: int) -> torch.Tensor:
        """optim.in_backward: the gradients are used inside backward, so the token loss is scaled
        before it: one micro-batch, the count summed over ranks, times world_size since FSDP2
        averages over ranks (what finish_gradients would otherwise do afterwards)."""
        world = self.info.world_size
        count = torch.tensor([float(loss.count)], dtype=torch.float64, device=self.info.device)
        if world > 1:
            dist.all_reduce(count)
        _require_tokens(float(count), step)
        return loss.sum * (world / float(count))

    def _step_batches(self, batches: Iterator[Dict[str, Any]], accum: int, step: int):
        """For a task with `count_tokens` (MixedLoss): the step's micro-batches, fetched before the
        first forward, and world_size / (their token count over every rank), the factor that turns a
        micro-batch's token sum into its share of the step's mean (DDP then averages over ranks).
        ([the first], 0.0) for other tasks, whose further batches are fetched one at a time."""
        first = next(batches)
        counter = getattr(self.task, "count_tokens", None)  # optional in TaskProtocol
        count = counter(first, step) if counter else None
        if count is None:
            return [first], 0.0
        micro_batches = [first] + [next(batches) for _ in range(accum - 1)]
        total = torch.tensor([float(sum(self.task.count_tokens(b, step) for b in micro_batches))], dtype=torch.float64,
                             device=self.info.device)
        if self.info.world_size > 1:
            dist.all_reduce(total)
        if float(total) <= 0:
            raise ValueError(f"{type(self.task).__name__}.count_tokens: the step holds no token to average over")
        return micro_batches, self.info.world_size / float(total)

    def _mixed_value(self, loss: MixedLoss, batch: Dict[str, Any], step: int, scale: float, accum: int,
                     terms: Dict[str, float]) -> torch.Tensor:
        """This micro-batch's part of the step's objective; logs each term by name."""
        if not scale:
            raise ValueError(f"{type(self.task).__name__} returned a MixedLoss but its count_tokens returned None")
        expected = self.task.count_tokens(batch, step)
        if int(loss.tokens.count) != int(expected):
            raise ValueError(f"{type(self.task).__name__}: the MixedLoss counts {int(loss.tokens.count)} tokens where "
                             f"count_tokens said {expected}; the two must agree")
        # scale = world_size / step count: DDP's mean over ranks of the summed values is then the
        # step's token mean plus each weighted mean (averaged over micro-batches and ranks); the
        # logged terms are averaged over ranks the same way.
        value = loss.tokens.sum * scale
        terms[loss.token_name] = terms.get(loss.token_name, 0.0) + float(loss.tokens.sum.detach()) * scale
        for name, (weight, mean) in loss.means.items():
            value = value + weight * mean / accum
            terms[name] = terms.get(name, 0.0) + float(mean.detach()) / accum
        return value

    def train_step(self, batches: Iterator[Dict[str, Any]], step: int) -> Tuple[Dict[str, float], bool, int]:
        """One optimizer step. When a loss is not finite the step changes nothing: gradients are
        dropped, no optimizer step, and buffers a forward updated in place (VQ-KD's EMA codebook)
        are put back as they were."""
        buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        terms, finite, samples = self.accumulate(batches, step)
        self.skip_reason = None if finite else "non-finite loss"
        clip = self.recipe.optim.grad_clip
        if finite and not self.recipe.optim.in_backward:
            # A finite loss can still give an inf/NaN gradient (a pow at 0, a bf16 overflow):
            # clipping would scale every gradient by NaN and AdamW write it into every weight.
            norm = self.wrapped.clip_grad_norm(clip if clip > 0 else math.inf)
            if not all_true(math.isfinite(norm), self.info):
                finite, self.skip_reason = False, "non-finite gradient"
            elif clip > 0:
                terms["grad_norm"] = norm
        elif finite:
            # Stepped inside backward, but for the parameters reduced after it (FSDP2's ignored
            # scalars); each skips an inf/NaN gradient, and the others have moved already.
            self.optimizer.step()
            if not all_true(self.optimizer.take_nonfinite() == 0, self.info):
                finite = False
                self.skip_reason = "non-finite gradient (optim.in_backward: only parameters with finite gradients moved)"
        if not finite:
            with torch.no_grad():
                for live, saved in buffers:
                    live.copy_(saved)
        else:
            if not self.recipe.optim.in_backward:
                self.optimizer.step()
            self.task.after_step(self.model)
        self.step_lrs = [g["lr"] for g in self.optimizer.param_groups]  # what this step used
        with warnings.catch_warnings():
            # A skipped step still moves the schedule (it is indexed by the step): PyTorch's
            # warning that the scheduler stepped before any optimizer step is about call order.
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return terms, finite, samples

    # ---- the loop -----------------------------------------------------------------------
    def setup(self) -> None:
        """Builds, wraps and optimises the task's model (also used by `tessera plan --measure`)."""
        cfg, info = self.recipe, self.info
        if cfg.optim.in_backward and info.world_size > 1 and cfg.train.strategy != "fsdp2":
            raise ValueError(f"optim.in_backward on {info.world_size} processes needs train.strategy: fsdp2 "
                             f"({cfg.train.strategy} all-reduces gradients after the per-parameter steps would run)")
        # The cores this process may run on (a cpuset, taskset), not the machine's.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(cfg.train.threads or max(1, cores // info.world_size))
        # Every rank builds the same initial weights (FSDP2 shards each rank's own copy; DDP
        # would broadcast rank 0's), then draws from its own stream.
        seed_all(cfg.train.seed, 0)
        self.model = self.task.build_model().to(info.device)
        self.trainable_parameters, self.total_parameters = apply_freezing(self.model, cfg.model.freeze,
                                                                          cfg.model.trainable)
        if info.is_main and self.trainable_parameters < self.total_parameters:  # recipe freezing or LoRA
            print(f"parameters: {self.trainable_parameters:,} trainable of {self.total_parameters:,} "
                  f"({100 * self.trainable_parameters / max(self.total_parameters, 1):.1f} %)")
        seed_all(cfg.train.seed, info.rank)
        self.model.train()
        if (cfg.train.strategy == "fsdp2" and info.world_size > 1 and self.task.leaves_parameters_unused()
                and not pads_unused(self.task)):
            raise ValueError(f"train.strategy=fsdp2: some of the {cfg.task} task's steps leave parameters out of "
                             "the forward (text-only rows skip the vision tower), and FSDP2 needs every rank to "
                             "run every sharded module each step; use train.strategy=ddp (it finds unused "
                             "parameters) or data whose rows all hold an image")
        self.wrapped = Wrapped(self.model, info, cfg.train.strategy, cfg.train.precision,
                               cfg.model.gradient_checkpointing, cfg.train.cpu_offload,
                               find_unused_parameters=self.task.leaves_parameters_unused())
        # After wrapping: FSDP2 replaces the parameters with sharded ones.
        self.optimizer = build_optimizer(self.task.param_groups(self.model), cfg.optim, self.wrapped.ignored)
        total = cfg.train.steps
        # Rounded up, as transformers' warmup_ratio: 0.05 of 10 steps is one warmup step, not none.
        warmup = math.ceil(round(cfg.optim.warmup_fraction * total, 9))
        self.scheduler = warmup_cosine(self.optimizer, total, warmup, cfg.optim.min_lr_ratio)

    def fit(self, resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
        """Trains (continuing from the newest intact checkpoint with `resume`) and evaluates,
        holding the run folder's lock throughout: a second run on the same folder fails at once.
        A folder holding an earlier run's checkpoints is refused without `resume`, unless
        `overwrite` deletes them (open_clip refuses an existing experiment; transformers asks
        for overwrite_output_dir): a fresh run pruned them one by one and left two runs mixed."""
        if resume and overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite deletes it: give one")
        lock = self._lock_run_folder()
        threads = torch.get_num_threads()  # train.threads is the run's, not the notebook's after it
        try:
            return self._fit(resume, overwrite)
        except RuntimeError as e:
            note_collective_timeout(e, self.recipe.train.timeout_s)
            raise
        finally:
            torch.set_num_threads(threads)
            if lock is not None:
                lock.release()

    def _lock_run_folder(self) -> Optional[RunLock]:
        for path in (self.out_dir, os.path.join(self.out_dir, "checkpoints")):
            if os.path.lexists(path) and not os.path.isdir(path):  # found now, not at the first checkpoint
                raise ValueError(f"{path} exists but is not a folder (a file, or a link that does not lead to "
                                 f"one); choose another --out")
        os.makedirs(self.out_dir, exist_ok=True)
        held = []
        rank0_decides(self.info, lambda: held.append(RunLock(self.out_dir).acquire()), (RunFolderLocked,))
        return held[0] if held else None

    def _choose_checkpoint(self, resume: bool, overwrite: bool) -> Optional[str]:
        """Rank 0 refuses a folder written by another task or model type, and picks the newest
        intact checkpoint to resume (reporting and moving aside damaged ones); all ranks agree."""
        def decide():
            newest = latest_checkpoint(self.out_dir)
            if newest and overwrite:  # whatever wrote them: --overwrite starts over
                discard_checkpoints(self.out_dir)
                return None
            if newest:
                check_same_run(self.out_dir, newest, self.recipe.task, getattr(self.model, "model_type", None))
            if newest and not resume:
                raise ValueError(f"{self.out_dir} holds checkpoints of an earlier run (newest "
                                 f"{os.path.basename(newest)}): pass --resume to continue it, or --overwrite to "
                                 f"start over (its checkpoints are deleted)")
            return resume_checkpoint(self.out_dir) if resume else None
        return rank0_decides(self.info, decide)

    def _fit(self, resume: bool, overwrite: bool = False) -> Dict[str, Any]:
        cfg, info = self.recipe, self.info
        t_start = time.time()
        os.makedirs(self.out_dir, exist_ok=True)
        self._warn_slow_bf16()
        self.setup()
        join_rank0_wait(info, cfg.train.rank0_timeout_s)  # every rank, before any goes off alone
        optimizer, scheduler = self.optimizer, self.scheduler
        loader = self.task.train_loader(info.rank, info.world_size)
        check_fills_a_batch(loader, cfg.optim.accumulation_steps)

        step, skipped, bad_in_row = 0, 0, 0
        first_loss, finite_terms = None, {}  # the terms of the last finite step
        ckpt = self._choose_checkpoint(resume, overwrite)
        if ckpt:
            state = load_checkpoint(ckpt, self.wrapped, optimizer, verify=False)  # rank 0 verified it
            with restoring(ckpt, "scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            step, skipped = state["step"], state["skipped_steps"]
            first_loss, finite_terms = state.get("first_loss"), dict(state.get("last_terms", {}))
            self._restore_data_and_rng(loader, state, ckpt)
            self._truncate_metrics(step)
            if info.is_main:  # said even under --quiet: which weights a run continues from is not progress
                print(f"resume: continuing from {ckpt} (step {step} of {cfg.train.steps})")
            changes = recipe_changes(ckpt, recipe_to_dict(cfg), recipe_defaults(cfg)) if info.is_main else []
            if changes:  # as in transformers and torchtitan: saved optimizer state, the recipe's schedule
                print(f"resume: the recipe differs from the one {os.path.basename(ckpt)} was trained with: "
                      f"{'; '.join(changes[:8])}{'; ...' if len(changes) > 8 else ''}. {RESUMED_SETTINGS}")
        elif info.is_main and os.path.exists(self.metrics_path):
            os.remove(self.metrics_path)
        if info.is_main:
            from .tracking import open_sinks

            self.sinks = open_sinks(cfg.train.log_to, self.out_dir, recipe_to_dict(cfg), step if ckpt else None)
        total = cfg.train.steps
        if ckpt and self._evaluation_lost(step, total):
            self._evaluate(step, final=False)
        if ckpt and step >= total and info.is_main:
            print(f"{ckpt}: the run is complete ({step}/{total} steps); evaluating it "
                  f"(raise train.steps to train further)")

        stream = batch_stream(loader, cfg.optim.accumulation_steps)
        bar = None
        if self.progress and step < total:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=step, desc="train", dynamic_ncols=True)
        last_t, samples, first = time.time(), 0, True
        try:  # a loop left by an exception (Ctrl-C, a failing step) stops the loader's read-ahead too
            while step < total:
                terms, finite, n = self.train_step(stream, step)
                if first:  # start-up and the first step keep torch's default bound
                    bound_collectives(cfg.train.timeout_s)
                    first = False
                samples += n * info.world_size
                step += 1
                if not finite:
                    skipped += 1
                    bad_in_row += 1
                    self._log({"step": step, "skipped": True, "reason": self.skip_reason})
                    if bad_in_row >= cfg.train.max_bad_steps:
                        last = latest_checkpoint(self.out_dir)
                        raise TrainingDiverged(
                            f"stopping at step {step}: {bad_in_row} consecutive non-finite steps "
                            f"(train.max_bad_steps={cfg.train.max_bad_steps}); last good checkpoint: {last or 'none'}"
                        )
                    if bar:
                        bar.update(1)
                    if cfg.train.checkpoint_every and step == total:  # the run's end is saved all the same
                        self._checkpoint(step, skipped, loader, first_loss, finite_terms)
                    continue
                bad_in_row = 0
                finite_terms = terms
                first_loss = terms["loss"] if first_loss is None else first_loss

                if step % cfg.train.log_every == 0 or step == total:
                    now = time.time()
                    rate = samples / max(now - last_t, 1e-9)
                    lrs = self.step_lrs
                    per_group = {f"lr_{i}": v for i, v in enumerate(lrs)} if len(lrs) > 1 else {}
                    row = {"step": step, "lr": lrs[0], **per_group, "samples_per_s": rate, **terms}
                    self._log(row)
                    last_t, samples = now, 0
                    if bar:
                        bar.set_postfix(loss=f"{terms['loss']:.3f}", lr=f"{row['lr']:.2e}", sps=f"{rate:.0f}")
                if bar:
                    bar.update(1)
                if cfg.train.checkpoint_every and (step % cfg.train.checkpoint_every == 0 or step == total):
                    self._checkpoint(step, skipped, loader, first_loss, terms)
                if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step != total:
                    self._evaluate(step, final=False)
        finally:
            if hasattr(loader, "stop"):
                loader.stop()
        if bar:
            bar.close()
        data_problems = self._data_problems(loader)
        metrics = self._evaluate(step, final=True)
        summary = {
            "train_steps": step,
            "skipped_steps": skipped,
            "seconds": time.time() - t_start,
            "first_loss": first_loss,
            "final_loss": finite_terms.get("loss"),
            "world_size": info.world_size,
            "strategy": self.wrapped.strategy,
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            **({"data_problems": data_problems} if data_problems else {}),
        }
        if info.is_main:
            _C.core.write_file_atomic(os.path.join(self.out_dir, "summary.json"),
                                      (json.dumps(summary, indent=2) + "\n").encode())
            plotted = False
            if cfg.train.plots:
                try:  # a report: a plot that fails is said, the run it reports on stays done
                    self.task.plot(self.out_dir, self.metrics_path, metrics)
                    plotted = True
                except Exception as e:  # noqa: BLE001 - matplotlib's and a task's own errors alike
                    warn(f"{self.out_dir}: the plots failed ({type(e).__name__}: {str(e)[:200]}); the run is complete")
            for sink in self.sinks:
                try:
                    if plotted:  # else RUN/*.png are an earlier run's (a resumed or overwritten folder)
                        sink.pictures(self.out_dir, step)
                except Exception as e:  # noqa: BLE001 - a tracker's upload; every sink still closes
                    warn(f"{type(sink).__name__}: the pictures failed ({type(e).__name__}: {str(e)[:200]})")
                finally:
                    sink.close()
            self.sinks = []
        if info.world_size > 1:  # the others wait for that here, not in shutdown's barrier
            wait_for_rank0(self.info)
        return summary

    def _data_problems(self, loader) -> Dict[str, int]:
        """Every rank's loader report printed (damaged shards, skipped samples, fields left out: a
        shard dealt to rank 1 is as lost as one dealt to rank 0) and their counts summed."""
        report = loader.report() if hasattr(loader, "report") else ""
        counts = loader.counts() if hasattr(loader, "counts") else {}
        reports, all_counts = zip(*self._gather((report, counts)))
        if self.info.is_main:
            for rank, text in enumerate(reports):
                if text:
                    print(f"data (rank {rank}): {text}" if self.info.world_size > 1 else f"data: {text}")
        totals = {k: sum(c.get(k, 0) for c in all_counts) for k in all_counts[0]}
        return totals if any(totals.values()) else {}

    # ---- checkpoints and evaluation -------------------------------------------------------
    def _gather(self, obj):
        if self.info.world_size == 1:
            return [obj]
        out = [None] * self.info.world_size
        dist.all_gather_object(out, obj)
        return out

    def _checkpoint(self, step, skipped, loader, first_loss, terms) -> None:
        data = loader.state_dict() if hasattr(loader, "state_dict") else {}
        state = {
            "scheduler": self.scheduler.state_dict(),
            "step": step,
            "skipped_steps": skipped,
            "first_loss": first_loss,
            "last_terms": dict(terms),
            "world_size": self.info.world_size,
            "rng": self._gather(rng_state()),     # every rank's generators and data position,
            "data": self._gather(data),           # so each resumes its own stream
        }
        save_checkpoint(self.out_dir, self.wrapped, self.optimizer, state, recipe_to_dict(self.recipe),
                        self.recipe.train.keep_checkpoints, self.info, beside=self.task.save_beside)

    def _restore_data_and_rng(self, loader, state, ckpt: str) -> None:
        """Each rank takes its own saved streams. On another world size the data position is kept
        (the same global batch gives the same samples per step when per-rank batch x ranks is
        unchanged) and RNGs restart from the seed (`docs/design.md`: resume tolerances)."""
        rank, saved_world = self.info.rank, state.get("world_size", 1)
        data = state["data"][min(rank, len(state["data"]) - 1)]
        if hasattr(loader, "load_state_dict"):
            if not data:  # the stream would restart at epoch 0 without a word
                raise ValueError(f"cannot resume: the checkpoint holds no data position for rank {rank}")
            loader.load_state_dict(reshard_data_state(data, loader.state_dict()))
        if saved_world == self.info.world_size:
            with restoring(ckpt, f"rng[{rank}]"):
                set_rng_state(state["rng"][rank])
        elif self.info.is_main:
            print(f"resuming a {saved_world}-process run on {self.info.world_size}: RNG streams restart from the seed")

    def _evaluation_lost(self, step: int, total: int) -> bool:
        """Whether the evaluation due at the resumed step never finished: a step's checkpoint is
        written before its evaluation, so a run stopped during that evaluation resumes past it.
        Rank 0 reads metrics.jsonl (an evaluation row has no `lr`) and every rank follows it."""
        every = self.recipe.train.eval_every
        if not every or step % every or not 0 < step < total:
            return False
        lost = False
        if self.info.is_main:
            rows = []
            if is_regular_file(self.metrics_path, "the run's metrics log"):
                with open(self.metrics_path, encoding="utf-8") as f:
                    rows = [json.loads(line) for line in f if line.strip()]  # _truncate_metrics left whole rows
            lost = not any(r.get("step") == step and "lr" not in r and "skipped" not in r for r in rows)
        return bool(self._gather(lost)[0])

    def _evaluate(self, step: int, final: bool) -> Dict[str, Any]:
        """Rank 0 evaluates the plain model; sharded, every rank runs the evaluation together
        (each forward gathers the layers' shards) and rank 0 logs it."""
        alone = not self.wrapped.sharded and self.info.world_size > 1
        if alone and not self.info.is_main:  # waits for rank 0 here, not in the next step's collectives
            wait_for_rank0(self.info)
            return {}
        gather = bool(getattr(self.task, "evaluation_gathers_all", False))
        with self.wrapped.evaluation(gather) as model, self._autocast(evaluation=True):
            metrics = self.task.evaluate(model, final=final)
        if alone:
            wait_for_rank0(self.info)
        if not self.info.is_main:
            return {}
        self._log({"step": step, **{k: v for k, v in metrics.items() if isinstance(v, float)}}, "eval")
        return metrics
