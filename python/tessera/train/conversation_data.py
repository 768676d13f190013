"""Conversation data for LLaVA-style tasks: LLaVA's JSON (a list, or JSON lines, of
{"id", "image": path | [paths], "conversations": [{"from": "human"|"gpt", "value"}]}) rendered
through a template into token ids and labels in which only the assistant's answers count.

Every sample is checked before training, and a bad one stops the run with an error naming the
file and the sample: image placeholders that differ from its images, a missing image file, no
supervised token (also after truncation to `max_length`), or text the tokenizer cannot
represent (unknown-token ids: the template and tokenizer disagree). `tessera inspect-data`
shows the rendering token by token."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import torch

from ..chat import IGNORE, IMAGE_PLACEHOLDER, ROLES, ConversationTemplate, load_template, render
from ..io import is_regular_file, parse_json, parse_json_line, read_text
from ..schema import from_mapping
from .image_data import check_statistics


# "square" crops as LLaVA's CLIPImageProcessor does: an odd margin's offset rounded down (torchvision
# and open_clip round it half to even, one pixel away).
ASPECT_MODES = {"square": "shortest_floor", "pad": "pad", "squash": "squash"}


def aspect_transform(image_size: int, image_aspect_ratio: str = "square", image_mean: Sequence[float] = (),
                     image_std: Sequence[float] = ()):
    """The CLIP tower's evaluation transform under LLaVA's image_aspect_ratio: "square" crops the
    image (CLIP's processor), "pad" centers it on a square of the mean colour first (LLaVA-1.5's
    expand2square), "squash" resizes it whole to the square (BLIP-2's processor). Normalised with
    `image_mean` / `image_std` (the tower's), OpenAI CLIP's when empty."""
    from .. import data as tdata

    stats = {"mean": tuple(image_mean), "std": tuple(image_std)} if len(image_mean) else {}
    return tdata.ImageTransform(tdata.clip_transform(image_size, train=False,
                                                     resize_mode=ASPECT_MODES.get(image_aspect_ratio, "shortest"),
                                                     **stats))


def run_transform(folder: str, image_size: int, image_aspect_ratio: str = ""):
    """The transform a LLaVA or Sugar checkpoint's images were trained with: its recipe's aspect
    ratio (unless given) and statistics, or a Hugging Face folder's preprocessor_config.json
    statistics, else CLIP's (train/image_data.checkpoint_data_config)."""
    from ..chat import run_recipe
    from ..models.timm_compat import CLIP_DATA
    from .image_data import checkpoint_data_config

    data = run_recipe(folder).get("data")
    aspect = image_aspect_ratio or (data.get("image_aspect_ratio") if isinstance(data, dict) else None) or "square"
    if not isinstance(aspect, str) or aspect not in ASPECT_MODES:
        raise ValueError(f"{folder}/recipe.json: data.image_aspect_ratio {aspect!r} is not one of "
                         f"{', '.join(ASPECT_MODES)}")
    stats = checkpoint_data_config(folder, CLIP_DATA)
    return aspect_transform(image_size, aspect, stats["mean"], stats["std"])


@dataclass
class ConversationData:
    train: str = ""                         # LLaVA JSON (list or JSON lines)
    eval: str = ""                          # held-out samples (same format), for evaluation
    image_folder: str = ""                  # image paths are relative to it (default: the JSON's folder)
    tokenizer: str = ""                     # a SentencePiece model, tokenizer.json or their folder
    template: str = "v1"                    # conversation template: plain | plain_eos | v1 | llava_v1 | a .json file
    max_length: int = 128                   # tokens per sample, image tokens included
    batch_size: int = 32                    # per process
    image_size: int = 28
    max_samples: int = 0                    # 0: all
    group_by_modality_length: bool = False  # LLaVA's length-grouped batches (image and text-only apart)
    skip_invalid: bool = False              # leave out samples that fail the checks (reported) instead of stopping
    index_cache: str = ""                   # folder for the data index (default: beside the data)
    # LLaVA's DataArguments: "square" resizes the shorter side and center-crops (CLIP's processor);
    # "pad" centers the image on a square of the mean colour first (LLaVA-1.5's finetuning scripts);
    # "squash" resizes it whole to the square (BLIP-2's processor, for the Q-Former projector)
    image_aspect_ratio: str = "square"
    # Pixel normalisation (per channel); empty: the tower's (init.vision_tower's or init.checkpoint's
    # run or preprocessor_config.json, image_data.inherit_statistics), else OpenAI CLIP's
    image_mean: List[float] = field(default_factory=list)
    image_std: List[float] = field(default_factory=list)

    def transform(self):
        """The image pipeline of this data: the CLIP tower's evaluation transform at image_size."""
        return aspect_transform(self.image_size, self.image_aspect_ratio, self.image_mean, self.image_std)

    def validate(self, where: str) -> None:
        if not self.train:
            raise ValueError(f"{where}.train: the training data (a LLaVA JSON file) is required")
        if self.image_aspect_ratio not in ASPECT_MODES:
            raise ValueError(f"{where}.image_aspect_ratio must be 'square' or 'pad' (LLaVA's) or 'squash' "
                             f"(BLIP-2's), got {self.image_aspect_ratio!r}")
        if not self.tokenizer:
            raise ValueError(f"{where}.tokenizer: a SentencePiece model file is required")
        check_statistics(self.image_mean, self.image_std, where)
        for name in ("max_length", "batch_size", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_samples < 0:
            raise ValueError(f"{where}.max_samples must be >= 0 (0: all), got {self.max_samples}")
        load_template(self.template)  # an unknown template name fails here, before any data is read


def read_samples(path: str, limit: int = 0) -> List[Dict[str, Any]]:
    """The samples of a LLaVA JSON (a list) or JSON-lines file, each checked against the record
    schema (see `check_sample`); an empty file or list is an error, never an empty data set."""
    text = read_text(path, "conversation data (LLaVA JSON or JSON lines)")
    if not text.strip():
        raise ValueError(f"{path}: the file is empty (no conversation samples)")
    if text.lstrip().startswith("["):
        samples = parse_json(text, path, "a list of conversation samples")
    else:
        samples = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                samples.append(parse_json_line(line, f"{path}: line {number}",
                                               "conversation data is a JSON list or one JSON object per line"))
    if not isinstance(samples, list) or not samples:
        raise ValueError(f"{path}: no conversation samples (expected a non-empty list of "
                         "{'id', 'image', 'conversations'} objects)")
    samples = samples[:limit] if limit else samples
    for i, s in enumerate(samples):
        check_sample(s, f"{path}: sample {i}")
    return samples


@dataclass
class Turn:
    """One turn of LLaVA's format ({"from", "value"}; OpenAI's {"role", "content"} also read)."""
    speaker: Literal["human", "user", "gpt", "assistant"]
    text: str


@dataclass
class ConversationRecord:
    """A sample's keys that the task reads; other keys (LLaVA's "model", our "kind") pass through."""
    conversations: List[Dict[str, Any]]
    id: Union[str, int, None] = None
    image: Union[str, List[str], None] = None
    kind: Optional[str] = None


def _turn(turn: Dict[str, Any], at: str) -> Turn:
    """One turn in LLaVA's keys (from, value) or OpenAI's (role, content); errors name the file's
    keys (they named Turn's fields: "turn 0.text: expected a string")."""
    llava, openai = {"from", "value"} & turn.keys(), {"role", "content"} & turn.keys()
    pairs = [p for p, given in ((("from", "value"), llava), (("role", "content"), openai)) if given] or [("from", "value")]
    read = [_turn_in(turn, speaker, text, at) for speaker, text in pairs]
    if len(read) == 2 and (ROLES[read[0].speaker], read[0].text) != (ROLES[read[1].speaker], read[1].text):
        raise ValueError(f"{at}: its LLaVA keys ('from', 'value') and OpenAI keys ('role', 'content') disagree "
                         "(LLaVA reads the first pair, a chat template the second); keep one pair")
    return read[0]


def _turn_in(turn: Dict[str, Any], speaker: str, text: str, at: str) -> Turn:
    for key in (speaker, text):
        if key not in turn:
            raise ValueError(f"{at}: no {key!r} (a turn holds {speaker!r} and {text!r})")
    if not isinstance(turn[speaker], str) or turn[speaker] not in ROLES:
        raise ValueError(f"{at}: {speaker!r} must be one of {', '.join(ROLES)}; got {str(turn[speaker])[:40]!r}")
    if not isinstance(turn[text], str):
        raise ValueError(f"{at}: {text!r} must be a string, got {type(turn[text]).__name__} "
                         f"{str(turn[text])[:40]!r}")
    return Turn(turn[speaker], turn[text])


def check_sample(sample: Any, where: str) -> int:
    """Types of the record and of every turn; turns alternate, the user first (what LLaVA's
    templates assume: two user turns in a row would be rendered as one prompt and trained as
    such). A first turn from gpt is left out, as LLaVA's preprocessing leaves it out. Errors name
    the sample and the turn. Returns the number of leading turns left out (0 or 1)."""
    if isinstance(sample, dict) and "id" in sample and f"(id {sample['id']!r})" not in where:
        where += f" (id {sample['id']!r})"
    record = from_mapping(ConversationRecord, sample, where, lenient=True)
    if not record.conversations:
        raise ValueError(f"{where}: 'conversations' is empty")
    skip = 0
    for t, turn in enumerate(record.conversations):
        at = f"{where}: turn {t}"
        if not isinstance(turn, dict):
            raise ValueError(f"{at}: expected an object with 'from' and 'value', got {str(turn)[:80]!r}")
        parsed = _turn(turn, at)
        keys = ("from", "value") if "from" in turn or "value" in turn else ("role", "content")
        try:  # JSON may hold a lone surrogate (an emoji cut in half): name it here, by turn and offset
            parsed.text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{at}: '{keys[1]}' holds {parsed.text[e.start]!r} at character {e.start}, "
                             f"which is not UTF-8 text ({e.reason})") from None
        if t == 0 and ROLES[parsed.speaker] == "assistant":
            skip = 1  # LLaVA's preprocess_v1: `if roles[source[0]["from"]] != conv.roles[0]: source = source[1:]`
            continue
        expected = "user" if (t - skip) % 2 == 0 else "assistant"
        if ROLES[parsed.speaker] != expected:
            raise ValueError(f"{at}: from {parsed.speaker!r}, but turns must alternate human, gpt, human, ... "
                             f"(turn {t} should be the {'human' if expected == 'user' else 'gpt'} turn)")
    if skip and len(record.conversations) == 1:
        raise ValueError(f"{where}: the only turn is from gpt: no question to answer")
    return skip


def sample_name(path: str, index: int, sample: Dict[str, Any]) -> str:
    return f"{path}: sample {index}" + (f" (id {sample['id']!r})" if "id" in sample else "")


def image_paths(sample: Dict[str, Any], folder: str, where: str = "sample") -> List[str]:
    """The sample's images under `folder`. A path that leaves the folder (absolute, or `..` past
    its root) is refused: a data file must not make us read files outside its data root."""
    images = sample.get("image") or []
    images = [images] if isinstance(images, str) else list(images)
    out = []
    for p in images:
        joined = os.path.normpath(os.path.join(folder, p))
        if os.path.isabs(p) or not (joined + os.sep).startswith(os.path.normpath(folder) + os.sep):
            raise ValueError(f"{where}: image path {p!r} leaves the image folder {folder!r} (absolute or '..'); "
                             "image paths are relative to data.image_folder")
        out.append(joined)
    return out


def check_image_file(path: str, where: str) -> None:
    """An existing JPEG, PNG or WebP file, told by its header (a decoder only sees it at its batch)."""
    from .. import _C

    if not is_regular_file(path):
        raise FileNotFoundError(f"{where}: image {path!r} not found")
    with open(path, "rb") as f:
        head = f.read(4096)  # the kind is told by the first bytes
    kind, height, width, _ = _C.data.image_info(head)
    if kind == "unknown":
        raise ValueError(f"{where}: {path!r} is not a JPEG, PNG or WebP image (it starts with {head[:8].hex(' ')})")


@dataclass
class EncodedSamples:
    input_ids: torch.Tensor                 # [N, max_length], right-padded with 0
    labels: torch.Tensor                    # [N, max_length], -100 outside the answers
    attention_mask: torch.Tensor            # [N, max_length]
    images: List[List[str]]                 # per sample, in placeholder order
    samples: List[Dict[str, Any]]
    template: Optional[ConversationTemplate] = None  # what rendered them (answers end as it says)


class SampleProblem(ValueError):
    """A sample refused by one of the checks; `check` names which (the index's report counts
    problems by it)."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


def prepare_sample(sample: Dict[str, Any], where: str, template, tokenizer, image_token_id: int, image_tokens: int,
                   max_length: int, folder: str, check_files: bool = True, supervise: bool = True):
    """(ids, labels, image paths) of one record, every check applied (see the module's docstring);
    a refusal is a SampleProblem naming the check and the sample."""
    check = "record"
    try:
        skip = check_sample(sample, where)
        check = "image path"
        paths = image_paths(sample, folder, where)
        check = "rendering"
        conv = sample["conversations"][skip:] if supervise else sample["conversations"][skip:-1]
        stats: Dict[str, bool] = {}
        ids, lab = render(template, conv, tokenizer, image_token_id, image_tokens, len(paths), where,
                          add_generation_prompt=not supervise, max_tokens=max_length, stats=stats)
        check = "unknown tokens"
        refuse_unknown_tokens(ids, tokenizer, where, f"the template {template.name!r} and the tokenizer disagree")
        check = "length"
        ids, lab = truncate(ids, lab, image_token_id, max_length, where, supervise, stats.get("capped", False))
        check = "image file"
        if check_files:
            for p in paths:
                check_image_file(p, where)
    except (ValueError, OSError) as e:
        raise SampleProblem(check, str(e)) from None
    return ids, lab, paths


def encode_samples(samples: Sequence[Dict[str, Any]], path: str, tokenizer, template_name: str, image_token_id: int,
                   image_tokens: int, max_length: int, image_folder: str = "", check_files: bool = True,
                   supervise: bool = True) -> EncodedSamples:
    """Renders, checks and pads every sample (see the module's docstring for the refusals).
    `supervise=False` renders prompts for generation: each sample's last answer is left out."""
    template = load_template(template_name)
    folder = image_folder or os.path.dirname(os.path.abspath(path))
    rows, labels, images = [], [], []
    for i, s in enumerate(samples):
        ids, lab, paths = prepare_sample(s, sample_name(path, i, s), template, tokenizer, image_token_id,
                                         image_tokens, max_length, folder, check_files, supervise)
        rows.append(ids)
        labels.append(lab)
        images.append(paths)
    return EncodedSamples(*pad_rows(rows, labels, max_length), images, list(samples), template)


def refuse_unknown_tokens(ids: Sequence[int], tokenizer, where: str, why: str) -> None:
    """Unknown-token ids mean text the tokenizer cannot represent; `why` says whose fault."""
    if tokenizer.unk_id >= 0 and tokenizer.unk_id in ids:
        pos = list(ids).index(tokenizer.unk_id)
        raise ValueError(f"{where}: the tokenizer maps part of the rendered text to its unknown token (at token "
                         f"{pos}): {why}; near {tokenizer.decode(list(ids[max(0, pos - 5):pos + 5]))!r}")


def truncate(ids: List[int], labels: List[int], image_token_id: int, max_length: int, where: str,
             supervise: bool = True, capped: bool = False):
    """(ids, labels) cut to `max_length`, refusing a cut through image tokens, a cut prompt to
    generate from, and a cut that leaves nothing to learn. `capped`: text past max_length was not
    encoded (chat.render's max_tokens), so the count said is a lower bound."""
    count = f"{'at least ' if capped else ''}{len(ids)}"
    if len(ids) > max_length and not supervise:
        raise ValueError(f"{where}: the prompt has {count} tokens, more than max_length {max_length} "
                         f"(cutting it would cut the question); raise data.max_length")
    if len(ids) > max_length:
        if image_token_id in ids[max_length:]:
            raise ValueError(f"{where}: {count} tokens, more than max_length {max_length}, and truncation "
                             f"would cut image tokens; raise data.max_length")
        ids, labels = ids[:max_length], labels[:max_length]
        if supervise and labels.count(IGNORE) == len(labels):
            raise ValueError(f"{where}: no supervised token left after truncation to max_length {max_length}")
    return ids, labels


def pad_rows(rows: Sequence[List[int]], labels: Sequence[List[int]], max_length: int):
    """(input_ids, labels, attention_mask), each [N, max_length], right-padded (ids 0, labels -100)."""
    n = len(rows)
    out_ids = torch.zeros(n, max_length, dtype=torch.long)
    out_labels = torch.full((n, max_length), IGNORE, dtype=torch.long)
    mask = torch.zeros(n, max_length, dtype=torch.long)
    for r, (ids, lab) in enumerate(zip(rows, labels)):
        out_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        out_labels[r, :len(lab)] = torch.tensor(lab, dtype=torch.long)
        mask[r, :len(ids)] = 1
    return out_ids, out_labels, mask


def load_pixels(paths: Sequence[str], transform) -> Optional[torch.Tensor]:
    """[len(paths), 3, S, S] float, or None for no images."""
    from ..data import read_image

    if not paths:
        return None
    return torch.stack([transform(read_image(p)) for p in paths])


@torch.no_grad()
def greedy_answers(model, encoded: EncodedSamples, tokenizer, transform, max_new_tokens: int,
                   batch_size: int) -> List[str]:
    """Greedy answers to every prompt of `encoded` (encode_samples(supervise=False)), `batch_size`
    at a time, the model in eval mode (its mode restored after): cut at eos, or at the template's
    answer suffix where it learns no eos (plain), and cleared of ids past the tokenizer (a padded
    vocabulary has no text there)."""
    n, was_training = len(encoded.samples), model.training
    model.eval()
    try:
        return [a for start in range(0, n, batch_size)
                for a in _answer_batch(model, encoded, range(start, min(start + batch_size, n)), tokenizer, transform,
                                       max_new_tokens)]
    finally:
        model.train(was_training)


def _answer_batch(model, encoded: EncodedSamples, rows: Sequence[int], tokenizer, transform,
                  max_new_tokens: int) -> List[str]:
    """greedy_answers for the prompts `rows`, left-padded into one batch."""
    from ..chat import answer_stops, cut_answer

    lengths = encoded.attention_mask[list(rows)].sum(1)
    width = int(lengths.max())
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for j, (r, n) in enumerate(zip(rows, lengths.tolist())):
        ids[j, width - n:] = encoded.input_ids[r, :n]
        mask[j, width - n:] = 1
    pixels = load_pixels([p for r in rows for p in encoded.images[r]], transform)
    device = model.device
    template = encoded.template
    stops, ends = answer_stops(template, tokenizer, model)
    # Greedy whatever the model's generation_config.json says (a converted checkpoint may sample).
    out = model.generate(ids.to(device), pixel_values=None if pixels is None else pixels.to(device),
                         attention_mask=mask.to(device), max_new_tokens=max_new_tokens, do_sample=False,
                         num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
                         eos_token_id=stops, pad_token_id=0)
    answers = []
    for row in out[:, width:].tolist():
        # After eos come pads; another stop id carries the answer's end (cut_answer cuts there).
        end = next((i + (t not in ends) for i, t in enumerate(row) if t in stops), len(row))
        text = tokenizer.decode([t for t in row[:end] if t < tokenizer.vocab_size])
        answers.append(cut_answer(template, text).strip() if template else text.strip())
    return answers


def idle_image_row(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, image_token_id: int,
                   image_tokens: int, image_size: int):
    """The batch plus a row holding one blank image and nothing to learn: the vision tower and
    projector run (and get zero gradients) while the loss and its token count stay the batch's.
    The batch is right-padded (mask 0, labels ignored) if it is narrower than one image."""
    width = max(ids.shape[1], image_tokens)
    pad = width - ids.shape[1]
    row = torch.zeros(1, width, dtype=ids.dtype)
    row[0, :image_tokens] = image_token_id
    row_mask = torch.zeros(1, width, dtype=mask.dtype)
    row_mask[0, :image_tokens] = 1

    def widen(t, value):
        return torch.nn.functional.pad(t, (0, pad), value=value) if pad else t
    return (torch.cat([widen(ids, 0), row]), torch.cat([widen(mask, 0), row_mask]),
            torch.cat([widen(labels, IGNORE), torch.full((1, width), IGNORE, dtype=labels.dtype)]),
            torch.zeros(1, 3, image_size, image_size))


def describe(encoded: EncodedSamples, tokenizer, index: int, image_token_id: int) -> str:
    """One sample token by token: `+` supervised, `.` context; runs of image tokens folded."""
    ids = encoded.input_ids[index][encoded.attention_mask[index].bool()].tolist()
    labels = encoded.labels[index][: len(ids)].tolist()
    lines, i = [], 0
    while i < len(ids):
        if ids[i] == image_token_id:
            j = i
            while j < len(ids) and ids[j] == image_token_id:
                j += 1
            lines.append(f"  {i:4d}  .  {IMAGE_PLACEHOLDER} x {j - i}")
            i = j
            continue
        piece = tokenizer.id_to_piece(ids[i])
        lines.append(f"  {i:4d}  {'+' if labels[i] != IGNORE else '.'}  {ids[i]:6d}  {piece!r}")
        i += 1
    supervised = sum(1 for x in labels if x != IGNORE)
    return "\n".join(lines + [f"  {len(ids)} tokens, {supervised} supervised"])
