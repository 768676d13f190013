"""Image<->text retrieval recall@K (R@1/5/10) over (image, caption) rows, one caption per image.
Repeated captions (class-name captions) are scored fairly: an image ranks the distinct caption
texts (each scored by its best row), so its top 5 are five different captions, not five copies of
one; a caption query ranks the images, and an image whose caption is the query's text is a hit. A set with several
captions per image (COCO, Flickr30k) is scored per image by `caption_retrieval.multi_caption_recall`,
as the papers report it."""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

import torch
import torch.nn.functional as F

from .finite import require_finite


@torch.no_grad()
def embed_pairs(model, batches: Iterable[Dict], tokenizer, context_length: int = 77, max_images: int = 0):
    device = next(model.parameters()).device
    img, txt, captions = [], [], []
    for batch in batches:
        keep = max_images - len(captions) if max_images else len(batch["captions"])  # exactly max_images
        caps = list(batch["captions"])[:keep]
        img.append(F.normalize(model.get_image_features(batch["pixel_values"][:keep].to(device)).float(),
                               dim=-1).cpu())
        ids = tokenizer(caps, context_length=context_length).to(device)
        txt.append(F.normalize(model.get_text_features(ids).float(), dim=-1).cpu())
        captions.extend(caps)
        if max_images and len(captions) >= max_images:
            break
    return torch.cat(img), torch.cat(txt), captions


def recall_at_k(image_embeds: torch.Tensor, text_embeds: torch.Tensor, captions: Sequence[str],
                ks: Sequence[int] = (1, 5, 10), score=None) -> Dict[str, float]:
    """image_embeds[i] pairs with text_embeds[i]; both L2-normalised. `score(image_embeds,
    text_embeds) -> [N, N]` replaces the dot product (BLIP-2: the best of each image's queries)."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    cap_id = torch.tensor([ids[c] for c in captions])
    sim = score(image_embeds, text_embeds) if score is not None else image_embeds @ text_embeds.T
    require_finite(sim, "retrieval scores (image rows)")
    # Image -> text over the distinct captions: rows of one text share their best score.
    by_caption = torch.full((sim.shape[0], len(ids)), float("-inf"), dtype=sim.dtype).scatter_reduce(
        1, cap_id.expand(sim.shape[0], -1), sim, reduce="amax")
    out: Dict[str, float] = {}
    for name, s, truth in (("image_to_text", by_caption, lambda top: top),
                           ("text_to_image", sim.T, lambda top: cap_id[top])):
        k_max = min(max(ks), s.shape[1])
        top = s.topk(k_max, dim=1).indices  # [N, k]
        hit = truth(top) == cap_id[:, None]
        for k in ks:
            out[f"{name}_R@{k}"] = hit[:, : min(k, k_max)].any(1).float().mean().item()
    return out


def retrieval_evaluate(model, batches, tokenizer, context_length: int = 77, max_images: int = 0) -> Dict[str, float]:
    image_embeds, text_embeds, captions = embed_pairs(model, batches, tokenizer, context_length, max_images)
    return recall_at_k(image_embeds, text_embeds, captions)
