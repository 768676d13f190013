"""A LLaMA-style tokenizer.json (a BPE model with byte fallback over SentencePiece's "▁"), as
transformers 5 saves a LLaMA or LLaVA folder: with no tokenizer.model beside it. It is converted
to a SentencePiece model in memory whose BPE gives tokenizers' ids: SentencePiece merges the pair
whose merged piece scores highest, tokenizers the pair of lowest rank, so each merged piece scores
minus the rank of its first merge. That is exact when every way of splitting a piece into two
pieces is a merge and one piece's merges are consecutive, as in every tokenizer.json converted
from a SentencePiece model; a file where it is not is refused by name.

Not a copy of the tokenizer.model it may have come from: transformers 5 ranks the merge of two
spaces first, where LLaMA's SentencePiece model scores that piece last, so runs of spaces
encode otherwise. A folder with both files is read from tokenizer.model (SentencePiece, as LLaMA
and LLaVA were trained); one with tokenizer.json alone as transformers reads it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .protobuf_wire import field, read_float, records
from .tokenizer_files import token_content

SPACE = "\u2581"
LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")
GENERIC_CLASSES = (None, "PreTrainedTokenizerFast", "TokenizersBackend")  # the file read as written
# SentencePiece's remove_extra_whitespaces as tokenizers' normalizers, around its Prepend and
# Replace: leading spaces (U+0020 alone) dropped and runs of them made one; at the end, every
# trailing "▁" dropped, escaped spaces and "▁" written in the text alike, as SentencePiece trims
# its output (\A and \z: Oniguruma's ^ and $ match at every line).
EXTRA_SPACES_HEAD = [{"type": "Replace", "pattern": {"Regex": "\\A +"}, "content": ""},
                     {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]
EXTRA_SPACES_TAIL = [{"type": "Replace", "pattern": {"Regex": "\u2581+\\z"}, "content": ""}]
_BYTE = re.compile(r"<0x[0-9A-F]{2}>")
# SentencePiece's ModelProto fields and piece types (sentencepiece_model.proto).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6


@dataclass(frozen=True)
class JsonSentencePiece:
    model: bytes  # the SentencePiece model, with its dummy "▁" before a text where `prefix`
    prefix: bool
    metaspace: bool  # tokenizers' Metaspace: no "▁" is put before a text that starts with one (or a space)
    first_only: bool  # prepend_scheme "first": none before the text after an added token either


def convert(path: Path, data: Dict[str, Any], config: Dict[str, Any]) -> JsonSentencePiece:
    """The SentencePiece models of `data`, the tokenizer.json at `path`, beside
    tokenizer_config.json's `config` (the roles' tokens; transformers' LLaMA classes rebuild the
    whitespace rule from its legacy and add_prefix_space)."""
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE":
        raise ValueError(f"{path}: model is not BPE (a LLaMA-style tokenizer.json holds a BPE model; got "
                         f"{model.get('type') if isinstance(model, dict) else model!r:.40})")
    unk_fused = (True, False, None) if model.get("byte_fallback") else (True,)  # SentencePiece fuses unknowns
    for key, allowed in (("byte_fallback", (True, False)), ("fuse_unk", unk_fused), ("dropout", (None, 0, 0.0)),
                         ("ignore_merges", (False, None)),
                         ("continuing_subword_prefix", (None, "")), ("end_of_word_suffix", (None, ""))):
        if model.get(key) not in allowed:
            raise ValueError(f"{path}: model.{key} {model.get(key)!r}: a LLaMA-style BPE has {allowed[0]!r}")
    pieces = _pieces(path, model.get("vocab"))
    added = set()
    for i, token, _ in added_tokens(path, data):
        if i < len(pieces) and pieces[i] != token:
            raise ValueError(f"{path}: added token {token!r} takes id {i}, the vocabulary's {pieces[i]!r}")
        added |= {token} if i < len(pieces) else set()
    scores = _scores(path, pieces, model.get("merges"), added)
    kind = config.get("tokenizer_class")
    if kind not in LLAMA_CLASSES + GENERIC_CLASSES:
        raise ValueError(f"{path.parent / 'tokenizer_config.json'}: tokenizer_class {kind!r}: transformers builds "
                         f"that class its own way; tessera reads {', '.join(LLAMA_CLASSES + GENERIC_CLASSES[1:])}")
    prefix, metaspace, first_only, extra = (_llama_whitespace(path.parent / "tokenizer_config.json", config)
                                            if kind in LLAMA_CLASSES
                                            else _whitespace(path, data))
    roles = {"unk_token": model.get("unk_token") or "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": ""}
    roles.update({k: token_content(config[k], path.parent / "tokenizer_config.json", k) for k in roles
                  if config.get(k) is not None})
    index = {p: i for i, p in enumerate(pieces)}
    ids = {role: index.get(token, -1) for role, token in roles.items()}  # a pad inside the vocabulary is the model's
    if ids["pad_token"] in (ids["unk_token"], ids["bos_token"], ids["eos_token"]):
        ids["pad_token"] = -1  # padding with unk or eos (LLaMA folders often do): no piece of its own
    if ids["unk_token"] < 0:
        raise ValueError(f"{path}: no unknown token {roles['unk_token']!r} in model.vocab; SentencePiece needs one")
    missing = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in index]
    if missing and model["byte_fallback"]:
        raise ValueError(f"{path}: byte_fallback without the byte piece {missing[0]!r}")

    def kind(i: int, piece: str) -> int:
        if i == ids["unk_token"]:
            return UNKNOWN
        if i in (ids["bos_token"], ids["eos_token"], ids["pad_token"]):
            return CONTROL
        if piece in added:
            return USER_DEFINED
        return BYTE if _BYTE.fullmatch(piece) else NORMAL

    body = b"".join(_piece(p, scores[p], kind(i, p)) for i, p in enumerate(pieces))
    trainer = (field(3, 2) + field(4, len(pieces)) + field(35, int(model["byte_fallback"]))
               + field(40, ids["unk_token"])
               + field(41, ids["bos_token"]) + field(42, ids["eos_token"]) + field(43, ids["pad_token"])
               + field(45, roles["unk_token"]) + field(46, roles["bos_token"]) + field(47, roles["eos_token"])
               + field(48, roles["pad_token"] or "<pad>"))

    normalizer = field(1, "identity") + field(3, int(prefix)) + field(4, int(extra)) + field(5, 1)
    return JsonSentencePiece(body + field(2, trainer) + field(3, normalizer), prefix, metaspace, first_only)


def model_pieces(model: bytes) -> List[Tuple[str, float, int]]:
    """(piece, score, type) of each piece of a SentencePiece model (its bytes), by id."""
    pieces = []
    for number, _, value in records(model):
        if number == 1:
            got = {n: v for n, _, v in records(value)}
            pieces.append((got.get(1, b"").decode("utf-8"), read_float(got[2]) if 2 in got else 0.0, got.get(3, 1)))
    return pieces


def without_dummy_prefix(model: bytes) -> bytes:
    """The same SentencePiece model with no "▁" put before a text: a later normalizer_spec record
    merges into the first, and its add_dummy_prefix wins, as protobuf parses it."""
    return model + field(3, field(3, 0))


def added_tokens(path: Path, data: Dict[str, Any]) -> List[Tuple[int, str, Dict[str, Any]]]:
    """(id, token, flags) of each of tokenizer.json's added tokens."""
    entries = data.get("added_tokens") or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: added_tokens must be a list, got {type(entries).__name__}")
    out, ids, tokens = [], {}, {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or isinstance(entry.get("id"), bool) \
                or entry["id"] < 0:
            raise ValueError(f"{path}: added_tokens[{i}] must be an object with a token id >= 0, got {entry!r:.80}")
        token = token_content(entry, path, f"added_tokens[{i}]")
        if not token.strip():
            raise ValueError(f"{path}: added_tokens[{i}] is blank ({token!r})")
        # One id or token twice: the entry kept was the last, where transformers matches the first.
        for seen, key, what in ((ids, entry["id"], "id"), (tokens, token, "token")):
            if key in seen:
                raise ValueError(f"{path}: added_tokens[{i}] gives {what} {key!r} again (added_tokens[{seen[key]}]); "
                                 "each added token has one id")
            seen[key] = i
        out.append((entry["id"], token, entry))
    return out


def adds_bos(path: Path, data: Dict[str, Any], bos: str, eos: str) -> bool:
    """Whether tokenizer.json's post-processor puts `bos` before a text, as transformers 5 reads
    it (tokenizer_config.json's add_bos_token does not change it); anything else it adds is
    refused: tessera's encoding and templates add bos alone."""
    post = data.get("post_processor")
    if post is None:
        return False
    steps = post.get("processors") if isinstance(post, dict) and post.get("type") == "Sequence" else [post]
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise ValueError(f"{path}: post_processor {post!r:.120} is not a post-processor object")
    template = [s for s in steps if isinstance(s, dict) and s.get("type") == "TemplateProcessing"]
    others = [s.get("type") if isinstance(s, dict) else s for s in steps if s not in template]
    if others or len(template) > 1:
        raise ValueError(f"{path}: post_processor {others or 'with two templates'}: tessera adds bos alone")
    if not template:
        return False
    def part(item: Any) -> Any:  # {"SpecialToken": {"id": "<s>"}} -> "<s>", {"Sequence": {"id": "A"}} -> "A"
        inner = next(iter(item.values())) if isinstance(item, dict) and len(item) == 1 else None
        return inner.get("id") if isinstance(inner, dict) else repr(item)

    single = template[0].get("single")
    if not isinstance(single, list):
        raise ValueError(f"{path}: post_processor's single template must be a list, got {single!r:.80}")
    single = [part(item) for item in single]
    if single in (["A"], [bos, "A"]):
        return single[0] == bos
    raise ValueError(f"{path}: post_processor's single template {single}: tessera's encoding and templates "
                     f"start every text with {bos!r} and add nothing after it, so transformers would give other ids")


def _pieces(path: Path, vocab: Any) -> List[str]:
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"{path}: model.vocab must be a non-empty object of token: id")
    pieces: List[Any] = [None] * len(vocab)
    for token, i in vocab.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(vocab) or pieces[i] is not None:
            raise ValueError(f"{path}: model.vocab[{token!r}] is {i!r}; ids run from 0 to {len(vocab) - 1}, each once")
        if not token:  # SentencePiece refuses an empty piece, in a message naming tessera's converted file
            raise ValueError(f"{path}: model.vocab[''] (id {i}): an empty piece, which a SentencePiece model cannot "
                             "hold")
        pieces[i] = token
    return pieces


