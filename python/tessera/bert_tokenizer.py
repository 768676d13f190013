"""BERT's WordPiece tokenizer with transformers' BertTokenizerFast interface, over the C++
tokenizer in ``tessera._C.text`` (csrc/tessera/text/wordpiece_tokenizer.h). Also reachable as
``tessera.text.BertTokenizer``."""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from tessera import _C
from tessera.bert_folder import check_tokenizer_json, normalizer_flags
from tessera.io import is_regular_file
from tessera.tokenizer_files import config_extra, merge_legacy_files
from tessera.bert_pairs import cut, join_pair, pair_lengths
from tessera.text import Texts, _as_ids, _as_text, _token_list

__all__ = ["BertTokenizer", "BertEncoding"]


class BertEncoding(dict):
    """What :class:`BertTokenizer` returns: transformers' ``BatchEncoding`` reduced to a dict
    whose keys (``input_ids``, ``token_type_ids``, ``attention_mask``) are also attributes."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device) -> "BertEncoding":
        return BertEncoding({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


_SPECIAL_ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")


class BertTokenizer:
    """BERT's WordPiece tokenizer, id-for-id equal to transformers' ``BertTokenizerFast`` with the
    same ``vocab.txt`` and flags, with its method names; the work is in C++ threads.

    Args:
        vocab_file: BERT's ``vocab.txt``, one token per line (id = line number), or a
            ``tokenizer.json`` holding a WordPiece model (its ``model.vocab``).
        do_lower_case, strip_accents, tokenize_chinese_chars: ``BertNormalizer``'s switches;
            ``strip_accents=None`` strips exactly when lower-casing, as BERT does.
        unk_token ... mask_token: the special tokens (must be in the vocabulary; ``[MASK]`` is
            added after it when missing, as transformers does).
        model_max_length: the ``max_length`` used when truncating or padding to ``"max_length"``
            without one (512 for BERT checkpoints; ``None``: no limit).
        clean_up_tokenization_spaces: ``decode``'s default (BERT folders set it to true).
        additional_special_tokens, bos_token, eos_token: more special tokens (kept whole in text,
            new ones numbered after the vocabulary), e.g. BLIP-2's ``bos_token="[DEC]"``.

    Example::

        tok = BertTokenizer.from_pretrained("bert-base-uncased")      # a local folder
        batch = tok(["a photo of a cat", "a dog"], padding=True, truncation=True, max_length=32)
        batch.input_ids, batch.attention_mask                         # LongTensors [2, 7]
        tok.add_special_tokens({"bos_token": "[DEC]"})                # LAVIS's BLIP-2 decoder bos
        tok.decode(batch.input_ids[0], skip_special_tokens=True)      # 'a photo of a cat'

    Differences from transformers: ``return_tensors`` defaults to ``"pt"``; a ``max_length``
    too small for ``[CLS]`` and ``[SEP]`` is refused rather than ignored; offsets and
    overflowing tokens are not offered. Pairs (``tok(questions, contexts)`` or a batch of
    tuples) give ``[CLS] a [SEP] b [SEP]`` with token types 0 and 1, cut as transformers cuts
    them (``longest_first``, ``only_first``, ``only_second``).
    """

    def __init__(
        self,
        vocab_file: Union[str, os.PathLike],
        do_lower_case: bool = True,
        strip_accents: Optional[bool] = None,
        tokenize_chinese_chars: bool = True,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        bos_token: Optional[str] = None,
        eos_token: Optional[str] = None,
        additional_special_tokens: Sequence[str] = (),
        model_max_length: Optional[int] = None,
        padding_side: str = "right",
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,  # transformers 5's default (4's was True)
    ):
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("right", "left"):
                raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
        if model_max_length is not None and int(model_max_length) < 2:
            raise ValueError(f"model_max_length must be at least 2, got {model_max_length}")
        self.vocab_file = str(Path(vocab_file).expanduser())
        if Path(self.vocab_file).is_dir():
            raise ValueError(f"BertTokenizer: {self.vocab_file} is a folder; give its vocab.txt, or load the folder "
                             "with BertTokenizer.from_pretrained")
        self._impl = _C.text.WordPieceTokenizer(
            self.vocab_file, bool(do_lower_case), strip_accents, bool(tokenize_chinese_chars),
            unk_token, sep_token, pad_token, cls_token, mask_token)
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        self.bos_token: Optional[str] = None
        self.eos_token: Optional[str] = None
        self.additional_special_tokens: List[str] = []
        self.model_max_length = None if model_max_length is None else int(model_max_length)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.add_special_tokens({"bos_token": bos_token, "eos_token": eos_token,
                                 "additional_special_tokens": _token_list(additional_special_tokens,
                                                                            "additional_special_tokens")})

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: Union[str, os.PathLike], **kwargs) -> "BertTokenizer":
        """A BERT tokenizer folder as transformers saves it: ``vocab.txt`` (transformers 5 saves
        ``tokenizer.json`` alone, whose WordPiece vocabulary is read then) and, when present,
        ``tokenizer_config.json`` (do_lower_case, strip_accents, tokenize_chinese_chars, the
        special tokens, model_max_length, added special tokens such as LAVIS's ``[DEC]``).
        ``kwargs`` override the file's values. Nothing is downloaded."""
        folder = Path(folder).expanduser()
        vocab = folder / "vocab.txt"
        if not is_regular_file(vocab) and is_regular_file(folder / "tokenizer.json"):
            vocab = folder / "tokenizer.json"  # transformers 5 saves no vocab.txt
        if not is_regular_file(vocab):
            raise ValueError(f"BertTokenizer.from_pretrained: {folder} holds neither vocab.txt nor tokenizer.json "
                             f"(a BERT tokenizer folder holds one of them and tokenizer_config.json; nothing is "
                             f"downloaded)")
        config: Dict[str, Any] = {}
        path = folder / "tokenizer_config.json"
        if is_regular_file(path):
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"BertTokenizer.from_pretrained: {path} is not valid JSON: {e}") from None
            if not isinstance(config, dict):
                raise ValueError(f"BertTokenizer.from_pretrained: {path} is not a JSON object")
            _check_config_types(config, path)
        elif vocab.name == "tokenizer.json":  # no config: transformers reads the file as written
            config = normalizer_flags(vocab)
        config = merge_legacy_files(folder, config)
        args: Dict[str, Any] = {}
        for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "padding_side",
                    "truncation_side", "clean_up_tokenization_spaces", *_SPECIAL_ROLES):
            if config.get(key) is not None:
                args[key] = _token_content(config[key]) if key.endswith("_token") else config[key]
        if isinstance(config.get("model_max_length"), int) and config["model_max_length"] < 1 << 40:
            args["model_max_length"] = config["model_max_length"]
        args["additional_special_tokens"] = config_extra(config, path)
        args.update(kwargs)
        # Tokens that may be new go in after the ones the file numbers.
        later = {k: args.pop(k, None) for k in ("bos_token", "eos_token", "additional_special_tokens")}
        tok = cls(vocab, **args)
        decoder = config.get("added_tokens_decoder") or {}
        for i, value in sorted((int(k), v) for k, v in decoder.items()):
            token = _token_content(value)
            # normalized: matched in the lower-cased text ("[NEW]" as "[new]"); WordPiece splits at spaces anyway
            for flag, changes in (("single_word", True), ("normalized", args.get("do_lower_case", True)),
                                  ("lstrip", False), ("rstrip", False)):
                if isinstance(value, dict) and value.get(flag) and changes:
                    raise ValueError(f"BertTokenizer.from_pretrained: {path}: added token {token!r} has {flag} true: "
                                     "transformers matches it other than as written, tessera as written")
            if not (isinstance(value, dict) and value.get("special")):
                if i < tok.vocab_size:
                    continue  # an ordinary vocabulary entry
                raise ValueError(f"BertTokenizer.from_pretrained: {path}: added token {token!r} is not "
                                 f"special; only special added tokens are supported")
            got = tok._impl.add_special_token(_check_token(token))
            if got != i:
                raise ValueError(f"BertTokenizer.from_pretrained: {path} gives {token!r} id {i}, but it "
                                 f"takes id {got} after {vocab}")
        tok.add_special_tokens({k: v for k, v in later.items() if v is not None})
        check_tokenizer_json(folder, tok)
        return tok

    def add_special_tokens(self, special_tokens: Union[Dict[str, Any], Sequence[str]]) -> int:
        """transformers' ``add_special_tokens``: a dict of roles (``{"bos_token": "[DEC]"}``,
        ``{"additional_special_tokens": [...]}``) or a list of tokens. Each is kept whole when
        written in text; one not in the vocabulary gets the next id. Returns how many tokens
        became special (a vocabulary token counts, as in transformers). Call it before the
        tokenizer is shared: it must not run while another thread encodes."""
        if not isinstance(special_tokens, dict):
            special_tokens = {"additional_special_tokens": _token_list(special_tokens, "add_special_tokens()")}
        before = len(self._impl.special_ids())
        for role, value in special_tokens.items():
            if role == "additional_special_tokens":
                for token in _token_list(value or (), "additional_special_tokens"):
                    self._impl.add_special_token(_check_token(token))
                    if token not in self.additional_special_tokens:
                        self.additional_special_tokens.append(token)
            elif role in _SPECIAL_ROLES:
                if value is not None:
                    self._impl.add_special_token(_check_token(value))
                    setattr(self, role, value)
            else:
                raise ValueError(f"add_special_tokens: unknown role {role!r} (one of {', '.join(_SPECIAL_ROLES)}, "
                                 f"additional_special_tokens)")
        return len(self._impl.special_ids()) - before

    # ---- encoding --------------------------------------------------------------------------
    def __call__(
        self,
        text: Texts,
        text_pair: Optional[Texts] = None,
        add_special_tokens: bool = True,
        padding: Union[bool, str] = False,
        truncation: Union[bool, str, None] = None,
        max_length: Optional[int] = None,
        pad_to_multiple_of: Optional[int] = None,
        padding_side: Optional[str] = None,
        return_tensors: Optional[str] = "pt",
        return_token_type_ids: bool = True,
        return_attention_mask: bool = True,
    ) -> BertEncoding:
        """transformers' ``__call__`` for one text or a batch (or pairs: ``text_pair``, or a batch
        of (a, b) tuples): ``input_ids``, ``token_type_ids`` (zeros; 1 on a pair's second text)
        and ``attention_mask``; LongTensors [N, L] (``return_tensors="pt"``, [1, L] for
        one str) or lists (``return_tensors=None``).

        padding: False, True / "longest" (to the longest row) or "max_length".
        truncation: True / "longest_first" / "only_first" cut rows to ``max_length`` ids,
            ``[CLS]`` and ``[SEP]`` included (``truncation_side`` says which end goes); None
            truncates when ``max_length`` is given without padding, as transformers does.
        """
        single = isinstance(text, str)
        if not single and not isinstance(text, (list, tuple)):
            text = list(text)
        pad, trunc, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        side = padding_side or self.padding_side
        if side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        texts = [text] if single else text
        pairs = _pair_texts(texts, text_pair, single)
        if pairs is not None:
            strategy = "longest_first" if truncation in (True, None) else truncation
            ids, types = self._encode_pairs(*pairs, add_special_tokens, trunc, strategy, max_length)
            return self._padded(ids, types, single, pad, max_length, pad_to_multiple_of, side, return_tensors,
                                return_token_type_ids, return_attention_mask)
        if truncation == "only_second":
            self._refuse_cut_without_pair(texts, add_special_tokens, max_length if trunc else None)
            trunc = False
        cut = max_length if trunc else -1
        left = self.truncation_side == "left"
        if return_tensors == "pt":  # padded in C++
            pad_to = -1 if pad is None else (max_length if pad == "max_length" else 0)
            ids, mask = self._impl.encode_padded(texts, add_special_tokens, cut, left, pad_to,
                                                 pad_to_multiple_of or 0, side == "left")
            return _encoding(ids, torch.zeros_like(ids), mask, return_token_type_ids, return_attention_mask)
        # Lists: a row longer than the padding length stays as it is (transformers).
        ids = self._impl.encode_batch(texts, add_special_tokens, cut, left)
        return self._padded(ids, [[0] * len(row) for row in ids], single, pad, max_length, pad_to_multiple_of, side,
                            None, return_token_type_ids, return_attention_mask)

    def _encode_pairs(self, firsts: List[str], seconds: List[str], special: bool, trunc: bool, strategy: str,
                      max_length: Optional[int]):
        """Ids and token types of each pair, cut to max_length as BertTokenizerFast cuts them."""
        a_ids = self._impl.encode_batch(firsts, False, -1, False)
        b_ids = self._impl.encode_batch(seconds, False, -1, False)
        extra = 3 if special else 0
        if trunc and max_length < extra:
            raise ValueError(f"max_length {max_length} is shorter than a pair's {extra} special tokens")
        left = self.truncation_side == "left"
        ids, types = [], []
        for a, b in zip(a_ids, b_ids):
            if trunc:
                n1, n2 = pair_lengths(len(a), len(b), max_length - extra, strategy)
                a, b = cut(a, n1, left), cut(b, n2, left)
            row, kind = join_pair(a, b, self.cls_token_id, self.sep_token_id, special)
            ids.append(row)
            types.append(kind)
        return ids, types

    def _padded(self, ids, types, single, pad, max_length, pad_to_multiple_of, side, return_tensors,
                return_token_type_ids, return_attention_mask) -> BertEncoding:
        """Rows of ids padded as transformers pads them (token type 0 on padding), as lists or a
        LongTensor."""
        mask = [[1] * len(row) for row in ids]
        if pad is not None:
            width = max(map(len, ids), default=0) if pad != "max_length" else max_length
            if pad_to_multiple_of:
                width = -(-width // pad_to_multiple_of) * pad_to_multiple_of

            def put(row, value):
                fill = [value] * max(0, width - len(row))
                return fill + row if side == "left" else row + fill
            ids = [put(r, self.pad_token_id) for r in ids]
            types, mask = [put(r, 0) for r in types], [put(r, 0) for r in mask]
        if return_tensors == "pt":
            if len({len(r) for r in ids}) > 1:
                raise ValueError(f"rows of {min(map(len, ids))} to {max(map(len, ids))} tokens make no tensor: pass "
                                 "padding=True (or truncation with padding='max_length')")
            ids, types, mask = (torch.tensor(x, dtype=torch.long).view(len(x), -1) for x in (ids, types, mask))
        elif single:
            ids, types, mask = ids[0], types[0], mask[0]
        return _encoding(ids, types, mask, return_token_type_ids, return_attention_mask)

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        """transformers' _get_padding_truncation_strategies: (pad None|"longest"|"max_length",
        truncate bool, max_length)."""
        if max_length is not None and padding is False and truncation is None:
            truncation = True
        if padding is True or padding == "longest":
            pad = "longest"
        elif padding is False or padding is None or padding == "do_not_pad":
            pad = None
        elif padding == "max_length":
            pad = "max_length"
        else:
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if truncation is True or truncation in ("longest_first", "only_first", "only_second"):
            trunc = True
        elif truncation is None or truncation is False or truncation == "do_not_truncate":
            trunc = False
        else:
            raise ValueError(f"truncation must be True, False, 'longest_first', 'only_first', 'only_second' or "
                             f"'do_not_truncate', got {truncation!r}")
        if max_length is None:
            if pad == "max_length":
                if self.model_max_length is None:
                    pad = None
                else:
                    max_length = self.model_max_length
            if trunc:
                if self.model_max_length is None:
                    trunc = False
                else:
                    max_length = self.model_max_length
        elif isinstance(max_length, bool) or not isinstance(max_length, int):
            raise TypeError(f"max_length must be an int, got {type(max_length).__name__}")
        elif not 1 <= max_length < 1 << 40:  # a negative one was ignored without a word
            raise ValueError(f"max_length must be in [1, 2^40), got {max_length}")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")
        if trunc and pad is not None and pad_to_multiple_of and max_length % pad_to_multiple_of != 0:
            raise ValueError(f"Truncation and padding are both activated but truncation length ({max_length}) "
                             f"is not a multiple of pad_to_multiple_of ({pad_to_multiple_of}).")
        return pad, trunc, max_length

    def encode(self, text: str, text_pair: Optional[str] = None, add_special_tokens: bool = True,
               truncation: Union[bool, str, None] = None, max_length: Optional[int] = None) -> List[int]:
        """Ids of one text: ``[CLS]``, its WordPieces, ``[SEP]``; of a pair ``[CLS] a [SEP] b [SEP]``."""
        _, trunc, max_length = self._strategies(False, truncation, max_length, None)
        pairs = _pair_texts([text], text_pair, True)  # None for ("a", ""): "a" alone, as in transformers
        if pairs is not None:
            strategy = "longest_first" if truncation in (True, None) else truncation
            return self._encode_pairs(*pairs, add_special_tokens, trunc, strategy, max_length)[0][0]
        if truncation == "only_second":
            self._refuse_cut_without_pair([text], add_special_tokens, max_length if trunc else None)
            trunc = False
        return self._impl.encode(_as_text(text), add_special_tokens, max_length if trunc else -1,
                                 self.truncation_side == "left")

    def _refuse_cut_without_pair(self, texts, add_special_tokens: bool, max_length: Optional[int]) -> None:
        """`only_second` on texts without a pair, as `tokenizers` does: nothing to cut is fine (the
        text is encoded whole), a text that would need cutting is refused."""
        if max_length is None:
            return
        for i, text in enumerate(texts):
            n = len(self._impl.encode(_as_text(text), add_special_tokens, -1, False))
            if n > max_length:
                raise ValueError(f"truncation='only_second' needs a text pair: text {i} has {n} tokens, more than "
                                 f"max_length {max_length}, and no second text to cut")

    def tokenize(self, text: str) -> List[str]:
        """The WordPiece strings of one text (``["un", "##aff", "##able"]``), no ``[CLS]``/``[SEP]``."""
        return self._impl.tokenize(_as_text(text))

    # ---- decoding --------------------------------------------------------------------------
    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: Optional[bool] = None) -> str:
        """``BertTokenizerFast.decode``: pieces joined by spaces, ``##`` pieces glued on,
        spaces before punctuation removed. Raises IndexError for an id outside the vocabulary."""
        if hasattr(token_ids, "__index__") and not hasattr(token_ids, "__len__"):  # one id: int, numpy int
            token_ids = [operator.index(token_ids)]
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return self._impl.decode(_as_ids(token_ids), bool(skip_special_tokens), bool(clean))

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: Optional[bool] = None) -> List[str]:
        """``decode`` of each row (a 2-D tensor or a list of id lists); padding is removed with
        ``skip_special_tokens=True``."""
        if isinstance(sequences, torch.Tensor):
            rows = sequences.reshape(sequences.shape[0], -1).tolist() if sequences.dim() > 1 else [sequences.tolist()]
        else:
            rows = [_as_ids(r) for r in sequences]
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return self._impl.decode_batch(rows, bool(skip_special_tokens), bool(clean))

    def convert_tokens_to_ids(self, tokens: Union[str, Sequence[str]]):
        """Id of a token (or list of them); unknown tokens give ``unk_token_id``."""
        if isinstance(tokens, str):
            i = self._impl.token_to_id(tokens)
            return i if i >= 0 else self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        """Token of an id (or list of them)."""
        if isinstance(ids, int):
            return self._impl.id_to_token(ids)
        return [self._impl.id_to_token(i) for i in _as_ids(ids)
                if not (skip_special_tokens and self._impl.is_special(i))]

    # ---- vocabulary and special tokens -----------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Tokens of vocab.txt (added special tokens not counted, as in transformers)."""
        return self._impl.vocab_size()

    def __len__(self) -> int:
        """vocab_size plus added special tokens: the embedding rows a model needs."""
        return self._impl.size()

    def _id(self, token: Optional[str]) -> Optional[int]:
        return None if token is None else self.convert_tokens_to_ids(token)

    @property
    def cls_token_id(self) -> int:
        return self._impl.cls_token_id()

    @property
    def sep_token_id(self) -> int:
        return self._impl.sep_token_id()

    @property
    def pad_token_id(self) -> int:
        return self._impl.pad_token_id()

    @property
    def unk_token_id(self) -> int:
        return self._impl.unk_token_id()

    @property
    def mask_token_id(self) -> int:
        return self._impl.mask_token_id()

    @property
    def bos_token_id(self) -> Optional[int]:
        return self._id(self.bos_token)

    @property
    def eos_token_id(self) -> Optional[int]:
        return self._id(self.eos_token)

    @property
    def additional_special_tokens_ids(self) -> List[int]:
        return [self._id(t) for t in self.additional_special_tokens]

    @property
    def all_special_ids(self) -> List[int]:
        return list(self._impl.special_ids())

    @property
    def all_special_tokens(self) -> List[str]:
        return [self._impl.id_to_token(i) for i in self._impl.special_ids()]

    @property
    def do_lower_case(self) -> bool:
        return self._impl.do_lower_case()

    @property
    def strip_accents(self) -> Optional[bool]:
        return self._impl.strip_accents()

    @property
    def tokenize_chinese_chars(self) -> bool:
        return self._impl.tokenize_chinese_chars()

    def _init_args(self) -> Dict[str, Any]:
        return dict(do_lower_case=self.do_lower_case, strip_accents=self.strip_accents,
                    tokenize_chinese_chars=self.tokenize_chinese_chars, unk_token=self.unk_token,
                    sep_token=self.sep_token, pad_token=self.pad_token, cls_token=self.cls_token,
                    mask_token=self.mask_token, model_max_length=self.model_max_length, padding_side=self.padding_side,
                    truncation_side=self.truncation_side,
                    clean_up_tokenization_spaces=self.clean_up_tokenization_spaces)

    def __reduce__(self):
        # Pickle by path and settings; special tokens are re-added in their order so ids match.
        specials = [self._impl.id_to_token(i) for i in self._impl.special_ids()]
        roles = {"bos_token": self.bos_token, "eos_token": self.eos_token,
                 "additional_special_tokens": list(self.additional_special_tokens)}
        return (_rebuild_bert, (self.vocab_file, self._init_args(), specials, roles))

    def __repr__(self) -> str:
        return (f"BertTokenizer(vocab_file='{self.vocab_file}', vocab_size={self.vocab_size}, "
                f"do_lower_case={self.do_lower_case}, strip_accents={self.strip_accents}, "
                f"special_tokens={self.all_special_tokens})")


