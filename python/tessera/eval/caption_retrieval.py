"""Image-text retrieval as the CLIP, ALBEF and BLIP-2 papers report it on COCO and Flickr30k:
every image of the split embedded once, each with its (usually five) captions. Image->text is a
hit at K when any of the image's captions is among its K nearest texts; text->image when the
caption's image is among its K nearest images. R@1/5/10 per direction and their mean.

Splits come from Karpathy's files (`dataset_coco.json`, `dataset_flickr30k.json`: images with a
"split" and "sentences") or LAVIS's annotation lists (`coco_karpathy_test.json`: [{"image",
"caption": [...]}], or one caption per entry, grouped by image):

    split = load_retrieval_split("coco:/data/coco/dataset_coco.json", split="test",
                                 image_root="/data/coco/images")
    metrics = caption_retrieval_evaluate(clip, split, tessera.tokenize, image_size=224)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..io import is_regular_file, read_json
from .finite import require_finite, require_items

KINDS = ("coco", "flickr30k", "annotations")


@dataclass
class RetrievalSplit:
    name: str
    images: List[str]          # resolved image paths, one per image
    captions: List[str]
    caption_image: List[int]   # the image index of every caption

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_pairs(cls, name: str, pairs: Iterable[Tuple[str, str]], max_images: int = 0) -> "RetrievalSplit":
        """(image path, caption) rows grouped by image, in order of first appearance; with
        `max_images`, the captions of the first that many images."""
        index: Dict[str, int] = {}
        captions, owner = [], []
        for path, caption in pairs:
            path = os.path.normpath(path)  # ./img/0.png and img/0.png are one image
            if path not in index:
                if max_images and len(index) == max_images:
                    continue
                index[path] = len(index)
            captions.append(caption)
            owner.append(index[path])
        return cls(name, list(index), captions, owner)


def _caption(text, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: a caption must be a non-empty string, got {text!r}")
    return text.strip()


def read_karpathy(path: str, split: str = "test", image_root: Optional[str] = None) -> RetrievalSplit:
    """One split of a Karpathy file; image paths are image_root/filepath/filename (image_root:
    the file's folder by default; Flickr30k's entries have no filepath)."""
    data = read_json(path, "a Karpathy split file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected Karpathy's layout, an object with an 'images' list")
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    images, captions, owner = [], [], []
    counts: Dict[str, int] = {}
    seen: Dict[str, int] = {}
    for i, entry in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise ValueError(f"{where}: needs a 'filename' string")
        s = entry.get("split")
        counts[str(s)] = counts.get(str(s), 0) + 1
        if s != split:
            continue
        sentences = entry.get("sentences")
        where = f"{where} ({entry['filename']})"
        if not isinstance(sentences, list) or not sentences:
            raise ValueError(f"{where}: needs a non-empty 'sentences' list")
        for j, sentence in enumerate(sentences):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            captions.append(_caption(raw, f"{where}: sentences[{j}].raw"))
            owner.append(len(images))
        folder = entry.get("filepath", "")
        if not isinstance(folder, str):
            raise ValueError(f"{where}: 'filepath' must be a string (a folder under the image root), got {folder!r}")
        image = os.path.normpath(os.path.join(root, folder, entry["filename"]))
        if image in seen:  # one image twice would tie with itself in every ranking
            raise ValueError(f"{where}: the same image as images[{seen[image]}] in split {split!r}")
        seen[image] = i
        images.append(image)
    if not images:
        found = ", ".join(f"{k} ({v})" for k, v in sorted(counts.items())) or "none"
        raise ValueError(f"{path}: no image in split {split!r}; the file's splits: {found}")
    return RetrievalSplit(f"{os.path.basename(path)}:{split}", images, captions, owner)


def read_annotations(path: str, image_root: Optional[str] = None) -> RetrievalSplit:
    """LAVIS's annotation list: [{"image": path, "caption": str or [str, ...]}], entries of one
    image grouped (in order of first appearance)."""
    data = read_json(path, "an annotation list")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of {{'image', 'caption'}} entries")
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    pairs = []
    for i, entry in enumerate(data):
        where = f"{path}: [{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or "caption" not in entry:
            raise ValueError(f"{where}: needs an 'image' string and a 'caption'")
        texts = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
        if not texts:
            raise ValueError(f"{where} ({entry['image']}): empty caption list")
        pairs += [(os.path.join(root, entry["image"]), _caption(t, f"{where} ({entry['image']}): caption[{j}]"))
                  for j, t in enumerate(texts)]
    return RetrievalSplit.from_pairs(os.path.basename(path), pairs)


def load_retrieval_split(spec: str, split: Optional[str] = None, image_root: Optional[str] = None) -> RetrievalSplit:
    """`coco:PATH` / `flickr30k:PATH` (Karpathy files), `annotations:PATH` (LAVIS lists), or a bare
    PATH (Karpathy when it holds an 'images' object, else an annotation list). `split` picks a
    Karpathy file's split (default test); a LAVIS list is one split's file, so a split given
    with one is refused rather than ignored. Every image file must exist (checked before anything
    is embedded)."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in KINDS:
        kind, path = "", spec
    if not path:
        raise ValueError(f"retrieval split {spec!r}: no file named (coco:PATH, flickr30k:PATH, annotations:PATH or PATH)")
    if not kind:
        kind = "coco" if isinstance(read_json(path, "a retrieval split file"), dict) else "annotations"
    if kind == "annotations":
        if split is not None:
            raise ValueError(f"{path}: a LAVIS annotation list holds one split (LAVIS writes a file per split: "
                             f"coco_karpathy_test.json ...); split {split!r} applies to Karpathy files only")
        out = read_annotations(path, image_root)
    else:
        out = read_karpathy(path, split or "test", image_root)
    missing = [p for p in out.images if not is_regular_file(p)]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} of {len(out.images)} images not found, first {missing[0]!r}"
                                " (set image_root / --image-root to the folder the paths are relative to)")
    return out


