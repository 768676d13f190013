"""Sugar's evaluation through the retrieval vectors r (and, for comparison, the pooled hidden
states h the projector reads), on held-out data only.

Interleaved retrieval. Each held-out sample is a sequence of 2-4 Fashion-MNIST items, each an
image and its sentence. It is rendered twice: its images alone, in order (an image sequence), and
its sentences alone (a text sequence). Each rendering is embedded at its last slice (the point
whose hidden state has read the whole sequence). Image->text: each image sequence ranks every text
sequence by cosine; a hit at k when one of the top k names the same items in the same order (the
sample's own text sequence always does; another with the same item sequence counts too, since
nothing tells them apart). Text->image the same way. A prefix/rest split is not used: the items of
one sequence are drawn independently, so a prefix says nothing about the rest. The same ranking by
M_l itself (`_targets`) is the ceiling, where r would land if it fitted its targets exactly, and
`retrieval_target_pearson` how closely the cosines of r follow M_l over those image-text pairs.

Item naming through r: each held-out sample's first image, alone, ranks the ten sentences "A photo
of a {item}." (one per Fashion-MNIST class, each alone); R@1 is zero-shot classification through
the retrieval space, the single-slice case of the cross block.

Held-out target fit: the held-out samples' points (k per sample, drawn from a fixed seed),
their M_r against M_l from the same frozen encoders (the held-out file's own cache): L_d, and
the Pearson correlation of M_r and M_l over pairs of different samples (the part of M_l that is
not the constant 1 within a sample).

Winoground-style scores on the minimal pairs (two scenes whose shapes swap colours, a caption
each): every image and caption embedded alone, s(c, i) the cosine. Text score: each image ranks its
own caption first; image score: each caption ranks its own image first; group: both. Chance is
25 / 25 / 16.7 %.

The yes/no probe on absent objects and retrieval-augmented generation: `sugar_chat`."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..data.instruct import FASHION_NAMES
from ..eval.finite import require_finite
from .interleaved_data import InterleavedSample, pair_samples, read_interleaved, read_pairs


def item_name(text: str) -> str:
    """The Fashion-MNIST name a sentence mentions (the longest match: "t-shirt" over "shirt")."""
    found = [n for n in FASHION_NAMES if n in text.lower()]
    return max(found, key=len) if found else text


def sample_items(sample: InterleavedSample) -> List[Tuple[str, str]]:
    """(image path, its sentence) of each item: items are consecutive segment pairs, the image
    first or the sentence first."""
    segs = sample.segments
    out = []
    for a, b in zip(segs[0::2], segs[1::2]):
        image, text = (a, b) if "image" in a else (b, a)
        if "image" in image and "text" in text:
            out.append((image["image"], text["text"]))
    return out


def _only(sample: InterleavedSample, kind: str) -> InterleavedSample:
    segments = [seg for seg in sample.segments if kind in seg]
    sid = f"{sample.id}-{kind}s"
    return InterleavedSample(sid, segments, sample.path, f"{sample.where} ({kind}s only)",
                             {"id": sid, "segments": segments})


def embed_samples(task, model, samples: Sequence[InterleavedSample], batch_size: int) -> Tuple[torch.Tensor, ...]:
    """(r [N, E], h [N, D]) of each sample at its last non-empty slice."""
    return embed_encoded(model, task.encode_samples(list(samples)), task.transform, batch_size)


@torch.no_grad()
def embed_encoded(model, encoded, transform, batch_size: int) -> Tuple[torch.Tensor, ...]:
    """(r [N, E], h [N, D]) of each encoded interleaved sample at its last non-empty slice."""
    from .conversation_data import load_pixels
    from .sugar_task import point_weights

    device = model.device
    rs, hs = [], []
    n = len(encoded.spans)
    for start in range(0, n, batch_size):
        rows = list(range(start, min(start + batch_size, n)))
        spans = [encoded.spans[i] for i in rows]
        for i, s in zip(rows, spans):
            if not any(b > a for a, b in s):
                raise ValueError(f"{encoded.samples[i].where}: no slice with tokens (empty texts only): nothing to embed")
        points = torch.tensor([[max(j for j, (a, b) in enumerate(s) if b > a)] for s in spans])
        width = int(encoded.attention_mask[rows].sum(1).max())
        weights = point_weights(spans, [encoded.kinds[i] for i in rows], points, width)
        pixels = load_pixels([p for i in rows for p in encoded.images[i]], transform)
        out = model(input_ids=encoded.input_ids[rows, :width].to(device),
                    pixel_values=None if pixels is None else pixels.to(device),
                    attention_mask=encoded.attention_mask[rows, :width].to(device), point_weights=weights.to(device))
        rs.append(out["r"].float().cpu())
        hs.append(out["points"].float().cpu())
    # Rankings and correlations of NaN came out as numbers (index order), as eval/finite.py says.
    return require_finite(torch.cat(rs), "Sugar's embeddings r"), require_finite(torch.cat(hs), "Sugar's points h")


def recall_at(similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, float]:
    """Share of rows whose top k columns hold a relevant one (relevant: bool, same shape)."""
    order = similarity.argsort(dim=1, descending=True)
    hit = relevant.gather(1, order)
    return {k: float(hit[:, :k].any(1).float().mean()) for k in ks}


def interleaved_retrieval(task, model, path: str, limit: int, batch_size: int) -> Dict[str, float]:
    kept = [(i, s) for i, s in enumerate(read_interleaved(path, limit))
            if any("image" in g for g in s.segments) and any("text" in g for g in s.segments)]
    samples = [s for _, s in kept]
    labels = [tuple(item_name(g["text"]) for g in s.segments if "text" in g) for s in samples]
    relevant = torch.tensor([[a == b for b in labels] for a in labels])
    r_img, h_img = embed_samples(task, model, [_only(s, "image") for s in samples], batch_size)
    r_txt, h_txt = embed_samples(task, model, [_only(s, "text") for s in samples], batch_size)
    m_l = single_modality_targets(task, path, [i for i, _ in kept])
    out = {}
    for space, (img, txt) in {"r": (r_img, r_txt), "h": (h_img, h_txt), "targets": (None, None)}.items():
        sim = m_l if space == "targets" else F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        for direction, (s, rel) in {"i2t": (sim, relevant), "t2i": (sim.T, relevant.T)}.items():
            for k, v in recall_at(s, rel).items():
                out[f"retrieval_{direction}_r{k}" + {"r": "", "h": "_hidden", "targets": "_targets"}[space]] = v
        if space == "r":  # does r fit its targets on the pairs retrieval ranks?
            out["retrieval_target_pearson"] = float(torch.corrcoef(torch.stack([sim.flatten(), m_l.flatten()]))[0, 1])
    out["retrieval_queries"] = len(samples)
    return out


def single_modality_targets(task, path: str, indices: Sequence[int]) -> torch.Tensor:
    """M_l [N, N] between samples `indices` of `path` rendered as their images alone (rows) and as
    their sentences alone (columns): GAK over the frozen encoders' slice vectors, no model. Ranked
    by it, retrieval shows what r would reach if it fitted its targets on these pairs exactly. A
    slice's vector does not depend on its neighbours, so the renderings' vectors are rows of the
    held-out file's own cache (the one `target_fit` reads)."""
    from .sugar_targets import SliceVectors, slice_vectors, target_matrix

    section = task.recipe.targets
    v = slice_vectors(path, section, task.recipe.data.image_folder, log=lambda *a: None)
    rows: List[int] = []
    offsets = [0]
    for image in (True, False):
        for i in indices:
            a, b = v.slices(i)
            rows += [a + j for j in range(b - a) if bool(v.is_image[a + j]) == image]
            offsets.append(len(rows))
    at = torch.tensor(rows, dtype=torch.long)
    rendered = SliceVectors(v.first[at], v.second[at], v.is_image[at], torch.tensor(offsets))
    n = len(indices)
    last = [(k, offsets[k + 1] - offsets[k] - 1) for k in range(2 * n)]
    return target_matrix(rendered, last[:n], last[n:], section)


