"""A SentencePieceTokenizer saved as a Hugging Face tokenizer folder that transformers 5 reads with
tessera's ids: the model file (tokenizer.model, or the tokenizer.json it was read from), a
tokenizer_config.json with the added tokens at their ids and the pad token, and for a
tokenizer.model a tokenizer.json that encodes as SentencePiece does.

transformers 5 converts a tokenizer.model into its own BPE and gets other ids on runs of spaces
(it ranks LLaMA's "▁▁" merge first; SentencePiece scores that piece last) and on a text that
starts with a space (its Metaspace puts no "▁" before it; SentencePiece does). The tokenizer.json
written here ranks the merges by SentencePiece's scores and puts "▁" before every part with
transformers 4's Prepend normalizer, under a class that reads the file as written, so
transformers 5 gives SentencePiece's (and tessera's) ids."""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple, Union

from ._warn import warn
from .protobuf_wire import fields, int32, records
from .sentencepiece_json import (CONTROL, EXTRA_SPACES_HEAD, EXTRA_SPACES_TAIL, NORMAL, SPACE, UNKNOWN, USER_DEFINED,
                                 model_pieces)
from .tokenizer_files import LEGACY_FILES
from .tokenizer_folder import read_config

_SPECIAL = {"special": True, "normalized": False, "lstrip": False, "rstrip": False, "single_word": False}
# The settings a tokenizer.model folder's config may carry that do not change ids.
_KEPT = ("model_max_length", "padding_side", "clean_up_tokenization_spaces", "chat_template")


def sentencepiece_as_json(model: bytes, added: List[Tuple[int, str]], cut: set) -> Optional[Dict[str, Any]]:
    """tokenizer.json of a SentencePiece BPE model (its bytes) with `added` [(id, token)] and the
    model's user-defined pieces in `cut` (tokens the tokenizer cuts out of a text): the merges
    that make each ordinary piece, ranked by the piece's score (ties by id), and its normalizer
    (extra spaces removed, "▁" before the text) as tokenizers' normalizers. None for a model
    tokenizers cannot follow that way: a character map, unescaped or suffix spaces, another model
    than BPE, or a user-defined piece SentencePiece matches inside the text (an added token would
    be cut out first)."""
    pieces = model_pieces(model)
    spec = {n: v for n, _, v in records(fields(model, (3,)).get(3, b""))}
    trainer = fields(fields(model, (2,)).get(2, b""), (3, 24, 35, 41, 42, 43))
    inside = [p for p, _, kind in pieces if kind == USER_DEFINED and p not in cut]
    if spec.get(2) or not spec.get(5, 1) or trainer.get(3, 1) != 2 or trainer.get(24, 0) or inside:
        return None
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    normal = {p for p, _, kind in pieces if kind == NORMAL}
    merges = []
    for i in sorted((i for i, (p, _, kind) in enumerate(pieces) if kind == NORMAL and len(p) > 1),
                    key=lambda i: (-pieces[i][1], i)):
        p = pieces[i][0]
        merges += [[p[:cut], p[cut:]] for cut in range(1, len(p)) if p[:cut] in normal and p[cut:] in normal]
    roles = {int32(trainer.get(n, d)) for n, d in ((41, 1), (42, 2), (43, -1))}  # bos, eos, pad: others stay text
    special = [(i, p) for i, (p, _, kind) in enumerate(pieces)
               if kind in (UNKNOWN, USER_DEFINED) or (kind == CONTROL and i in roles)] + added
    unk = next(p for p, _, kind in pieces if kind == UNKNOWN)
    bos_id = int32(trainer.get(41, 1))
    bos = pieces[bos_id][0] if 0 <= bos_id < len(pieces) else None
    dummy, extra = bool(spec.get(3, 1)), bool(spec.get(4, 1))

    def template(*parts):
        return [{"SpecialToken": {"id": bos, "type_id": t}} if p == "bos" else {"Sequence": {"id": p, "type_id": t}}
                for p, t in parts]

    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, **_SPECIAL} for i, t in special],
        "normalizer": {"type": "Sequence", "normalizers": [
            *(EXTRA_SPACES_HEAD if extra else []), *([{"type": "Prepend", "prepend": SPACE}] if dummy else []),
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}, *(EXTRA_SPACES_TAIL if extra else [])]},
        "pre_tokenizer": None,
        "post_processor": None if bos is None else {
            "type": "TemplateProcessing", "single": template(("bos", 0), ("A", 0)),
            "pair": template(("bos", 0), ("A", 0), ("bos", 1), ("B", 1)),
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, *([{"type": "Replace", "pattern": {"Regex": "\\A +"}, "content": ""}] if extra else
                                [{"type": "Strip", "content": " ", "start": 1, "stop": 0}] if dummy else [])]},
        "model": {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": bool(trainer.get(35, 0)),
                  "ignore_merges": False, "vocab": vocab, "merges": merges},
    }