def _owners(caption_image: Sequence[int], n_img: int, n_txt: int) -> torch.Tensor:
    owner = torch.as_tensor(list(caption_image), dtype=torch.long)
    if owner.numel() != n_txt or (n_txt and (owner.min() < 0 or owner.max() >= n_img)):
        raise ValueError(f"caption_image must give each of the {n_txt} captions an image index in [0, {n_img})")
    return owner


def _first_own(own: torch.Tensor, k_max: int) -> torch.Tensor:
    """Each row's rank of its first own candidate ([queries, ranked candidates] bool), else k_max."""
    return torch.where(own.any(1), own.float().argmax(1), k_max)


def _recalls(i2t_rank: torch.Tensor, t2i_rank: torch.Tensor, ks: Sequence[int], prefix: str = "") -> Dict[str, float]:
    require_items(min(len(i2t_rank), len(t2i_rank)), "retrieval: images and captions")
    out = {f"{prefix}image_to_text_R@{k}": (i2t_rank < k).float().mean().item() for k in ks}
    out.update({f"{prefix}text_to_image_R@{k}": (t2i_rank < k).float().mean().item() for k in ks})
    out[f"{prefix}mean_recall"] = sum(out.values()) / len(out)
    return out


@torch.no_grad()
def multi_caption_recall(image_embeds: torch.Tensor, text_embeds: torch.Tensor, caption_image: Sequence[int],
                         ks: Sequence[int] = (1, 5, 10),
                         score: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
                         block: int = 1024) -> Dict[str, float]:
    """R@K both ways (fractions) and their mean. `score(images, texts) -> [I, T]` replaces the
    dot product (BLIP-2: the best query). Scores are computed in blocks of queries, so a 5K x 25K
    split never holds the whole matrix."""
    n_img, n_txt = image_embeds.shape[0], text_embeds.shape[0]
    owner = _owners(caption_image, n_img, n_txt)
    sim = score or (lambda a, b: a @ b.T)
    k_max = max(ks)
    i2t_rank = torch.empty(n_img, dtype=torch.long)  # rank of the best-placed own caption
    for s in range(0, n_img, block):
        scores = require_finite(sim(image_embeds[s:s + block], text_embeds).float(), "retrieval scores (image rows)")
        top = scores.topk(min(k_max, n_txt), dim=1).indices
        own = owner[top] == torch.arange(s, s + scores.shape[0]).unsqueeze(1)
        i2t_rank[s:s + scores.shape[0]] = _first_own(own, k_max)
    t2i_rank = torch.empty(n_txt, dtype=torch.long)
    for s in range(0, n_txt, block):
        scores = sim(image_embeds, text_embeds[s:s + block]).float().T
        top = scores.topk(min(k_max, n_img), dim=1).indices
        own = top == owner[s:s + scores.shape[0]].unsqueeze(1)
        t2i_rank[s:s + scores.shape[0]] = _first_own(own, k_max)
    return _recalls(i2t_rank, t2i_rank, ks)