def item_naming(task, model, path: str, limit: int, batch_size: int) -> Dict[str, float]:
    from ..data.instruct import with_article

    samples = read_interleaved(path, limit)
    images, labels = [], []
    for s in samples:
        image, text = sample_items(s)[0]
        images.append(InterleavedSample(f"{s.id}-item", [{"image": image}], s.path, f"{s.where} (first item)", {}))
        labels.append(FASHION_NAMES.index(item_name(text)))
    sentences = [InterleavedSample(f"class-{c}", [{"text": f"A photo of {with_article(n)}."}], path, f"class {n}", {})
                 for c, n in enumerate(FASHION_NAMES)]
    out = {}
    r_img, h_img = embed_samples(task, model, images, batch_size)
    r_txt, h_txt = embed_samples(task, model, sentences, batch_size)
    relevant = torch.tensor(labels)[:, None] == torch.arange(len(FASHION_NAMES))[None, :]
    for suffix, (img, txt) in {"": (r_img, r_txt), "_hidden": (h_img, h_txt)}.items():
        sim = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        for k, v in recall_at(sim, relevant, (1, 3)).items():
            out[f"item_naming_r{k}{suffix}"] = v
    return out


@torch.no_grad()
def target_fit(task, model, path: str, limit: int, batch_size: int) -> Dict[str, float]:
    from ..losses.sugar import retrieval_similarity
    from .conversation_data import load_pixels
    from .interleaved_data import sample_points
    from .sugar_targets import slice_vectors, target_matrix
    from .sugar_task import point_weights

    k = task.recipe.loss.points_per_sample
    encoded = task.encode_samples(read_interleaved(path, limit))
    vectors = slice_vectors(path, task.recipe.targets, task.recipe.data.image_folder, log=lambda *a: None)
    chosen = sample_points(encoded, k, torch.Generator().manual_seed(1))
    points = torch.tensor([c + [-1] * (k - len(c)) for c in chosen])                 # [N, k], -1: none
    rs = []
    for start in range(0, len(chosen), batch_size):
        rows = list(range(start, min(start + batch_size, len(chosen))))
        width = int(encoded.attention_mask[rows].sum(1).max())
        w = point_weights([encoded.spans[i] for i in rows], [encoded.kinds[i] for i in rows], points[rows], width)
        pixels = load_pixels([p for i in rows for p in encoded.images[i]], task.transform)
        out = model(input_ids=encoded.input_ids[rows, :width].to(model.device),
                    pixel_values=None if pixels is None else pixels.to(model.device),
                    attention_mask=encoded.attention_mask[rows, :width].to(model.device), point_weights=w.to(model.device))
        rs.append(out["r"].float().cpu()[points[rows].reshape(-1) >= 0])
    r = require_finite(torch.cat(rs), "Sugar's embeddings r")
    flat = [(i, j) for i, c in enumerate(chosen) for j in c]
    m_r, m_l = retrieval_similarity(r, r), target_matrix(vectors, flat, flat, task.recipe.targets)
    owner = torch.tensor([i for i, _ in flat])
    other = owner[:, None] != owner[None, :]
    pearson = float(torch.corrcoef(torch.stack([m_r[other], m_l[other]]))[0, 1])
    return {"heldout_l_d": float((m_r - m_l).pow(2).sum() / len(flat)), "heldout_target_pearson": pearson}


