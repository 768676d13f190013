"""PNG plots of a run: training curves, evaluation curves, confusion matrix, prediction grid.
matplotlib with the Agg backend (no display needed)."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..io import is_regular_file  # noqa: E402


def read_metrics(path: str) -> List[Dict]:
    """The log's rows; a line that is not a JSON object (a hand edit, a torn write) is left out
    with a warning naming it: the plots are a report, and failed with a bare JSONDecodeError."""
    from .._warn import warn

    if not is_regular_file(path, "a metrics log"):
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                rows.append(row)
            else:
                warn(f"{path}: line {number} is not a metrics row (a JSON object with a step); left out of the plots")
    return rows


def _save(fig, path: str) -> str:
    tmp = path + ".tmp.png"
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.lexists(tmp):  # a failed save leaves no .tmp.png
            os.remove(tmp)
    return path


def plot_training_curves(metrics: List[Dict], path: str) -> str:
    rows = [m for m in metrics if "loss" in m and "step" in m]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot([m["step"] for m in rows], [m["loss"] for m in rows], lw=1.2)
    a.set(xlabel="step", ylabel="loss", title="training loss")
    a.grid(alpha=0.3)
    b.plot([m["step"] for m in rows if "lr" in m], [m["lr"] for m in rows if "lr" in m], color="tab:orange")
    b.set(xlabel="step", ylabel="learning rate", title="schedule")
    b.grid(alpha=0.3)
    return _save(fig, path)


def plot_eval_curves(metrics: List[Dict], path: str) -> str:
    rows = [m for m in metrics if any(k.startswith(("zero_shot", "image_to_text", "text_to_image")) for k in m)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    keys = sorted({k for m in rows for k in m if k != "step" and isinstance(m[k], float)})
    for k in keys:
        pts = [(m["step"], m[k]) for m in rows if k in m]
        ax.plot(*zip(*pts), marker="o", label=k)
    ax.set(xlabel="step", ylabel="score", title="evaluation", ylim=(0, 1))
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_confusion(confusion: torch.Tensor, class_names: Sequence[str], path: str) -> str:
    cm = confusion.float()
    cm = cm / cm.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(cm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if cm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="zero-shot confusion (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_prediction_grid(images: torch.Tensor, labels: torch.Tensor, top: torch.Tensor, captions: Sequence[str],
                         path: str, n: int = 16) -> str:
    """images uint8 [N, H, W] or [N, H, W, 3]; top [N, k] predicted class indices."""
    n = min(n, len(images))
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.0, rows * 3.3))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].numpy()
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        lines = [("✓ " if int(c) == int(labels[i]) else "  ") + captions[int(c)] for c in top[i][:3]]
        ax.set_title("\n".join(lines), fontsize=7, loc="left")
    fig.suptitle("test images with their top-3 predicted captions", fontsize=10)
    return _save(fig, path)


def plot_reconstructions(original: torch.Tensor, masked: torch.Tensor, reconstruction: torch.Tensor,
                         blended: torch.Tensor, path: str, title: str = "") -> str:
    """MAE pictures, one row per image: original | masked input | reconstruction | reconstruction
    with the visible patches pasted back. Each tensor float [N, H, W] or [N, H, W, 3] in [0, 1]."""
    n = len(original)
    columns = (("original", original), ("masked", masked), ("reconstruction", reconstruction),
               ("reconstruction + visible", blended))
    fig, axes = plt.subplots(n, 4, figsize=(4 * 1.8, n * 1.8), squeeze=False)
    for r in range(n):
        for c, (name, images) in enumerate(columns):
            ax = axes[r][c]
            ax.axis("off")
            img = images[r].clamp(0, 1).numpy()
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            if r == 0:
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
