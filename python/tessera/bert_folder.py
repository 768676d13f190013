"""A BERT tokenizer folder's tokenizer.json, which transformers reads before vocab.txt: it must
hold the vocabulary and added tokens tessera built from the other files (tokenizer_files.py), or
the folder is refused by name. It was skipped without a word."""
from __future__ import annotations

from pathlib import Path

from ._warn import warn
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
        if not isinstance(added, dict):
            raise ValueError(f"BertTokenizer.from_pretrained: {path}: an added_tokens entry must be an object, "
                             f"got {added!r:.80}")
        token, i = added.get("content"), added.get("id")
        if tok.convert_tokens_to_ids(token) != i or (added.get("special") and token not in tok.all_special_tokens):
            raise ValueError(f"BertTokenizer.from_pretrained: {path}: added token {token!r} (id {i}) is not one "
                             "tessera read from tokenizer_config.json; transformers reads tokenizer.json")
    padding = data.get("padding")
    if isinstance(padding, dict) and str(padding.get("direction", "Right")).lower() != tok.padding_side:
        raise ValueError(f"BertTokenizer.from_pretrained: {path}: padding direction {padding.get('direction')!r} "
                         f"differs from padding_side {tok.padding_side!r}")


_BERT_SINGLE = [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}]
_BERT_PAIR = _BERT_SINGLE + [{"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}]


def _check_pipeline(path: Path, data: dict) -> None:
    """Says which parts of a tokenizer.json BERT's pipeline differs from: transformers' AutoTokenizer
    reads a folder holding it alone as written (another word-length limit, pre-tokenizer,
    post-processor or unknown token: other ids), while its BertTokenizer, and AutoTokenizer in a
    BERT model's folder, build BERT's, as tessera does. Said, not refused: both are transformers'."""
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    post = data.get("post_processor")
    bert_post = isinstance(post, dict) and (
        (post.get("type") == "TemplateProcessing" and post.get("single") == _BERT_SINGLE
         and post.get("pair") == _BERT_PAIR)
        or (post.get("type") == "BertProcessing" and (post.get("cls") or [None])[0] == "[CLS]"
            and (post.get("sep") or [None])[0] == "[SEP]"))
    differ = []
    if model.get("max_input_chars_per_word", 100) != 100:
        differ.append(f"model.max_input_chars_per_word {model['max_input_chars_per_word']!r}")
    if model.get("unk_token", "[UNK]") != "[UNK]":
        differ.append(f"model.unk_token {model['unk_token']!r:.40}")
    if data.get("pre_tokenizer") != {"type": "BertPreTokenizer"}:
        differ.append(f"pre_tokenizer {data.get('pre_tokenizer')!r:.60}")
    if not bert_post:
        differ.append(f"post_processor {post!r:.60}")
    if differ:
        warn(f"{path}: {'; '.join(differ)}: not BERT's. tessera reads BERT's pipeline, as transformers' "
             "BertTokenizer does (and AutoTokenizer in a BERT model's folder); AutoTokenizer on this folder alone "
             "reads the file as written and gives other ids")


def normalizer_flags(path: Path) -> dict:
    """do_lower_case, strip_accents and tokenize_chinese_chars from a tokenizer.json,
    for a folder without tokenizer_config.json: transformers then reads the file as written, where
    its BertTokenizer class would take a config's flags (or their defaults). Where the rest of its
    pipeline is not BERT's, a warning says so (`_check_pipeline`)."""
    data = read_object(path)
    _check_pipeline(path, data)
    norm = data.get("normalizer")
    if not (isinstance(norm, dict) and norm.get("type") == "BertNormalizer" and norm.get("clean_text", True) is True):
        raise ValueError(f"BertTokenizer.from_pretrained: {path}: normalizer {norm!r:.100} is not a BertNormalizer "
                         "with clean_text (and no tokenizer_config.json names BERT's flags)")
    flags = {"do_lower_case": norm.get("lowercase", True), "strip_accents": norm.get("strip_accents"),
             "tokenize_chinese_chars": norm.get("handle_chinese_chars", True)}
    for key, value in flags.items():
        if value not in (True, False) and not (key == "strip_accents" and value is None):
            raise ValueError(f"BertTokenizer.from_pretrained: {path}: normalizer flag for {key} is {value!r}")
    return flags
