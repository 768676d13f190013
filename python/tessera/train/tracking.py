"""Where a run's numbers go besides metrics.jsonl, which stays the source of truth (plots and
resume read it). `train.log_to: [jsonl, tensorboard, wandb]`:

- tensorboard: event files under RUN/tensorboard;
- wandb: a Weights & Biases run in offline mode under RUN/wandb (`wandb sync RUN/wandb/offline-run-*`
  uploads it later; tessera never talks to a server), its id kept in RUN/wandb-id so a resumed
  run continues the same W&B run; the recipe is its config. W&B's service process writes the run
  file on its own clock: it is complete a moment after fit() returns (and always once the process
  has exited), so sync or copy it then.

Both get every logged scalar (training rows as train/<name>, evaluations as eval/<name>), and at
the end the pictures the task drew (RUN/*.png: curves, confusion, reconstructions).

    tensorboard --logdir runs/demo-clip/tensorboard
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
from typing import Any, Dict, List, Optional

SINKS = ("jsonl", "tensorboard", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_log_to(names: List[str], where: str) -> None:
    unknown = [n for n in names if n not in SINKS]
    if unknown:
        raise ValueError(f"{where}: unknown sink {unknown[0]!r}; known: {', '.join(SINKS)}")
    if "jsonl" not in names:
        raise ValueError(f"{where} must include 'jsonl': metrics.jsonl is what plots and resumed runs read")
    for name in names:
        if name in PACKAGES:
            try:
                __import__(PACKAGES[name])
            except ImportError:
                raise ValueError(f"{where}: {name!r} needs the {PACKAGES[name]} package "
                                 f"(pip install {PACKAGES[name]})") from None


def scalars(row: Dict[str, Any], kind: str) -> Dict[str, float]:
    return {f"{kind}/{k}": v for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def pictures_of(out_dir: str) -> List[str]:
    return sorted(glob.glob(os.path.join(out_dir, "*.png")))


def open_sinks(names: List[str], out_dir: str, recipe: Dict[str, Any], resumed_at: Optional[int]) -> List[Any]:
    """The sinks `names` asks for besides jsonl, opened for a run (resumed after step
    `resumed_at`, or new)."""
    sinks: List[Any] = []
    if "tensorboard" in names:
        sinks.append(TensorBoardSink(out_dir, purge_step=None if resumed_at is None else resumed_at + 1))
    if "wandb" in names:
        sinks.append(WandbSink(out_dir, recipe, resumed_at))
    return sinks


class TensorBoardSink:
    def __init__(self, out_dir: str, purge_step: Optional[int] = None):
        from torch.utils.tensorboard import SummaryWriter

        folder = os.path.join(out_dir, "tensorboard")
        try:
            if purge_step is None and os.path.isdir(folder):
                # A run that starts over (no checkpoint: --overwrite, or a resume before the first
                # one) starts its events over too, as metrics.jsonl does: the old ones showed every
                # step twice.
                shutil.rmtree(folder)
            # purge_step: a resumed run drops events past its checkpoint, as metrics.jsonl drops rows
            self.writer = SummaryWriter(folder, purge_step=purge_step)
        except OSError as e:
            raise ValueError(f"train.log_to tensorboard: cannot write the event folder {folder} ({e})") from None

    def log(self, row: Dict[str, Any], kind: str) -> None:
        step = int(row["step"])
        for key, value in scalars(row, kind).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def pictures(self, out_dir: str, step: int) -> None:
        from ..data.transforms import read_image

        for path in pictures_of(out_dir):
            image = read_image(path)  # uint8 [H, W, C]
            self.writer.add_image(os.path.splitext(os.path.basename(path))[0], image, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, out_dir: str, recipe: Dict[str, Any], resumed_at: Optional[int]):
        import wandb

        from ..io import write_atomic

        id_file = os.path.join(out_dir, "wandb-id")
        # A resumed run continues its W&B run; one that starts over (no checkpoint) is a new one,
        # as its metrics.jsonl is (the old id made the new run continue the old run's history).
        keep = resumed_at is not None and os.path.isfile(id_file)
        run_id = open(id_file).read().strip() if keep else secrets.token_hex(4)
        write_atomic(id_file, run_id + "\n")
        self.wandb = wandb
        # Offline runs cannot rewind: rows logged past the checkpoint before a crash stay in that
        # W&B run's history (metrics.jsonl, which drops them, is the source of truth).
        self.run = wandb.init(mode="offline", dir=out_dir, project="tessera", name=os.path.basename(out_dir),
                              id=run_id, resume="allow", config=recipe, settings=wandb.Settings(silent=True))

    def log(self, row: Dict[str, Any], kind: str) -> None:
        self.run.log(scalars(row, kind), step=int(row["step"]))

    def pictures(self, out_dir: str, step: int) -> None:
        images = {os.path.splitext(os.path.basename(p))[0]: self.wandb.Image(p) for p in pictures_of(out_dir)}
        if images:
            self.run.log(images, step=step)

    def close(self) -> None:
        self.run.finish()
