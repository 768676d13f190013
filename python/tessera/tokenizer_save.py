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

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ._warn import warn
from .protobuf_wire import fields, read_float, records
from .sentencepiece_json import EXTRA_SPACES, SPACE
from .tokenizer_files import LEGACY_FILES
from .tokenizer_folder import read_config

# The settings a tokenizer.model folder's config may carry that do not change ids.
_SPECIAL = {"special": True, "normalized": False, "lstrip": False, "rstrip": False, "single_word": False}
_KEPT = ("model_max_length", "padding_side", "clean_up_tokenization_spaces", "chat_template")


def sentencepiece_as_json(model: bytes, added: List[Tuple[int, str]]) -> Optional[Dict[str, Any]]:
    """tokenizer.json of a SentencePiece BPE model (its bytes) with `added` [(id, token)]: the
    merges that make each ordinary piece, ranked by the piece's score (ties by id), and its
    normalizer (extra spaces removed, "▁" before the text) as tokenizers' normalizers; None for
    a model tokenizers cannot follow that way."""
    pieces: List[Tuple[str, float, int]] = []
    for number, _, value in records(model):
        if number == 1:
            got = {n: v for n, _, v in records(value)}
            pieces.append((got.get(1, b"").decode("utf-8"), read_float(got[2]) if 2 in got else 0.0, got.get(3, 1)))
    spec = {n: v for n, _, v in records(fields(model, (3,)).get(3, b""))}
    trainer = fields(fields(model, (2,)).get(2, b""), (3, 24))
    if spec.get(2) or not spec.get(5, 1) or trainer.get(3, 1) != 2 or trainer.get(24, 0):
        return None  # a character map, unescaped spaces, suffix spaces or another model than BPE: no such file
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    normal = {p for p, _, kind in pieces if kind == 1}
    merges = []
    for i in sorted((i for i, (p, _, kind) in enumerate(pieces) if kind == 1 and len(p) > 1),
                    key=lambda i: (-pieces[i][1], i)):
        p = pieces[i][0]
        merges += [[p[:cut], p[cut:]] for cut in range(1, len(p)) if p[:cut] in normal and p[cut:] in normal]
    special = [(i, p) for i, (p, _, kind) in enumerate(pieces) if kind in (2, 3, 4)] + added
    unk = next(p for p, _, kind in pieces if kind == 2)
    bos = next((p for p, _, kind in pieces if kind == 3 and p == "<s>"), None)
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, **_SPECIAL} for i, t in special],
        "normalizer": {"type": "Sequence", "normalizers": [
            *(EXTRA_SPACES if spec.get(4, 1) else []), *([{"type": "Prepend", "prepend": SPACE}] if spec.get(3, 1) else []),
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


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
        as_json = sentencepiece_as_json(source.read_bytes(), added)
        if as_json is not None:  # SentencePiece's ids in transformers 5 too: the file read as written
            write_json(folder / "tokenizer.json", as_json, indent=None)
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        else:
            warn(f"{source}: a SentencePiece model tokenizers cannot follow piece for piece; saved with legacy "
                 "true, transformers 5 converts it and may give other ids on runs of spaces")
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