@functools.lru_cache(maxsize=4)
def _json_text(model: bytes, added: Tuple[Tuple[int, str], ...], cut: FrozenSet[str]) -> Optional[str]:
    """sentencepiece_as_json as the file's text, kept for the next save of the same model: a run
    saves its tokenizer with every checkpoint (0.6 s each for LLaMA's 32,000 pieces)."""
    as_json = sentencepiece_as_json(model, list(added), set(cut))
    return None if as_json is None else json.dumps(as_json, ensure_ascii=False) + "\n"


def save_sentencepiece(tok, folder: Union[str, os.PathLike]) -> None:
    from .io import read_json, write_atomic, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(tok.model_path)
    old = read_config(source.parent)
    config: Dict[str, Any] = {k: old[k] for k in _KEPT if k in old}
    pieces = tok._impl.vocab_size()
    added = sorted((i, t) for t, i in tok.special_tokens.items() if i >= pieces)
    stale = None  # a file of another model that transformers would read
    if source.suffix == ".json":  # its own rules, as transformers reads them, and the tokens added since
        data = read_json(source, "a tokenizer file")
        listed = {e.get("id") for e in data.get("added_tokens") or [] if isinstance(e, dict)}
        data["added_tokens"] = [*(data.get("added_tokens") or []),
                                *({"id": i, "content": t, **_SPECIAL} for i, t in added if i not in listed)]
        write_json(folder / "tokenizer.json", data, indent=None)
        config.update({k: old[k] for k in ("tokenizer_class", "legacy", "add_prefix_space") if k in old})
        stale = folder / "tokenizer.model"
    else:
        if source.resolve() != (folder / "tokenizer.model").resolve():
            write_atomic(folder / "tokenizer.model", source.read_bytes())
        as_json = _json_text(source.read_bytes(), tuple(added), frozenset(tok.special_tokens))
        if as_json is not None:  # SentencePiece's ids in transformers 5 too: the file read as written
            write_atomic(folder / "tokenizer.json", as_json)
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        else:
            warn(f"{source}: a SentencePiece model tokenizers cannot follow piece for piece (a character map, "
                 "suffix spaces, a unigram model, or user-defined pieces the tokenizer does not cut out: pass them "
                 "in special_tokens); saved with legacy true for transformers 5 to convert, whose ids may differ")
            config.update(tokenizer_class="LlamaTokenizer", legacy=True)
            stale = folder / "tokenizer.json"
    if stale is not None and stale.is_file() and source.parent.resolve() != folder.resolve():
        os.remove(stale)  # never one of the source folder's own files
    roles = {"bos_token": tok.bos_id, "eos_token": tok.eos_id, "unk_token": tok.unk_id}
    config.update({k: tok.id_to_piece(i) for k, i in roles.items() if i >= 0})
    if tok.pad_id >= 0:
        config["pad_token"] = tok.id_to_piece(tok.pad_id)
    config.update({
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {str(i): {"content": t, **_SPECIAL} for i, t in added},
    })
    write_json(folder / "tokenizer_config.json", config)
    for name in LEGACY_FILES:  # merged into the config above
        if (folder / name).is_file():
            os.remove(folder / name)
