"""Image<->text retrieval recall@K (R@1/5/10) over (image, caption) rows, one caption per image.
Repeated captions (class-name captions) are scored fairly: an image ranks the distinct caption
texts (each scored by its best row), so its top 5 are five different captions, not five copies of
one; a caption query ranks the images, and an image whose caption is the query's text is a hit. A set with several
captions per image (COCO, Flickr30k) is scored per image by `caption_retrieval.multi_caption_recall`,
as the papers report it."""
from __future__ import annotations

import hashlib
import numbers
from typing import Dict, Hashable, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .finite import require_finite, require_items


@torch.no_grad()
def embed_pairs(model, batches: Iterable[Dict], tokenizer, context_length: int = 77, max_images: int = 0,
                group: bool = False):
    """(image rows, text rows, captions, image ids): with `group`, rows of identical pixels share an
    id (one image, several caption rows), and `max_images` counts distinct images."""
    device = next(model.parameters()).device
    img, txt, captions, image_ids = [], [], [], []
    seen: Dict[bytes, int] = {}
    for batch in batches:
        pixels, caps = batch["pixel_values"], list(batch["captions"])
        if group:  # rows of identical pixels share an id; max_images counts distinct images
            ids = []
            for p in pixels:
                digest = hashlib.blake2b(p.contiguous().numpy().tobytes(), digest_size=16).digest()
                if digest not in seen and max_images and len(seen) == max_images:
                    break
                ids.append(seen.setdefault(digest, len(seen)))
            done = len(ids) < len(caps)
        else:  # exactly max_images rows
            room = max_images - len(captions) if max_images else len(caps)
            ids = list(range(len(captions), len(captions) + min(room, len(caps))))
            done = bool(max_images) and len(captions) + len(ids) >= max_images
        keep = len(ids)
        if keep:
            img.append(F.normalize(model.get_image_features(pixels[:keep].to(device)).float(), dim=-1).cpu())
            tokens = tokenizer(caps[:keep], context_length=context_length).to(device)
            txt.append(F.normalize(model.get_text_features(tokens).float(), dim=-1).cpu())
        captions.extend(caps[:keep])
        image_ids.extend(ids)
        if done:
            break
    require_items(len(captions), "retrieval: image-caption pairs")  # before torch.cat([]) fails unnamed
    return torch.cat(img), torch.cat(txt), captions, image_ids


def recall_at_k(image_embeds: torch.Tensor, text_embeds: torch.Tensor, captions: Sequence[str],
                ks: Sequence[int] = (1, 5, 10), score=None,
                image_ids: Optional[Sequence[Hashable]] = None) -> Dict[str, float]:
    """image_embeds[i] pairs with text_embeds[i]; both L2-normalised. `score(image_embeds,
    text_embeds) -> [I, N]` replaces the dot product (BLIP-2: the best of each image's queries).
    `image_ids` groups rows that hold one image (shards written from a caption file repeat it per
    caption): an image is then one query, a hit when any of its captions' texts is retrieved, as
    `multi_caption_recall` scores a caption file."""
    require_items(len(captions), "retrieval: image-caption pairs")
    rows_given = {"image_embeds": len(image_embeds), "text_embeds": len(text_embeds), "captions": len(captions),
                  **({"image_ids": len(image_ids)} if image_ids is not None else {})}
    if len(set(rows_given.values())) != 1:
        raise ValueError(f"recall_at_k: one row per pair in each input, got {rows_given}")
    if not ks or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in ks):
        raise ValueError(f"recall_at_k: ks must be integers >= 1, got {list(ks)!r}")  # R@0 read 0.0
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    cap_id = torch.tensor([ids[c] for c in captions], dtype=torch.long)
    index: Dict[Hashable, int] = {}
    rows = range(len(captions)) if image_ids is None else image_ids
    owner = torch.tensor([index.setdefault(k, len(index)) for k in rows], dtype=torch.long)
    first = torch.zeros(len(index), dtype=torch.long).scatter_reduce(0, owner, torch.arange(len(owner)), "amin",
                                                                     include_self=False)
    images = image_embeds[first]
    sim = score(images, text_embeds) if score is not None else images @ text_embeds.T  # [I, N]
    require_finite(sim, "retrieval scores (image rows)")
    has = torch.zeros(len(index), len(ids), dtype=torch.bool)  # image i has caption text t
    has[owner, cap_id] = True
    # Image -> text over the distinct captions: rows of one text share their best score.
    by_caption = torch.full((len(index), len(ids)), float("-inf"), dtype=sim.dtype).scatter_reduce(
        1, cap_id.expand(len(index), -1), sim, reduce="amax")
    out: Dict[str, float] = {}
    for name, s, hit_of in (("image_to_text", by_caption, lambda top: has.gather(1, top)),
                            ("text_to_image", sim.T, lambda top: has[top, cap_id[:, None]])):
        k_max = min(max(ks), s.shape[1])
        hit = hit_of(s.topk(k_max, dim=1).indices)  # [queries, k]
        for k in ks:
            out[f"{name}_R@{k}"] = hit[:, : min(k, k_max)].any(1).float().mean().item()
    return out


def retrieval_evaluate(model, batches, tokenizer, context_length: int = 77, max_images: int = 0,
                       group: bool = False) -> Dict[str, float]:
    """`group`: rows holding the same image are one image (see `recall_at_k`'s image_ids)."""
    image_embeds, text_embeds, captions, image_ids = embed_pairs(model, batches, tokenizer, context_length, max_images,
                                                                 group)
    out = recall_at_k(image_embeds, text_embeds, captions, image_ids=image_ids if group else None)
    if group:  # what caption_retrieval_evaluate reports for a caption file
        out["mean_recall"] = sum(out.values()) / len(out)
        out.update(num_images=len(set(image_ids)), num_captions=len(captions))
    return out