def winoground(task, model, path: str, limit: int, batch_size: int) -> Dict[str, float]:
    pairs = read_pairs(path)[: limit or None]
    images: List[InterleavedSample] = []
    captions: List[InterleavedSample] = []
    for pair in pairs:
        c0i0, c1i0, c0i1, c1i1 = pair_samples(pair)
        images += [_only(c0i0, "image"), _only(c0i1, "image")]
        captions += [_only(c0i0, "text"), _only(c1i1, "text")]
    out = {}
    embedded_images = embed_samples(task, model, images, batch_size)
    embedded_captions = embed_samples(task, model, captions, batch_size)
    for space, index in {"r": 0, "h": 1}.items():
        img = F.normalize(embedded_images[index], dim=-1).view(len(pairs), 2, -1)
        txt = F.normalize(embedded_captions[index], dim=-1).view(len(pairs), 2, -1)
        s = torch.einsum("pcd,pid->pci", txt, img)                                     # s[p, caption, image]
        text_ok = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
        image_ok = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
        suffix = "" if space == "r" else "_hidden"
        out.update({f"winoground_text{suffix}": float(text_ok.float().mean()),
                    f"winoground_image{suffix}": float(image_ok.float().mean()),
                    f"winoground_group{suffix}": float((text_ok & image_ok).float().mean())})
    out["winoground_pairs"] = len(pairs)
    return out


def evaluate_sugar(task, model, final: bool = False) -> Dict[str, Any]:
    from .sugar_chat import evaluate_chat

    d, cfg = task.recipe.data, task.recipe.eval
    out: Dict[str, Any] = {}
    was_training = model.training
    model.eval()
    try:
        if d.eval:
            out.update(interleaved_retrieval(task, model, d.eval, cfg.max_samples, cfg.batch_size))
            out.update(item_naming(task, model, d.eval, cfg.max_samples, cfg.batch_size))
            out.update(target_fit(task, model, d.eval, cfg.target_fit_samples, cfg.batch_size))
            out.update(evaluate_chat(task, model))
        if d.pairs:
            out.update(winoground(task, model, d.pairs, cfg.max_samples, cfg.batch_size))
    finally:
        model.train(was_training)
    if final and task.out_dir and task.rank == 0 and out:
        from ..io import write_json

        write_json(os.path.join(task.out_dir, "retrieval.json"), out)
    return out