def _scores(path: Path, pieces: List[str], merges: Any, added: set) -> Dict[str, float]:
    """Each piece's score: minus its first merge's rank, or below every merge for a piece no
    merge makes (scores SentencePiece never compares)."""
    if not isinstance(merges, list):
        raise ValueError(f"{path}: model.merges must be a list")
    known = set(pieces)
    first: Dict[str, int] = {}
    pairs = set()
    last = None
    for rank, merge in enumerate(merges):
        pair = merge.split(" ", 1) if isinstance(merge, str) else merge
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] in known and pair[1] in known):
            raise ValueError(f"{path}: model.merges[{rank}] {merge!r:.60} is not two pieces of the vocabulary")
        piece = pair[0] + pair[1]
        if piece not in known or piece in added or _BYTE.fullmatch(piece):
            raise ValueError(f"{path}: model.merges[{rank}] makes {piece!r}, not an ordinary piece of the vocabulary")
        if piece in first and piece != last:
            raise ValueError(f"{path}: the merges making {piece!r} are not consecutive (ranks {first[piece]} and "
                             f"{rank}); SentencePiece ranks a piece, not a pair, so its ids would differ")
        first.setdefault(piece, rank)
        pairs.add((pair[0], pair[1]))
        last = piece
    for piece in pieces:
        if piece in added or _BYTE.fullmatch(piece):
            continue  # SentencePiece merges into ordinary pieces alone
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in known and right in known and (left, right) not in pairs:
                raise ValueError(f"{path}: no merge of {left!r} and {right!r} into {piece!r}; SentencePiece would "
                                 "merge them, so its ids would differ")
    return {p: -float(first[p]) if p in first else -float(len(merges) + i) for i, p in enumerate(pieces)}


