"""Sugar's label side (arXiv 2411.00304, "triple kernel" and GAK): every slice of an interleaved
data file embedded once by frozen encoders, cached on disk, and M_l over a batch's points.

A slice vector is two blocks. First block, the single-modality encoder: an image through the MAE
or BEiT demo encoder (mean of its patch tokens; DINOv2 in the paper), a text through the CLIP demo's
text tower (mean of its tokens up to the end of text; BGE in the paper). Second block, the cross
modal one: CLIP's projected image or text embedding. `tessera.ops.triple_kernel_cost` compares
same-modality slices by the first block and image-text pairs by the second. CLIP-only (the
paper's ablation) puts the CLIP embedding in both blocks.

M_l[i, j] = GAK(prefix_i, prefix_j), prefix_i the slices of point i's sample up to and including
its slice, and 1 for two points of one sample (the paper's rule). Normalised GAK by default.

The cache (`sugar_target_cache.py`) holds the vectors of one data file, encoders and images."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .. import data as tdata
from ..models.pretrained import checkpoint_config
from ..schema import require
from .checkpoint import resolve_checkpoint
from .conversation_data import image_paths, load_pixels
from .image_data import checkpoint_pipeline
from .interleaved_data import read_interleaved
from .sugar_target_cache import cache_path, fingerprint, layout, read_cache, write_cache

PAIRS_PER_CALL = 8192


@dataclass
class SugarTargets:
    checkpoint_fields: ClassVar[Tuple[str, ...]] = ("clip", "image_encoder")
    clip: str = "runs/demo"                 # CLIP run: the cross block, and its text tower stands in for BGE
    image_encoder: str = "runs/demo-mae"    # MAE or BEiT run: the image-only block (DINOv2's stand-in)
    triple_kernel: bool = True              # false: CLIP-only, every pair compared in CLIP's space (ablation)
    delta: float = 1.0                      # GAK bandwidth, sigma = delta * sqrt((n + m) / 2): widest spread of M_l in (0, 1)
    normalized: bool = True                 # K / sqrt(K(x,x) K(y,y)): in (0, 1] like a cosine, length-free
    cache_dir: str = ""                     # default: `sugar-targets/` beside the data file
    batch_size: int = 256                   # encoder batch when building the cache

    def validate(self, where: str) -> None:
        require(0 < self.delta < float("inf"), f"{where}.delta must be finite and > 0, got {self.delta}")
        require(bool(self.clip), f"{where}.clip: a CLIP run folder is needed (the cross block)")
        require(bool(self.image_encoder) or not self.triple_kernel,
                f"{where}.image_encoder: the triple kernel needs an image-only encoder (or triple_kernel: false)")
        require(self.batch_size >= 1, f"{where}.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class SliceVectors:
    first: torch.Tensor                     # [S, Df] L2-normalised (zero-padded to the wider modality)
    second: torch.Tensor                    # [S, Ds] L2-normalised CLIP embeddings
    is_image: torch.Tensor                  # [S] bool
    offsets: torch.Tensor                   # [N + 1]: sample i's slices are offsets[i]:offsets[i + 1]
    fingerprint: str = ""

    def slices(self, sample: int) -> Tuple[int, int]:
        return int(self.offsets[sample]), int(self.offsets[sample + 1])


def _encoder_folders(section: SugarTargets) -> List[str]:
    folders = [resolve_checkpoint(section.clip, "targets.clip", "train the CLIP demo first: make demo")]
    if section.image_encoder:
        folders.append(resolve_checkpoint(section.image_encoder, "targets.image_encoder",
                                          "train the MAE demo first: make demo"))
    return folders


def _slices(data_file: str, image_folder: str):
    """(per sample, its slices' kinds: True for an image; every image path; every text)."""
    kinds, images, texts = [], [], []
    for s in read_interleaved(data_file):
        folder = image_folder or os.path.dirname(os.path.abspath(s.path))
        kinds.append([])
        for j, seg in enumerate(s.segments):
            kinds[-1].append("image" in seg)
            if "image" in seg:
                images.append(image_paths({"image": seg["image"]}, folder, f"{s.where}: segment {j}")[0])
            else:
                texts.append(seg["text"])
    return kinds, images, texts


def slice_vectors(data_file: str, section: SugarTargets, image_folder: str = "", log=print) -> SliceVectors:
    """The slice vectors of every sample of `data_file`, from the cache when it holds this data's
    (fingerprint and layout), else computed and written there (atomically)."""
    kinds, images, texts = _slices(data_file, image_folder)
    is_image, offsets = layout(kinds)
    folders = _encoder_folders(section)
    digest = fingerprint(data_file, folders, images)
    path = cache_path(data_file, section.cache_dir, digest)
    state = read_cache(path, digest, is_image, offsets, _widths(folders, section), log)
    if state is not None:
        return SliceVectors(state["first"], state["second"], is_image, offsets, digest)
    log(f"sugar: embedding the slices of {data_file} with the frozen encoders -> {path}")
    first, second = compute_slice_vectors(folders, section, is_image, images, texts)
    write_cache(path, {"fingerprint": digest, "first": first, "second": second, "is_image": is_image,
                       "offsets": offsets}, log)
    return SliceVectors(first, second, is_image, offsets, digest)


def _widths(folders: Sequence[str], section: SugarTargets) -> Tuple[int, int]:
    """The widths of the first and second blocks compute_slice_vectors gives these encoders."""
    clip = checkpoint_config(folders[0])  # transformers' defaults where a file leaves a size out
    second = int(clip.get("projection_dim", 512))
    if not section.image_encoder:
        return second, second
    text = int((clip.get("text_config") or {}).get("hidden_size", 512))
    return max(int(checkpoint_config(folders[1]).get("hidden_size", 768)), text), second


def _image_only_encoder(folder: str):
    """(the run's model, its encoder): MAE's `vit` or BEiT's `beit`, a module with
    forward_features (the caller keeps the model alive while it uses the part)."""
    from ..factory import from_pretrained

    model = from_pretrained(folder).eval()
    part = next((getattr(model, n) for n in ("vit", "beit") if hasattr(model, n)), model)
    if not hasattr(part, "forward_features"):
        raise ValueError(f"targets.image_encoder {folder}: a {type(model).__name__} has no image encoder with "
                         "forward_features (expected an MAE or BEiT run)")
    return model, part


@torch.no_grad()
def compute_slice_vectors(folders: Sequence[str], section: SugarTargets, is_image: torch.Tensor,
                          images: Sequence[str], texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(first, second) blocks of every slice, in the data file's order of slices."""
    from ..factory import from_pretrained
    from ..text import ClipTokenizer

    clip = from_pretrained(folders[0]).eval()
    parent, image_only = _image_only_encoder(folders[1]) if section.image_encoder else (None, None)
    size = int(clip.config["vision_config"]["image_size"])
    transform = tdata.ImageTransform(tdata.clip_transform(size, train=False, **checkpoint_pipeline(folders[0], clip)))
    if image_only is not None:  # its own size and normalisation (MAE's are ImageNet's, not CLIP's)
        own_size = int((parent.config.get("vision_config") or parent.config)["image_size"])
        own = tdata.ImageTransform(tdata.clip_transform(own_size, **checkpoint_pipeline(folders[1], parent)))
    tokenizer = ClipTokenizer()
    context = int(clip.config["text_config"]["max_position_embeddings"])
    bs = section.batch_size
    img_first, img_second, txt_first, txt_second = [], [], [], []
    for start in range(0, len(images), bs):
        px = load_pixels(images[start:start + bs], transform)
        img_second.append(clip.get_image_features(px))
        if image_only is not None:  # patch tokens, class token dropped
            img_first.append(image_only.forward_features(load_pixels(images[start:start + bs], own))[:, 1:].mean(1))
    for start in range(0, len(texts), bs):
        ids = tokenizer(texts[start:start + bs], context_length=context)
        # CLIP's text is causal and pooled at its end token (the highest id, as CLIP pools), so
        # the padding after it changes nothing; the mean covers the tokens up to that end.
        end = ids.argmax(-1, keepdim=True)
        mask = (torch.arange(ids.shape[1])[None] <= end).float()
        txt_second.append(clip.get_text_features(ids))
        tokens = clip.text_model.forward_features(ids)
        txt_first.append((tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))

    def cat(parts, width):
        return F.normalize(torch.cat(parts), dim=-1) if parts else torch.zeros(0, width)

    second_img, second_txt = cat(img_second, 1), cat(txt_second, 1)
    if image_only is None:  # CLIP only: the cross block in both places
        first_img, first_txt = second_img, second_txt
    else:
        first_img, first_txt = cat(img_first, 1), cat(txt_first, 1)
    df, ds = _widths(folders, section)  # the encoders' widths, whichever modalities the file has
    first = torch.zeros(is_image.numel(), df)
    second = torch.zeros(is_image.numel(), ds)
    for rows, f, s in ((is_image, first_img, second_img), (~is_image, first_txt, second_txt)):
        first[rows, :f.shape[-1]] = f  # slices of one kind keep the file's order
        second[rows, :s.shape[-1]] = s
    return first, second


def _prefixes(vectors: SliceVectors, points: Sequence[Tuple[int, int]], clip_only: bool):
    """Padded prefix sequences of `points` (sample, slice): first [P, L, Df], second, is_image, lengths.
    One gather per tensor (a copy per point cost ~1 ms of a demo step)."""
    samples = torch.tensor([i for i, _ in points], dtype=torch.long)
    lengths = torch.tensor([j + 1 for _, j in points], dtype=torch.long)
    start = vectors.offsets[samples]
    count = vectors.offsets[samples + 1] - start
    bad = ((lengths < 1) | (lengths > count)).nonzero()
    if len(bad):
        p = int(bad[0, 0])
        raise ValueError(f"point at slice {int(lengths[p]) - 1} of sample {int(samples[p])}, which has "
                         f"{int(count[p])} slices")
    width = int(lengths.max())
    keep = torch.arange(width)[None, :] < lengths[:, None]                       # [P, L]
    rows = torch.where(keep, start[:, None] + torch.arange(width)[None, :], 0)
    dtype = torch.get_default_dtype()  # as the zero-filled buffers of before

    def gather(t):
        return torch.where(keep[..., None], t[rows], 0).to(dtype)

    second = gather(vectors.second)
    first = second if clip_only else gather(vectors.first)
    return first, second, vectors.is_image[rows] & keep, lengths


@torch.no_grad()
def target_matrix(vectors: SliceVectors, rows: Sequence[Tuple[int, int]], cols: Sequence[Tuple[int, int]],
                  section: SugarTargets) -> torch.Tensor:
    """M_l [len(rows), len(cols)] between points given as (sample index, slice index): GAK over
    the triple-kernel cost of their prefixes; 1 where both points belong to one sample."""
    if not rows or not cols:  # e.g. a rank whose micro-batch is instruction rows only
        return torch.ones(len(rows), len(cols))
    block = max(1, PAIRS_PER_CALL // max(1, len(cols)))  # bounds the [pairs, L, L] costs below
    if len(rows) > block:
        return torch.cat([target_matrix(vectors, rows[a:a + block], cols, section)
                          for a in range(0, len(rows), block)])
    from .. import ops

    clip_only = not section.triple_kernel
    x = _prefixes(vectors, rows, clip_only)
    y = _prefixes(vectors, cols, clip_only)
    R, C, N, M = len(rows), len(cols), x[2].shape[1], y[2].shape[1]

    def every_pair(a, b):
        """The x-y cost of every (row, col) pair, [R * C, N, M], from one [R*N, C*M] call over the
        slices: copying the prefixes for each pair first cost ~12 ms of a demo step."""
        flat = [t.reshape(1, t.shape[0] * t.shape[1], *t.shape[2:]) for t in (*a[:3], *b[:3])]
        return ops.triple_kernel_cost(*flat).view(R, N, C, M).transpose(1, 2).reshape(R * C, N, M)

    # GAK only where it is needed: not for two points of one sample (M_l is 1 there), and once for a
    # pair met twice within this call (p against q and q against p: one rank's rows are among its
    # columns), since the kernel is symmetric. A point's id is its slice's index in `vectors`.
    def ids(points):
        return torch.tensor([int(vectors.offsets[i]) + j for i, j in points], dtype=torch.long)

    same = torch.tensor([i for i, _ in rows])[:, None] == torch.tensor([i for i, _ in cols])[None, :]
    p, q = ids(rows)[:, None].expand(R, C), ids(cols)[None, :].expand(R, C)
    r_at, c_at = (~same).nonzero(as_tuple=True)
    if len(r_at) == 0:  # every pair within one sample
        return torch.ones(R, C)
    key = torch.minimum(p, q)[r_at, c_at] * len(vectors.first) + torch.maximum(p, q)[r_at, c_at]
    unique, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((len(unique),), len(key)).scatter_reduce_(0, inverse, torch.arange(len(key)), "amin")
    r_at, c_at = r_at[first], c_at[first]                   # one (row, col) per distinct pair
    xy = every_pair(x, y).view(R, C, N, M)[r_at, c_at]
    xx = yy = None
    if section.normalized:  # each prefix's own cost once, then per pair
        xx = ops.triple_kernel_cost(*x[:3], *x[:3])[r_at]
        yy = ops.triple_kernel_cost(*y[:3], *y[:3])[c_at]
    k = ops.gak_from_cost(xy, xx, yy, delta=section.delta, normalized=section.normalized,
                          lengths=(x[3][r_at], y[3][c_at]))
    out = torch.ones(R, C, dtype=k.dtype)
    out[~same] = k[inverse]
    return out.float()
