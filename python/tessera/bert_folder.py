"""A BERT tokenizer folder's tokenizer.json, which transformers reads before vocab.txt: it must
hold the vocabulary and added tokens tessera built from the other files (tokenizer_files.py), or
the folder is refused by name. It was skipped without a word."""
from __future__ import annotations

from pathlib import Path

from .tokenizer_files import read_object


def check_tokenizer_json(folder: Path, tok) -> None:
    """tokenizer.json, which transformers reads before vocab.txt, must agree with what tessera
    built: the same vocabulary, each added token at the same id, padding on the same side."""
    from .io import is_regular_file

    path = folder / "tokenizer.json"
    if not is_regular_file(path, "the tokenizer's vocabulary"):
        return
    data = read_object(path)
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
