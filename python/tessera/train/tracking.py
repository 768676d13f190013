"""Where a run's numbers go besides metrics.jsonl, which stays the source of truth (plots and
resume read it). `train.log_to: [jsonl, tensorboard]` adds TensorBoard event files under
RUN/tensorboard: every logged scalar (training rows as train/<name>, evaluations as eval/<name>),
and at the end the pictures the task drew (RUN/*.png: curves, confusion, reconstructions).

    tensorboard --logdir runs/demo-clip/tensorboard
"""
from __future__ import annotations

import glob
import os
from typing import Any, Dict, List, Optional

SINKS = ("jsonl", "tensorboard")


def check_log_to(names: List[str], where: str) -> None:
    unknown = [n for n in names if n not in SINKS]
    if unknown:
        raise ValueError(f"{where}: unknown sink {unknown[0]!r}; known: {', '.join(SINKS)}")
    if "jsonl" not in names:
        raise ValueError(f"{where} must include 'jsonl': metrics.jsonl is what plots and resumed runs read")
    if "tensorboard" in names:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ValueError(f"{where}: 'tensorboard' needs the tensorboard package (pip install tensorboard)") from None


class TensorBoardSink:
    def __init__(self, out_dir: str, purge_step: Optional[int] = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops events past its checkpoint, as metrics.jsonl drops rows
        self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=purge_step)

    def log(self, row: Dict[str, Any], kind: str) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        self.writer.flush()

    def pictures(self, out_dir: str, step: int) -> None:
        from ..data.transforms import read_image

        for path in sorted(glob.glob(os.path.join(out_dir, "*.png"))):
            image = read_image(path)  # uint8 [H, W, C]
            self.writer.add_image(os.path.splitext(os.path.basename(path))[0], image, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
