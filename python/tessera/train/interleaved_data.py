"""Interleaved image-text data (Sugar, arXiv 2411.00304): JSON lines of
{"id", "segments": [{"image": path} | {"text": str}, ...]} (other keys, such as "kind", pass
through), rendered for LLaVA as a plain language-model sample, with each segment's (slice's)
token span.

Rendering: the begin-of-sequence token, then the segments in order — an image as `image_tokens`
image ids (its `<image>` placeholder expanded as `chat.render` expands it), a text tokenized on
its own, as the chat templates tokenize each of their segments — then end-of-sequence. No chat
template: templates frame user and assistant turns, and an interleaved document has neither
(LLaVA's `plain` format without its newline). Labels: the text tokens and the end of sequence.

Spans: `spans[i][j] = (start, end)`, the tokens of segment j of sample i in input_ids. tessera's
LLaVA replaces each image id one for one with a projected image feature (`splice_image_features`,
transformers' masked_scatter), so input positions are the positions of the hidden states its
forward returns: an image's span covers exactly its `image_seq_length` features.

The checks of the conversation data, with the segment named: a text that holds an `<image>`
placeholder (placeholders would not match the images: an image is a segment of its own), an
image path outside the data folder or missing, a truncation that would cut an image, text the
tokenizer maps to its unknown token, nothing to learn after truncation. Errors name the file,
the line, the sample's id and the segment. `sample_points` draws slice ends (Sugar's points) and
never an empty slice (an empty text, or one cut by truncation); `check_points` refuses one."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..chat import IGNORE, IMAGE_PLACEHOLDER, bos_eos
from ..io import parse_json_line, read_text
from ..bounded_encoding import encode_at_most
from .conversation_data import check_image_file, image_paths, pad_rows, refuse_unknown_tokens, truncate

Span = Tuple[int, int]
SEGMENT_KINDS = ("image", "text")


@dataclass
class InterleavedSample:
    id: Union[str, int]
    segments: List[Dict[str, str]]          # each {"image": path} or {"text": str}
    path: str                               # the file it was read from (image paths are relative to its folder)
    where: str                              # "file:line (id ...)", for messages
    record: Dict[str, Any]                  # the object as read


@dataclass
class EncodedInterleaved:
    input_ids: torch.Tensor                 # [N, max_length], right-padded with 0
    labels: torch.Tensor                    # [N, max_length], -100 outside text tokens and end of sequence
    attention_mask: torch.Tensor            # [N, max_length]
    images: List[List[str]]                 # per sample, in segment order
    spans: List[List[Span]]                 # per sample, per segment: [start, end) in input_ids
    kinds: List[List[str]]                  # per sample, per segment: "image" or "text"
    samples: List[InterleavedSample]


def check_record(record: Any, where: str) -> None:
    """The record's types: an object with an id and a non-empty list of segments, each exactly
    one of {"image": non-empty path} or {"text": str}. Errors name the segment."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object {{'id', 'segments'}}, got {str(record)[:80]!r}")
    if "id" not in record or not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
        raise ValueError(f"{where}: needs an 'id' (a string or an integer), got {record.get('id')!r}")
    segments = record.get("segments")
    if not isinstance(segments, list):
        raise ValueError(f"{where}: 'segments' must be a list of {{'image': path}} or {{'text': str}}, "
                         f"got {str(segments)[:80]!r}")
    if not segments:
        raise ValueError(f"{where}: the segment list is empty (a sample is at least one image or text)")
    for j, seg in enumerate(segments):
        at = f"{where}: segment {j}"
        if not isinstance(seg, dict) or len(seg) != 1:
            raise ValueError(f"{at}: expected one of {{'image': path}} or {{'text': str}}, got {str(seg)[:80]!r}")
        (kind, value), = seg.items()
        if kind not in SEGMENT_KINDS:
            raise ValueError(f"{at}: unknown segment kind {kind!r} (a segment is {{'image': path}} or {{'text': str}})")
        if not isinstance(value, str) or (kind == "image" and not value):
            raise ValueError(f"{at}: the {kind} must be a {'non-empty path' if kind == 'image' else 'string'}, "
                             f"got {value!r}")