@torch.no_grad()
def reranked_recall(image_embeds: torch.Tensor, text_embeds: torch.Tensor, caption_image: Sequence[int],
                    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    match: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], k_test: int = 128,
                    ks: Sequence[int] = (1, 5, 10), block: int = 256) -> Dict[str, float]:
    """R@K after re-ranking, as LAVIS's BLIP-2 evaluation (`compute_sim_matrix`) ranks: each
    query's `k_test` best candidates by `score` are scored again as match(image rows, text rows)
    (ITM's match logit) plus their score, every other candidate below them. Keys as
    multi_caption_recall's with an "itm_" prefix."""
    n_img, n_txt = image_embeds.shape[0], text_embeds.shape[0]
    owner = _owners(caption_image, n_img, n_txt)
    k_max = max(ks)

    def ranks(n_query, n_cand, scores_of, rows_cols, is_own):
        k = min(k_test, n_cand)
        if k < min(k_max, n_cand):
            raise ValueError(f"k_test {k_test} is below the largest K ({k_max}): R@{k_max} would count candidates "
                             "outside the re-ranked ones")
        out = torch.empty(n_query, dtype=torch.long)
        for s in range(0, n_query, block):
            sims = require_finite(scores_of(s, s + block).float(), "retrieval scores")       # [b, candidates]
            top_sim, top = sims.topk(k, dim=1)
            queries = torch.arange(s, s + sims.shape[0]).unsqueeze(1).expand(-1, k)
            logits = require_finite(match(*rows_cols(queries.reshape(-1), top.reshape(-1))).float().cpu(),
                                    "ITM match logits").view(-1, k)
            order = (logits + top_sim).argsort(dim=1, descending=True, stable=True)
            own = is_own(queries, top.gather(1, order))
            out[s:s + sims.shape[0]] = _first_own(own, k_max)
        return out

    i2t = ranks(n_img, n_txt, lambda a, b: score(image_embeds[a:b], text_embeds),
                lambda q, c: (q, c), lambda q, c: owner[c] == q)
    t2i = ranks(n_txt, n_img, lambda a, b: score(image_embeds, text_embeds[a:b]).T,
                lambda q, c: (c, q), lambda q, c: c == owner[q])
    return _recalls(i2t, t2i, ks, "itm_")


@torch.no_grad()
def caption_retrieval_evaluate(model, split: RetrievalSplit, tokenizer, image_size: int, context_length: int = 77,
                               batch_size: int = 64, ks: Sequence[int] = (1, 5, 10),
                               image_features: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                               text_features: Optional[Callable[[List[str]], torch.Tensor]] = None,
                               score=None, rerank: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
                               k_test: int = 128, pipeline: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """Embeds the split's images once (the model's evaluation transform at `image_size`: its
    family's mean and std, BLIP-2's images resized to the square; `pipeline`, clip_transform's
    keywords, overrides it) and its
    captions, then `multi_caption_recall`. `image_features` (pixels -> features) and
    `text_features` (a batch of caption strings -> features) default to the model's normalised
    get_image_features / get_text_features, the captions read by `tokenizer`; `score` as
    multi_caption_recall takes it (BLIP-2: best_query_score). With `rerank` (image indices, caption
    indices -> match logits), also `reranked_recall` over each query's `k_test` best."""
    from ..data.transforms import ImageTransform, clip_transform, read_image

    device = next(model.parameters()).device
    image_features = image_features or (lambda px: F.normalize(model.get_image_features(px).float(), dim=-1))
    text_features = text_features or (lambda captions: F.normalize(model.get_text_features(
        tokenizer(captions, context_length=context_length).to(device)).float(), dim=-1))
    from ..models.timm_compat import model_transform_settings

    transform = ImageTransform(clip_transform(image_size, **(pipeline or model_transform_settings(model))))
    images = []
    for s in range(0, len(split.images), batch_size):
        pixels = torch.stack([transform(read_image(p)) for p in split.images[s:s + batch_size]])
        images.append(image_features(pixels.to(device)).cpu())
    texts = [text_features(split.captions[s:s + batch_size]).cpu() for s in range(0, len(split.captions), batch_size)]
    images, texts = torch.cat(images), torch.cat(texts)
    out = multi_caption_recall(images, texts, split.caption_image, ks, score)
    if rerank is not None:
        out.update(reranked_recall(images, texts, split.caption_image, score or (lambda a, b: a @ b.T), rerank,
                                   k_test, ks))
    out.update(num_images=len(split.images), num_captions=len(split.captions))
    return out