def _rebuild_bert(vocab_file, args, specials, roles):
    tok = BertTokenizer(vocab_file, **args)
    for token in specials:
        tok._impl.add_special_token(token)
    tok.add_special_tokens({k: v for k, v in roles.items() if v is not None})
    return tok


#: tokenizer_config.json keys and the JSON types they take ("false" as a string read as True).
_CONFIG_TYPES = {"do_lower_case": (bool,), "tokenize_chinese_chars": (bool,), "clean_up_tokenization_spaces": (bool,),
                 "strip_accents": (bool, type(None)), "padding_side": (str,), "truncation_side": (str,),
                 "added_tokens_decoder": (dict,), "additional_special_tokens": (list,),
                 "extra_special_tokens": (list, dict)}


def _encoding(ids, types, mask, with_types: bool, with_mask: bool) -> BertEncoding:
    out = BertEncoding(input_ids=ids)
    if with_types:
        out["token_type_ids"] = types
    if with_mask:
        out["attention_mask"] = mask
    return out


def _pair_texts(texts: Sequence, text_pair, single: bool):
    """(firsts, seconds) when the call encodes pairs — `text_pair` beside `text`, or a batch of
    (a, b) tuples as transformers takes them — else None."""
    if single and isinstance(text_pair, str) and not text_pair:
        text_pair = None  # transformers encodes `(text, "")` as the text alone ([CLS] a [SEP])
    if text_pair is None:
        if not single and texts and all(isinstance(t, (tuple, list)) for t in texts):
            if any(len(t) != 2 for t in texts):
                raise ValueError("a batch of pairs holds (text, text_pair) tuples of two strings")
            return [_as_text(t[0]) for t in texts], [_as_text(t[1]) for t in texts]
        return None
    seconds = [text_pair] if single and isinstance(text_pair, str) else text_pair
    if single != isinstance(text_pair, str) or not isinstance(seconds, (list, tuple)) or len(seconds) != len(texts):
        raise ValueError(f"text_pair must match text: a str for a str, a list of {len(texts)} for a list of "
                         f"{len(texts)}, got {type(text_pair).__name__}")
    return [_as_text(t) for t in texts], [_as_text(t) for t in seconds]