def json_lines(path: str, what: str):
    """(line number, "path:line", parsed object, line) for every non-blank line of a JSON-lines
    file; a line that is not JSON is an error naming it."""
    text = read_text(path, f"{what} (JSON lines)")
    for number, line in enumerate(text.split("\n"), 1):  # JSON lines end at \n only
        if not line.strip():
            continue
        where = f"{path}:{number}"
        yield number, where, parse_json_line(line, where, f"{what} is one JSON object per line"), line


def read_interleaved(path: str, limit: int = 0) -> List[InterleavedSample]:
    """The samples of an interleaved JSON-lines file, each checked (`check_record`); ids are
    unique (retrieval names samples by them). An empty file is an error."""
    samples: List[InterleavedSample] = []
    first_line: Dict[Union[str, int], int] = {}
    for number, where, record, _ in json_lines(path, "interleaved data"):
        if isinstance(record, dict) and isinstance(record.get("id"), (str, int)):
            where += f" (id {record['id']!r})"
        check_record(record, where)
        if record["id"] in first_line:
            raise ValueError(f"{where}: the id is already used at line {first_line[record['id']]}")
        first_line[record["id"]] = number
        samples.append(InterleavedSample(record["id"], record["segments"], path, where, record))
        if limit and len(samples) == limit:
            break
    if not samples:
        raise ValueError(f"{path}: no samples (expected one {{'id', 'segments'}} object per line)")
    return samples


def encode_interleaved(samples: Sequence[InterleavedSample], tokenizer, image_token_id: int, image_tokens: int,
                       max_length: int, image_folder: str = "", check_files: bool = True) -> EncodedInterleaved:
    """Renders, checks and pads every sample (see the module's docstring); `image_tokens` is the
    model's `image_seq_length`. Image paths are relative to `image_folder` (default: the folder
    of the sample's file)."""
    rows, labels, images, spans, kinds = [], [], [], [], []
    bos, eos = bos_eos(tokenizer, "encode_interleaved")
    for s in samples:
        folder = image_folder or os.path.dirname(os.path.abspath(s.path))
        ids, lab, own_spans, own_images = [bos], [IGNORE], [], []
        capped = False  # text past max_length left unencoded: the count below is a lower bound
        for j, seg in enumerate(s.segments):
            at = f"{s.where}: segment {j}"
            if "image" in seg:
                own_images.append(image_paths({"image": seg["image"]}, folder, at)[0])
                piece, learned = [image_token_id] * image_tokens, [IGNORE] * image_tokens
            else:
                if IMAGE_PLACEHOLDER in seg["text"]:
                    n = seg["text"].count(IMAGE_PLACEHOLDER)
                    raise ValueError(f"{at}: the text holds {n} image placeholder(s) "
                                     f"{IMAGE_PLACEHOLDER!r}, but the sample's images are its image segments: "
                                     "placeholders would not match the images (give the image a segment of its own)")
                # What truncation keeps and one more token, which tells that it cuts.
                try:
                    piece, left_out = encode_at_most(tokenizer, seg["text"], max_length + 1 - len(ids))
                except ValueError as e:  # a lone surrogate escape (valid JSON, not text)
                    raise ValueError(f"{at}: {e}") from None
                capped = capped or left_out
                refuse_unknown_tokens(piece, tokenizer, at, "the tokenizer cannot represent this text")
                learned = piece
            own_spans.append((len(ids), len(ids) + len(piece)))
            ids += piece
            lab += learned
        ids.append(eos)
        lab.append(eos)
        if len(ids) > max_length:
            cut = [j for j, seg in enumerate(s.segments) if "image" in seg and own_spans[j][1] > max_length]
            if cut:
                a, b = own_spans[cut[0]]
                count, where = (f"at least {len(ids)}", "") if capped else (f"{len(ids)}", f" (tokens {a} to {b})")
                raise ValueError(f"{s.where}: segment {cut[0]}: the sample has {count} tokens, more than max_length "
                                 f"{max_length}, and truncation would cut this image{where}; raise data.max_length")
        ids, lab = truncate(ids, lab, image_token_id, max_length, s.where)
        if check_files:
            for j, p in zip([j for j, seg in enumerate(s.segments) if "image" in seg], own_images):
                check_image_file(p, f"{s.where}: segment {j}")
        rows.append(ids)
        labels.append(lab)
        images.append(own_images)
        spans.append([(min(a, len(ids)), min(b, len(ids))) for a, b in own_spans])  # text cut by truncation
        kinds.append(["image" if "image" in seg else "text" for seg in s.segments])
    return EncodedInterleaved(*pad_rows(rows, labels, max_length), images, spans, kinds, list(samples))


