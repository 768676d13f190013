"""Zero-shot classification as in the CLIP paper (Radford et al. 2021, section 3.1.4): a text
classifier from class names x prompt templates (mean of normalised embeddings), top-1/top-5.
Models whose image side is not one vector (BLIP-2: one per query, [B, Q, D]) pass their own
`image_features` and `score` (BLIP-2: the best query's similarity)."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .finite import require_finite, require_items


@torch.no_grad()
def zero_shot_classifier(model, tokenizer, class_names: Sequence[str], templates: Sequence[str],
                         context_length: int = 77) -> torch.Tensor:
    """[num_classes, dim] unit vectors: per class, the normalised mean over templates."""
    weights = []
    device = next(model.parameters()).device
    for name in class_names:
        ids = tokenizer([t.format(name) for t in templates], context_length=context_length).to(device)
        emb = F.normalize(model.get_text_features(ids).float(), dim=-1).mean(0)
        weights.append(F.normalize(emb, dim=-1))
    return torch.stack(weights)


@torch.no_grad()
def zero_shot_evaluate(model, batches: Iterable[Dict[str, torch.Tensor]], classifier: torch.Tensor,
                       max_images: int = 0, image_features: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                       score: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
                       ) -> Dict[str, object]:
    """top1/top5 accuracy (fractions), the confusion matrix and per-image top-5 predictions.
    `image_features(pixels)` (default: normalised get_image_features) and `score(features,
    classifier) -> [B, classes]` (default: their dot product) suit other image sides."""
    if image_features is None:
        image_features = lambda px: F.normalize(model.get_image_features(px).float(), dim=-1)  # noqa: E731
    if score is None:
        score = lambda feats, cls: feats @ cls.T  # noqa: E731
    device = classifier.device
    n_cls = classifier.shape[0]
    confusion = torch.zeros(n_cls, n_cls, dtype=torch.long)
    correct1 = correct5 = total = 0
    top5_all: List[torch.Tensor] = []
    labels_all: List[torch.Tensor] = []
    for batch in batches:
        labels = torch.as_tensor(batch["labels"])
        if labels.dim() != 1 or len(labels) != len(batch["pixel_values"]):  # [B, 1] counted each image B times
            raise ValueError(f"zero-shot: a batch's labels must be one per image ([{len(batch['pixel_values'])}]), got "
                             f"shape {list(labels.shape)}")
        keep = max_images - total if max_images else len(labels)  # exactly max_images in all
        pixels = batch["pixel_values"][:keep].to(device)
        labels = labels[:keep]
        outside = (labels < 0) | (labels >= n_cls)
        if bool(outside.any()):  # -1 ("no label") would be scored wrong and counted in the last row
            bad = int(labels[outside][0])
            raise ValueError(f"zero-shot: label {bad} is outside the classifier's {n_cls} classes (a sample "
                             "without a label, or class names that do not cover the data)")
        logits = require_finite(score(image_features(pixels), classifier), "zero-shot scores")
        top5 = logits.topk(min(5, n_cls), dim=-1).indices.cpu()
        correct1 += int((top5[:, 0] == labels).sum())
        correct5 += int((top5 == labels[:, None]).any(-1).sum())
        confusion.index_put_((labels, top5[:, 0]), torch.ones_like(labels), accumulate=True)
        total += len(labels)
        top5_all.append(top5)
        labels_all.append(labels)
        if max_images and total >= max_images:
            break
    require_items(total, "zero-shot: evaluation images")
    return {
        "zero_shot_top1": correct1 / total,
        "zero_shot_top5": correct5 / total,
        "num_images": total,
        "confusion": confusion,
        "top5": torch.cat(top5_all) if top5_all else torch.empty(0, 5, dtype=torch.long),
        "labels": torch.cat(labels_all) if labels_all else torch.empty(0, dtype=torch.long),
    }