def _check_config_types(config: Dict[str, Any], path) -> None:
    for key, types in _CONFIG_TYPES.items():
        if key in config and config[key] is not None and not isinstance(config[key], types):
            names = " or ".join("null" if t is type(None) else {"bool": "true/false", "str": "a string",
                                                              "dict": "an object", "list": "a list"}[t.__name__]
                                for t in types)
            raise ValueError(f"BertTokenizer.from_pretrained: {path}: {key} must be {names}, got {config[key]!r:.60}")
    for key in config.get("added_tokens_decoder") or {}:
        if not (isinstance(key, str) and key.isdigit()):
            raise ValueError(f"BertTokenizer.from_pretrained: {path}: added_tokens_decoder keys are token ids, "
                             f"got {key!r:.40}")
    for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token"):
        if config.get(key) is not None:
            try:
                _token_content(config[key])
            except ValueError as e:
                raise ValueError(f"BertTokenizer.from_pretrained: {path}: {key}: {e}") from None


def _token_content(value) -> str:
    """A token as tokenizer_config.json writes it: a str, or an AddedToken dict."""
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a token string or {{'content': ...}}, got {value!r}"[:200])


def _check_token(token) -> str:
    if not isinstance(token, str) or not token or token.isspace():
        raise ValueError(f"a special token must be a non-blank string, got {token!r}")
    return _as_text(token, "special token")
