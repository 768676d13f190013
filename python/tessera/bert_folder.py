"""The files of a BERT tokenizer folder besides vocab.txt and tokenizer_config.json, read as
transformers 5 reads them where they change ids: special_tokens_map.json and added_tokens.json
(what transformers < 4.34 saved: a LAVIS BLIP-2 tokenizer's ``[DEC]`` bos), and tokenizer.json,
which transformers reads first: it must hold the vocabulary and added tokens tessera built from
the other files, or the folder is refused by name. They were skipped without a word."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")


def _content(value: Any, path: Path, key: str) -> str:
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, str):
        return value
    raise ValueError(f"BertTokenizer.from_pretrained: {path}: {key} must be a token string or {{'content': ...}}, "
                     f"got {value!r:.80}")


def _object(path: Path) -> Dict[str, Any]:
    from .io import read_json

    value = read_json(path, "a tokenizer file")
    if not isinstance(value, dict):
        raise ValueError(f"BertTokenizer.from_pretrained: {path} is not a JSON object")
    return value


def merge_legacy_files(folder: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """`config` (tokenizer_config.json's) with special_tokens_map.json's roles and extra tokens
    and added_tokens.json's ids as added_tokens_decoder entries (special where a role or an extra
    token names them). A role both files give differently is refused."""
    from .io import is_regular_file

    config = dict(config)
    path = folder / "special_tokens_map.json"
    if is_regular_file(path, "the tokenizer's special tokens"):
        for key, value in _object(path).items():
            if key in ROLES:
                token = _content(value, path, key)
                if config.get(key) is not None and _content(config[key], path, key) != token:
                    raise ValueError(f"BertTokenizer.from_pretrained: {path}: {key} {token!r} differs from "
                                     f"tokenizer_config.json's {_content(config[key], path, key)!r}")
                config[key] = token
            elif key in ("additional_special_tokens", "extra_special_tokens"):
                values = value.values() if isinstance(value, dict) else value
                if not isinstance(values, (list, type({}.values()))):
                    raise ValueError(f"BertTokenizer.from_pretrained: {path}: {key} must be a list, got {value!r:.80}")
                config["additional_special_tokens"] = [*config_extra(config, path),
                                                       *(_content(v, path, key) for v in values)]
    path = folder / "added_tokens.json"
    if is_regular_file(path, "the tokenizer's added tokens"):
        special = {_content(config[k], path, k) for k in ROLES if config.get(k) is not None} | set(
            config_extra(config, path))
        decoder = dict(config.get("added_tokens_decoder") or {})
        for token, i in _object(path).items():
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise ValueError(f"BertTokenizer.from_pretrained: {path}: {token!r} must map to a token id, got {i!r}")
            decoder.setdefault(str(i), {"content": token, "special": token in special})
        config["added_tokens_decoder"] = decoder
    return config


def config_extra(config: Dict[str, Any], path: Path) -> list:
    """The extra special tokens of a config: additional_special_tokens, and extra_special_tokens
    as transformers 5 writes it (a list, or named tokens: {"image_token": "[IMG]"})."""
    out = []
    for key in ("additional_special_tokens", "extra_special_tokens"):
        value = config.get(key)
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        out += [_content(v, path, key) for v in values]
    return list(dict.fromkeys(out))


def check_tokenizer_json(folder: Path, tok) -> None:
    """tokenizer.json, which transformers reads before vocab.txt, must agree with what tessera
    built: the same vocabulary, each added token at the same id, padding on the same side."""
    from .io import is_regular_file

    path = folder / "tokenizer.json"
    if not is_regular_file(path, "the tokenizer's vocabulary"):
        return
    data = _object(path)
    vocab = (data.get("model") or {}).get("vocab") if isinstance(data.get("model"), dict) else None
    if not isinstance(vocab, dict):
        raise ValueError(f"BertTokenizer.from_pretrained: {path}: no WordPiece vocabulary (model.vocab)")
    for token, i in vocab.items():
        if tok.convert_tokens_to_ids(token) != i:
            raise ValueError(f"BertTokenizer.from_pretrained: {path}: {token!r} has id {i} there and "
                             f"{tok.convert_tokens_to_ids(token)} in vocab.txt; transformers reads tokenizer.json")
    for added in data.get("added_tokens") or []:
        token, i = added.get("content"), added.get("id")
        if tok.convert_tokens_to_ids(token) != i or (added.get("special") and token not in tok.all_special_tokens):
            raise ValueError(f"BertTokenizer.from_pretrained: {path}: added token {token!r} (id {i}) is not one "
                             "tessera read from tokenizer_config.json; transformers reads tokenizer.json")
    padding = data.get("padding")
    if isinstance(padding, dict) and str(padding.get("direction", "Right")).lower() != tok.padding_side:
        raise ValueError(f"BertTokenizer.from_pretrained: {path}: padding direction {padding.get('direction')!r} "
                         f"differs from padding_side {tok.padding_side!r}")
