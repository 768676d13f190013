"""Linear-probe and k-NN evaluation of an encoder's frozen features (the standard yardsticks of
self-supervised pretraining: MAE and BEiT report linear probes, DINO k-NN). Features are the mean
of the last layer's patch tokens for ViT-family encoders (MAE with masking off, BEiT, VQ-KD's
encoder) and the image embedding for CLIP; `pixels` gives the raw-pixel floor.

    tessera eval runs/demo-mae --probe                 # its newest checkpoint
    tessera eval runs/demo-mae --probe --random-init   # the same architecture, untrained
    tessera eval pixels --probe
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F

from .. import data as tdata
from .finite import require_finite

Features = Callable[[torch.Tensor], torch.Tensor]


def encoder_features(model) -> Features:
    """The feature function of a model: its `probe_features()` (each family says what its
    encoder's probe feature is, beside its model; see the module docstring)."""
    probe = getattr(model, "probe_features", None)
    if probe is None:
        raise ValueError(f"--probe: {type(model).__name__} has no probe_features() (the image encoders have)")
    return probe()


def pixel_features(px: torch.Tensor) -> torch.Tensor:
    return px[:, 0].flatten(1)  # Fashion-MNIST's three channels are equal


@torch.no_grad()
def extract(features: Features, dataset, image_size: int, count: int, batch_size: int = 500,
            pipeline: Optional[Dict[str, Any]] = None):
    """Features and labels of `count` images of `dataset` (a fixed random subset: a seeded shuffle)."""
    loader = tdata.DataLoader(dataset, batch_size=batch_size, shuffle=True, seed=0, num_workers=2, drop_last=False,
                              transform=tdata.clip_transform(image_size, **(pipeline or {})))
    xs, ys = [], []
    try:
        for batch in loader:
            xs.append(features(batch["pixel_values"]).float())
            ys.append(batch["labels"])
            if sum(len(y) for y in ys) >= count:
                break
    finally:
        loader.stop()
    return require_finite(torch.cat(xs)[:count], "probe features (image rows)"), torch.cat(ys)[:count]


def linear_probe(train_x, train_y, test_x, test_y, weight_decay: float = 1e-4, steps: int = 200) -> float:
    """Multinomial logistic regression on standardised features, full-batch L-BFGS."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    classes = int(train_y.max()) + 1
    w = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, train_y) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(1) == test_y).float().mean())


KNN_K = 20  # DINO's k


def knn(train_x, train_y, test_x, test_y, k: int = KNN_K, temperature: float = 0.07) -> float:
    """Cosine k-NN with similarity-weighted votes (DINO's protocol)."""
    if len(train_x) < k:
        raise ValueError(f"k-NN over {k} neighbours needs at least {k} training features, got {len(train_x)}")
    a, b = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    classes = int(train_y.max()) + 1
    sims, idx = (b @ a.t()).topk(k, dim=1)
    votes = torch.zeros(len(b), classes).scatter_add_(1, train_y[idx], (sims / temperature).exp())
    return float((votes.argmax(1) == test_y).float().mean())


def probe(features: Features, image_size: int, root: str = tdata.FASHION_MNIST_ROOT, train_images: int = 10000,
          test_images: int = 2000, pipeline: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """`pipeline`: clip_transform's keywords (the encoder's normalisation; CLIP's by default)."""
    if train_images < KNN_K:  # before any image is read: the k-NN's neighbours, the probe's standardisation
        raise ValueError(f"probe train_images (--probe-train) {train_images}: at least {KNN_K}, the k-NN's neighbours")
    train = tdata.FashionMNIST(root, split="train")
    test = tdata.FashionMNIST(root, split="test")
    tx, ty = extract(features, train, image_size, train_images, pipeline=pipeline)
    vx, vy = extract(features, test, image_size, test_images, pipeline=pipeline)
    return {"linear_probe": linear_probe(tx, ty, vx, vy), "knn": knn(tx, ty, vx, vy), "feature_dim": tx.shape[1]}


def run_probe(path: str, random_init: bool = False, root: str = tdata.FASHION_MNIST_ROOT, train_images: int = 10000,
              test_images: int = 2000) -> Dict[str, float]:
    """`path`: a run folder (its newest checkpoint), a checkpoint folder, or `pixels`."""
    if path == "pixels":
        return probe(pixel_features, 28, root, train_images, test_images)
    from ..factory import from_pretrained
    from ..models.pretrained import read_config
    from ..registry import model_class
    from ..train.checkpoint import resolve_checkpoint

    folder = resolve_checkpoint(path)
    if random_init:
        config = read_config(folder)
        torch.manual_seed(0)
        model = model_class(config, folder)(config).eval()
    else:
        model = from_pretrained(folder)
    config = model.config.get("vision_config") or model.config.get("encoder_config") or model.config
    from ..train.image_data import checkpoint_pipeline

    out = probe(encoder_features(model), config["image_size"], root, train_images, test_images,
                checkpoint_pipeline(folder, model))
    return {"checkpoint": folder, "random_init": random_init, **out}


def format_result(result: Dict[str, float]) -> str:
    return json.dumps(result, indent=2)