Spans = Union[EncodedInterleaved, Sequence[Sequence[Span]]]


def _spans_and_names(spans: Spans, names: Optional[Sequence[str]]):
    """Encoded data name their samples by file, line and id; bare spans by index."""
    if isinstance(spans, EncodedInterleaved):
        return spans.spans, list(names) if names is not None else [s.where for s in spans.samples]
    return spans, list(names) if names is not None else [f"sample {i}" for i in range(len(spans))]


def check_points(spans: Spans, points: Sequence[Sequence[int]], names: Optional[Sequence[str]] = None) -> None:
    """Every point (a slice index per sample) names a slice with tokens: the hidden states of an
    empty slice (an empty text, or one cut by truncation) do not exist."""
    spans, names = _spans_and_names(spans, names)
    if len(points) != len(spans):
        raise ValueError(f"points for {len(points)} samples, spans for {len(spans)}")
    for i, (own, chosen) in enumerate(zip(spans, points)):
        for j in chosen:
            if not 0 <= j < len(own):
                raise ValueError(f"{names[i]}: point at segment {j}, but the sample has {len(own)} segments")
            if own[j][0] >= own[j][1]:
                raise ValueError(f"{names[i]}: segment {j}: a point in an empty slice (no tokens at {own[j][0]}: an "
                                 "empty text, or cut by truncation to max_length)")


def sample_points(spans: Spans, k: int, generator: Union[torch.Generator, int],
                  names: Optional[Sequence[str]] = None) -> List[List[int]]:
    """Sugar's points: for each sample, `k` distinct slice indices drawn uniformly among its
    non-empty slices (all of them when it has fewer), in increasing order. `generator`: a
    torch.Generator or a seed; the same seed draws the same points. `spans`: encoded data (errors
    then name the file, line and id) or its `spans`."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"sample_points: k must be an integer >= 1, got {k!r}")
    spans, names = _spans_and_names(spans, names)
    points = []
    for i, own in enumerate(spans):
        candidates = [j for j, (a, b) in enumerate(own) if b > a]
        if not candidates:
            raise ValueError(f"{names[i]}: no slice with tokens to place a point in")
        order = torch.randperm(len(candidates), generator=generator)[:k].tolist()
        points.append(sorted(candidates[o] for o in order))
    check_points(spans, points, names)
    return points


def read_pairs(path: str) -> List[Dict[str, Any]]:
    """The minimal pairs of `python -m tessera.data.interleaved` (one object per line: "id",
    "images": [a, b], "captions": [a, b], caption i describing image i), checked."""
    pairs = []
    for _, where, pair, line in json_lines(path, "minimal pairs"):
        ok = (isinstance(pair, dict) and isinstance(pair.get("id"), (str, int))
              and all(isinstance(pair.get(key), list) and len(pair[key]) == 2
                      and all(isinstance(v, str) and v for v in pair[key]) for key in ("images", "captions")))
        if not ok:
            raise ValueError(f"{where}: expected {{'id', 'images': [a, b], 'captions': [a, b]}} with non-empty "
                             f"strings, got {line[:120]!r}")
        if pair["captions"][0] == pair["captions"][1] or pair["images"][0] == pair["images"][1]:
            raise ValueError(f"{where} (id {pair['id']!r}): the two captions or the two images are the same")
        pairs.append({**pair, "where": f"{where} (id {pair['id']!r})", "path": path})
    if not pairs:
        raise ValueError(f"{path}: no minimal pairs")
    return pairs


def pair_samples(pair: Dict[str, Any]) -> List[InterleavedSample]:
    """The four (image, caption) samples of a pair, Winoground's c0i0, c1i0, c0i1, c1i1 order:
    ids "<id>-c<caption>i<image>"."""
    out = []
    for image in (0, 1):
        for caption in (0, 1):
            sid = f"{pair['id']}-c{caption}i{image}"
            record = {"id": sid, "segments": [{"image": pair["images"][image]}, {"text": pair["captions"][caption]}]}
            out.append(InterleavedSample(sid, record["segments"], pair["path"], f"{pair['where']} as {sid}", record))
    return out