def _llama_whitespace(path: Path, config: Dict[str, Any]) -> Tuple[bool, bool, bool, bool]:
    """transformers 5's LlamaTokenizer ignores the file's normalizer and pre-tokenizer: Metaspace,
    "▁" before the first part (legacy false, its default) or every part, none without
    add_prefix_space."""
    for key in ("legacy", "add_prefix_space"):
        if config.get(key) not in (None, True, False):  # transformers reads "false" as true
            raise ValueError(f"{path}: {key} must be true, false or null, got {config[key]!r}")
    if config.get("add_prefix_space") is False:
        return False, True, False, False
    return True, True, config.get("legacy", False) is not True, False


def _whitespace(path: Path, data: Dict[str, Any]) -> Tuple[bool, bool, bool, bool]:
    """(a "▁" goes before a text, tokenizers' Metaspace rule, only before the first part, extra
    spaces removed) from the normalizer and pre-tokenizer LLaMA's tokenizer.json files hold:
    transformers 4's Prepend and Replace, transformers 5's Metaspace, or the file
    SentencePieceTokenizer.save_pretrained writes (EXTRA_SPACES_HEAD and _TAIL around them where
    its model removes extra spaces)."""
    norm, pre = data.get("normalizer"), data.get("pre_tokenizer")
    steps = (norm.get("normalizers") if norm.get("type") == "Sequence" else [norm]) if isinstance(norm, dict) else []
    steps = list(steps or [])
    head, tail = len(EXTRA_SPACES_HEAD), len(EXTRA_SPACES_TAIL)
    extra = steps[:head] == EXTRA_SPACES_HEAD and steps[len(steps) - tail:] == EXTRA_SPACES_TAIL
    steps = steps[head:len(steps) - tail] if extra else steps
    kinds = [s.get("type") if isinstance(s, dict) else s for s in steps]
    prepend = replace = False
    for step, kind in zip(steps, kinds):
        if kind == "Prepend" and step.get("prepend") == SPACE and not replace:
            prepend = True
        elif kind == "Replace" and step.get("pattern") == {"String": " "} and step.get("content") == SPACE:
            replace = True
        else:
            raise ValueError(f"{path}: normalizer {kinds}: a LLaMA-style tokenizer.json normalizes nothing but "
                             "spaces into '▁' (Prepend, Replace)")
    if pre is None:
        if not replace:
            raise ValueError(f"{path}: neither normalizer nor pre_tokenizer turns spaces into '▁'")
        return prepend, False, False, extra
    if not (isinstance(pre, dict) and pre.get("type") == "Metaspace" and pre.get("replacement") == SPACE
            and not pre.get("split", True) and not prepend):
        raise ValueError(f"{path}: pre_tokenizer {pre!r:.120}: a LLaMA-style tokenizer.json has none, or Metaspace "
                         "with replacement '▁' and split false")
    scheme = pre.get("prepend_scheme") or ("always" if pre.get("add_prefix_space", True) else "never")
    if scheme not in ("always", "first", "never"):
        raise ValueError(f"{path}: pre_tokenizer prepend_scheme {scheme!r}")
    if extra:
        raise ValueError(f"{path}: extra spaces removed before a Metaspace pre_tokenizer: not a SentencePiece layout")
    return scheme != "never", True, scheme == "first", False


def _piece(piece: str, score: float, kind: int) -> bytes:
    """ModelProto.pieces: one SentencePiece message {1: piece, 2: score, 3: type}."""
    return field(1, field(1, piece) + field(2, score) + field(3, kind))
