"""The files of a tokenizer folder transformers < 4.34 saved beside its tokenizer_config.json:
special_tokens_map.json (the roles: LAVIS's "[DEC]" bos, a pad token) and added_tokens.json (the
added tokens' ids), merged into the config as transformers 5 reads them. BERT's WordPiece folders
(bert_folder.py) and SentencePiece folders (tokenizer_folder.py) both take them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

LEGACY_FILES = ("special_tokens_map.json", "added_tokens.json")
ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")


def token_content(value: Any, path: Path, key: str) -> str:
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, str):
        return value
    raise ValueError(f"{path}: {key} must be a token string or {{'content': ...}}, "
                     f"got {value!r:.80}")


def read_object(path: Path) -> Dict[str, Any]:
    from .io import read_json

    value = read_json(path, "a tokenizer file")
    if not isinstance(value, dict):
        raise ValueError(f"{path} is not a JSON object")
    return value


def merge_legacy_files(folder: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """`config` (tokenizer_config.json's) with special_tokens_map.json's roles and extra tokens
    and added_tokens.json's ids as added_tokens_decoder entries (special where a role or an extra
    token names them). A role both files give differently is refused."""
    from .io import is_regular_file

    config = dict(config)
    path = folder / "special_tokens_map.json"
    if is_regular_file(path, "the tokenizer's special tokens"):
        for key, value in read_object(path).items():
            if key in ROLES:
                token = token_content(value, path, key)
                if config.get(key) is not None and token_content(config[key], path, key) != token:
                    raise ValueError(f"{path}: {key} {token!r} differs from "
                                     f"tokenizer_config.json's {token_content(config[key], path, key)!r}")
                config[key] = token
            elif key in ("additional_special_tokens", "extra_special_tokens"):
                values = value.values() if isinstance(value, dict) else value
                if not isinstance(values, (list, type({}.values()))):
                    raise ValueError(f"{path}: {key} must be a list, got {value!r:.80}")
                config["additional_special_tokens"] = [*config_extra(config, path),
                                                       *(token_content(v, path, key) for v in values)]
    path = folder / "added_tokens.json"
    if is_regular_file(path, "the tokenizer's added tokens"):
        special = {token_content(config[k], path, k) for k in ROLES if config.get(k) is not None} | set(
            config_extra(config, path))
        decoder = dict(config.get("added_tokens_decoder") or {})
        for token, i in read_object(path).items():
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise ValueError(f"{path}: {token!r} must map to a token id, got {i!r}")
            decoder.setdefault(str(i), {"content": token, "special": token in special})
        config["added_tokens_decoder"] = decoder
    return config


def config_extra(config: Dict[str, Any], path: Path) -> list:
    """The extra special tokens of a config: extra_special_tokens as transformers 5 writes it (a
    list, or named tokens: {"image_token": "[IMG]"}), or without that key, the older
    additional_special_tokens; transformers 5 reads the second only then (even an empty
    extra_special_tokens hides it), and so does tessera, which read both."""
    key, values = extra_entries(config, path)
    return list(dict.fromkeys(token_content(v, path, key) for v in values))


def extra_entries(config: Dict[str, Any], path: Path) -> Tuple[str, list]:
    """(the key config_extra reads, its entries as written: strings or AddedToken objects)."""
    key = "extra_special_tokens" if "extra_special_tokens" in config else "additional_special_tokens"
    value = config.get(key)
    if value is not None and not isinstance(value, (dict, list)):  # a string was read as no tokens
        raise ValueError(f"{path}: {key} must be a list of tokens (or named tokens), got {value!r:.60}")
    return key, list(value.values()) if isinstance(value, dict) else value or []
