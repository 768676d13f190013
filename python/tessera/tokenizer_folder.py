"""The tokenizer_config.json beside a SentencePiece model (a LLaMA or LLaVA folder), with the
special_tokens_map.json and added_tokens.json older transformers saved (tokenizer_files.py) and the
tokenizer.json transformers 5 reads first, read as transformers reads them where they change ids:
the added tokens (llava-hf's ``<pad>`` = 32001; transformers 5 lists them in tokenizer.json alone)
are kept whole at their ids, a named pad token gives ``pad_id``, and bos is what tokenizer.json's
post-processor adds. Settings tessera's encoding does not follow (no bos, an eos after every text,
other bos/eos/unk tokens, whitespace stripped around an added token) are refused by key:
transformers would give other ids for the same folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ._warn import warn
from .tokenizer_files import (LEGACY_FILES, ROLES, config_extra, extra_entries, merge_legacy_files, read_object,
                              token_content)

CONFIG = "tokenizer_config.json"


def _content(value: Any, path: Path, key: str) -> Optional[str]:
    return None if value is None else token_content(value, path, key)


def read_config(folder: Path) -> Dict[str, Any]:
    """tokenizer_config.json in `folder` with the older files merged in ({} without any)."""
    from .io import is_regular_file

    path = folder / CONFIG
    config = read_object(path) if is_regular_file(path, "the tokenizer's settings") else {}
    return merge_legacy_files(folder, config)  # transformers < 4.34's files, as transformers 5 reads them


def digest(model_path: Path) -> str:
    """A hash of the model and every folder file that changes its ids: what an index of encoded
    lengths is valid for (the model file alone missed an edited tokenizer_config.json)."""
    import hashlib

    from .io import is_regular_file

    h = hashlib.blake2b()
    for path in (model_path, *(model_path.parent / n for n in (CONFIG, *LEGACY_FILES, "tokenizer.json"))):
        if is_regular_file(path, "a tokenizer file"):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def tokenizer_json(model_path: Path) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """(path, contents) of the tokenizer.json a model path names, or of the one beside a
    tokenizer.model, which transformers 5 reads first; None without one."""
    from .io import is_regular_file

    path = model_path if model_path.suffix == ".json" else model_path.parent / "tokenizer.json"
    return (path, read_object(path)) if is_regular_file(path, "the tokenizer's vocabulary") else None


def folder_tokens(model_path: Path, config: Dict[str, Any], beside: Optional[Tuple[Path, Dict[str, Any]]],
                  pieces: int, piece_of, roles: Dict[str, int]) -> Tuple[List[str], Optional[str]]:
    """(tokens to cut out of a text: a tokenizer.json's added tokens inside the vocabulary, then
    the added tokens past it in id order; the pad token) from the folder's `config` (read_config) and
    tokenizer.json (`beside`: tokenizer_json's), for a model of `pieces` pieces (`piece_of(id)`)
    and `roles` ({"bos_token": its id, ...}; -1: none); ([], None) without either."""
    from .sentencepiece_json import added_tokens, adds_bos

    path = model_path.parent / CONFIG
    if not config and beside is None:
        return [], None
    bos_eos = [piece_of(roles[k]) if 0 <= roles[k] < pieces else None for k in ("bos_token", "eos_token")]
    # transformers 5 takes bos from tokenizer.json's post-processor, and from the config without one
    if beside is not None and beside[1].get("post_processor") is not None:
        if not adds_bos(*beside, *bos_eos):
            raise ValueError(f"{beside[0]}: post_processor adds no bos: tessera's encoding and templates start "
                             "every text with bos, so transformers would give other ids for this folder")
    elif "add_bos_token" not in config:  # LLaVA trained with transformers 4, which read it so; said, not silent
        warn(f"{path}: no add_bos_token: tessera starts every text with bos, as transformers 4 (LLaVA's training) "
             "read such a folder; transformers 5 adds no bos here. Set add_bos_token to say which")
    elif config["add_bos_token"] is not True:
        raise ValueError(f"{path}: add_bos_token {config['add_bos_token']!r}: tessera's encoding and templates "
                         "start every text with bos, so transformers would give other ids for this folder")
    if config.get("add_eos_token", False) is not False:
        raise ValueError(f"{path}: add_eos_token {config['add_eos_token']!r}: tessera's encoding and templates "
                         "add no eos after a text, so transformers would give other ids for this folder")
    for key, piece_id in roles.items():
        token = _content(config.get(key), path, key)
        if token is not None and 0 <= piece_id < pieces and token != piece_of(piece_id):
            raise ValueError(f"{path}: {key} {token!r} differs from the model's {piece_of(piece_id)!r} "
                             f"(id {piece_id}): tessera takes bos, eos and unk from the SentencePiece model")
    if config.get("legacy") is False and model_path.suffix != ".json":
        warn(f"{path}: legacy false: tessera encodes as transformers' legacy mode (the text after a special "
             "token starts with SentencePiece's space), as LLaVA's tokenizer_image_token encodes each piece apart")
    entries = _config_entries(config, path)
    from_json = {i: (token, entry, beside[0]) for i, token, entry in added_tokens(*beside)} if beside else {}
    beyond = [{i: e[0] for i, e in d.items() if i >= pieces} for d in (entries, from_json)]
    if entries and from_json and beyond[0] != beyond[1]:
        raise ValueError(f"{path}: added_tokens_decoder {beyond[0]} differs from {beside[0]}'s added tokens "
                         f"{beyond[1]}: transformers would number them otherwise")
    entries.update(from_json)
    added, inside = [], []
    for i in sorted(entries):
        token, value, source = entries[i]
        _refuse_matching_flags(value, f"{source}: added token {token!r} (id {i})")
        if i < pieces:
            if token != piece_of(i):
                raise ValueError(f"{source}: added token {token!r} takes id {i}, the model's piece {piece_of(i)!r}")
            if model_path.suffix == ".json" and i not in roles.values():
                inside.append(token)  # transformers cuts it out before Metaspace puts a "▁" before the text
            continue
        if i != pieces + len(added):
            raise ValueError(f"{source}: added token {token!r} takes id {i}; added tokens number on from the model's "
                             f"{pieces} pieces without gaps, so it would take {pieces + len(added)}")
        added.append(token)
    return inside + added + config_only(config, path, pieces, piece_of, roles, inside + added), \
        _content(config.get("pad_token"), path, "pad_token")


def _refuse_matching_flags(value: Any, what: str) -> None:
    """An added token transformers strips or matches other than as written is refused."""
    for flag in ("lstrip", "rstrip", "single_word"):
        if isinstance(value, dict) and value.get(flag):
            raise ValueError(f"{what} has {flag} true: transformers strips or matches around it, tessera's "
                             "encoding keeps the text as written")


def config_only(config: Dict[str, Any], path: Path, pieces: int, piece_of, roles: Dict[str, int],
                numbered: List[str]) -> List[str]:
    """Special tokens the config names without a number, in transformers 5's order: the roles past
    bos, eos and unk (sep, pad, cls, mask), other named tokens ("image_token"), then the extra
    special tokens. A piece among them is cut out of the text; a new one takes the next id. They
    were left out: "<x>" encoded as its bytes, "ing" matched inside words, and a token after a
    config-only mask took the mask's id."""
    extra = config.get("extra_special_tokens")
    in_extra = set(extra) if isinstance(extra, dict) else set()  # a name given in both: the dict's (transformers)
    named = [(k, config.get(k)) for k in ("sep_token", "pad_token", "cls_token", "mask_token")]
    # Other named tokens: a string, or a dict transformers reads as a token (its "__type": "AddedToken").
    named += [(k, v) for k, v in config.items() if k.endswith("_token") and k not in ROLES and k not in in_extra
              and (isinstance(v, str) or isinstance(v, dict) and v.get("__type") == "AddedToken")]
    for key, value in named + [("extra token", v) for v in extra_entries(config, path)[1]]:
        _refuse_matching_flags(value, f"{path}: {key} {value.get('content') if isinstance(value, dict) else value!r}")
    tokens = [_content(v, path, k) for k, v in named if v is not None] + config_extra(config, path)
    ids = {piece_of(i): i for i in range(pieces)}
    out: List[str] = []
    for token in dict.fromkeys(t for t in tokens if t):  # an empty name is no token (transformers skips it)
        if token in numbered or token in out or (token in ids and ids[token] in roles.values()):
            continue
        out.append(token)  # a piece keeps its id (add_special_tokens), a new token takes the next
    return out


def _config_entries(config: Dict[str, Any], path: Path) -> Dict[int, Tuple[str, Any, Path]]:
    """{id: (token, entry, file)} of the config's added_tokens_decoder."""
    decoder = config.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise ValueError(f"{path}: added_tokens_decoder must be an object of id: token, got {type(decoder).__name__}")
    out = {}
    for key, value in decoder.items():
        if not str(key).isdigit():
            raise ValueError(f"{path}: added_tokens_decoder key {key!r} is not a token id")
        token = _content(value, path, f"added_tokens_decoder[{key}]")
        if token is None or not token.strip():
            raise ValueError(f"{path}: added_tokens_decoder[{key}] is blank ({value!r})")
        out[int(key)] = (token, value, path)
    return out
