"""The tokenizer_config.json beside a SentencePiece model (a LLaMA or LLaVA folder), with the
special_tokens_map.json and added_tokens.json older transformers saved (tokenizer_files.py), read
as transformers reads them where they change ids: the added tokens (llava-hf's ``<pad>`` = 32001) are
kept whole at their ids and a named pad token gives ``pad_id``. Settings tessera's encoding does
not follow (no bos, an eos after every text, other bos/eos/unk tokens, whitespace stripped around
an added token) are refused by key: transformers would give other ids for the same folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ._warn import warn
from .tokenizer_files import merge_legacy_files, read_object, token_content

CONFIG = "tokenizer_config.json"


def _content(value: Any, path: Path, key: str) -> Optional[str]:
    return None if value is None else token_content(value, path, key)


def folder_tokens(model_path: Path, pieces: int, piece_of, roles: Dict[str, int]) -> Tuple[List[str], Optional[str]]:
    """(added tokens in id order, the pad token) from the tokenizer_config.json beside
    `model_path`, whose model has `pieces` pieces (`piece_of(id)`) and `roles` ({"bos_token": its
    id, ...}; -1: none); ([], None) without one."""
    from .io import is_regular_file

    path = model_path.parent / CONFIG
    config = read_object(path) if is_regular_file(path, "the tokenizer's settings") else {}
    config = merge_legacy_files(model_path.parent, config)  # transformers < 4.34's files, as transformers 5 reads them
    if not config:
        return [], None
    for key, ours in (("add_bos_token", True), ("add_eos_token", False)):
        if key in config and config[key] is not ours:
            raise ValueError(f"{path}: {key} {config[key]!r}: tessera's encoding and templates "
                             f"{'start every text with bos' if ours else 'add no eos after a text'}, so transformers "
                             f"would give other ids for this folder")
    for key, piece_id in roles.items():
        token = _content(config.get(key), path, key)
        if token is not None and 0 <= piece_id < pieces and token != piece_of(piece_id):
            raise ValueError(f"{path}: {key} {token!r} differs from the model's {piece_of(piece_id)!r} (id {piece_id}): "
                             "tessera takes bos, eos and unk from the SentencePiece model")
    if config.get("legacy") is False:
        warn(f"{path}: legacy false: tessera encodes as transformers' legacy mode (the text after a special "
             "token starts with SentencePiece's space), as LLaVA's tokenizer_image_token encodes each piece apart")
    added: List[str] = []
    decoder = config.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise ValueError(f"{path}: added_tokens_decoder must be an object of id: token, got {type(decoder).__name__}")
    for key, value in sorted(decoder.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else -1):
        if not str(key).isdigit():
            raise ValueError(f"{path}: added_tokens_decoder key {key!r} is not a token id")
        i, token = int(key), _content(value, path, f"added_tokens_decoder[{key}]")
        for flag in ("lstrip", "rstrip", "single_word"):
            if isinstance(value, dict) and value.get(flag):
                raise ValueError(f"{path}: added token {token!r} (id {i}) has {flag} true: transformers strips or "
                                 "matches around it, tessera's encoding keeps the text as written")
        if i < pieces:
            if token != piece_of(i):
                raise ValueError(f"{path}: added token {token!r} takes id {i}, the model's piece {piece_of(i)!r}")
            continue
        if i != pieces + len(added):
            raise ValueError(f"{path}: added token {token!r} takes id {i}; added tokens number on from the model's "
                             f"{pieces} pieces without gaps, so it would take {pieces + len(added)}")
        added.append(token)
    return added, _content(config.get("pad_token"), path, "pad_token")
