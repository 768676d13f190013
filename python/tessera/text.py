"""Tokenizers after open_clip's tokenizer.py (CLIP BPE), LLaMA's (SentencePiece) and
transformers' BertTokenizerFast (WordPiece), in C++.

The work happens in ``tessera._C.text``. ``tokenize(texts, context_length=77)`` has
open_clip's signature and returns the same LongTensor as ``open_clip.tokenize`` (same ids,
zero padding, truncation ending in the end-of-text token), many times faster. See
``csrc/tessera/text/clip_text_clean.h`` for the one cleaning step not reproduced (ftfy's
repair of mojibake such as ``"cafÃ©"``).

    >>> import tessera.text
    >>> tessera.text.tokenize("a photo of a cat")[0, :7].tolist()
    [49406, 320, 1125, 539, 320, 2368, 49407]
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import operator
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch

from tessera import _C
from tessera.bounded_encoding import prefix_rule
from tessera.io import is_regular_file
from tessera.sentencepiece_json import USER_DEFINED, convert, model_pieces, without_dummy_prefix
from tessera.tokenizer_folder import digest, folder_tokens, read_config, tokenizer_json

__all__ = ["ClipTokenizer", "SentencePieceTokenizer", "BertTokenizer", "tokenize", "default_clip_bpe_path",
           "train_sentencepiece"]

CLIP_BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_ENV = "TESSERA_CLIP_BPE"
DEFAULT_CONTEXT_LENGTH = 77

_HOW_TO_GET_BPE = (
    f"CLIP's BPE merges file ({CLIP_BPE_FILENAME}) was not found. Provide it in one of "
    f"these ways: pass its path, ClipTokenizer(vocab_path='/path/to/{CLIP_BPE_FILENAME}'); "
    f"or set the environment variable {CLIP_BPE_ENV}=/path/to/{CLIP_BPE_FILENAME}; "
    f"or `pip install open_clip_torch`, which ships it as open_clip/{CLIP_BPE_FILENAME} and "
    f"is found automatically. The same file is clip/{CLIP_BPE_FILENAME} in OpenAI's CLIP "
    f"repository."
)

Texts = Union[str, Sequence[str]]


def _missing(path: Union[str, Path], detail: str) -> FileNotFoundError:
    # errno/filename set the way open() sets them, so `except OSError` and `.filename` work.
    return FileNotFoundError(errno.ENOENT, f"{detail}. {_HOW_TO_GET_BPE}", str(path))


def default_clip_bpe_path() -> Path:
    """Where the CLIP merges file is: ``$TESSERA_CLIP_BPE``, else the copy shipped in tessera's
    package (assets/), else the one inside an installed ``open_clip`` (located without importing
    it). Raises FileNotFoundError explaining how to get the file."""
    env = os.environ.get(CLIP_BPE_ENV)
    if env:
        path = Path(env).expanduser()
        if not is_regular_file(path):
            raise _missing(path, f"${CLIP_BPE_ENV} points to a file that does not exist")
        return path
    shipped = Path(__file__).parent / "assets" / CLIP_BPE_FILENAME
    if shipped.is_file():
        return shipped
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / CLIP_BPE_FILENAME
        if path.is_file():
            return path
    raise FileNotFoundError(errno.ENOENT, _HOW_TO_GET_BPE)


def _as_text(text, where: str = "text", fix_surrogates: bool = False) -> str:
    """A str that can cross to C++ as UTF-8. Bytes read with errors="surrogateescape" (argv, stdin
    under a C locale) hold lone surrogates, which pybind11 would report only as "incompatible
    function arguments". `fix_surrogates` does what ftfy (open_clip's cleaning) does instead: a
    surrogate pair becomes the character it encodes, a lone surrogate U+FFFD."""
    if not isinstance(text, str):
        raise TypeError(f"{where} must be a str, got {type(text).__name__}: {text!r}"[:200])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        if fix_surrogates:
            return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        raise ValueError(f"{where} is not valid UTF-8 text ({e.reason} at character {e.start}: "
                         f"{text[e.start]!r}); decode the input as UTF-8 first") from None
    return text


def _as_list(texts: Texts, fix_surrogates: bool = False) -> List[str]:
    items = [texts] if isinstance(texts, str) else list(texts)
    return [_as_text(t, f"text {i}", fix_surrogates) for i, t in enumerate(items)]


def _as_ids(ids) -> List[int]:
    """One sequence of token ids: ints, or an integer tensor of at most one dimension. A batch was
    flattened into one text, a string read digit by digit, floats truncated and bools read as ids."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"expected token ids, got a {type(ids).__name__} ({ids[:20]!r})")
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"expected integer token ids, got a {ids.dtype} tensor")
        if ids.dim() > 1:
            raise ValueError(f"expected one sequence of token ids, got a tensor of shape {list(ids.shape)} "
                             f"(decode each row, or use batch_decode)")
        return ids.reshape(-1).tolist()
    out = []
    for i in ids:
        if isinstance(i, bool) or isinstance(i, (float, str, bytes)):
            raise TypeError(f"expected integer token ids, got {i!r}")
        try:
            out.append(operator.index(i))  # ints, numpy ints, 0-d integer tensors
        except TypeError:
            raise TypeError(f"expected integer token ids, got {type(i).__name__} {i!r:.40}") from None
    return out


def _token_list(tokens, what: str) -> List[str]:
    """A list of tokens; a bare string was taken as its characters (one special token each)."""
    if isinstance(tokens, (str, bytes)):
        raise TypeError(f"{what} must be a list of tokens, not one string: write [{tokens!r}]")
    return list(tokens)


class ClipTokenizer:
    """CLIP's tokenizer, id-for-id equal to open_clip's ``SimpleTokenizer`` (``clean='lower'``).

    Args:
        vocab_path: the merges file; default: see :func:`default_clip_bpe_path`.
        context_length: row length of :meth:`__call__` when none is given there.

    Example::

        tok = ClipTokenizer()
        ids = tok(["a photo of a cat", "a dog"])   # LongTensor [2, 77]
        tok.decode(tok.encode("a photo of a cat"))  # 'a photo of a cat '
    """

    def __init__(
        self,
        vocab_path: Optional[Union[str, os.PathLike]] = None,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
    ):
        path = Path(vocab_path).expanduser() if vocab_path is not None else default_clip_bpe_path()
        if not is_regular_file(path):
            raise _missing(path, "CLIP BPE merges file not found")
        self.vocab_path = path
        self.context_length = context_length
        self._impl = _C.text.ClipTokenizer(str(path))

    def __call__(self, texts: Texts, context_length: Optional[int] = None) -> torch.LongTensor:
        """LongTensor [N, context_length]: <start_of_text>, ids, <end_of_text>, zeros."""
        n = self.context_length if context_length is None else context_length
        return self._impl.tokenize(_as_list(texts, fix_surrogates=True), n)

    def encode(self, text: str) -> List[int]:
        """Ids of one text, without the start/end tokens (open_clip's ``encode``)."""
        return self._impl.encode(_as_text(text, fix_surrogates=True))

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        """``encode`` of each text, in parallel C++ threads (the GIL is released)."""
        return self._impl.encode_batch(_as_list(texts, fix_surrogates=True))

    def decode(self, ids) -> str:
        """Text of a list (or 1-D tensor) of ids; every end of word becomes a space."""
        return self._impl.decode(_as_ids(ids))

    @property
    def sot_token_id(self) -> int:
        return self._impl.sot_token_id()

    @property
    def eot_token_id(self) -> int:
        return self._impl.eot_token_id()

    @property
    def vocab_size(self) -> int:
        return self._impl.vocab_size()

    def save_pretrained(self, folder: Union[str, os.PathLike]) -> None:
        """Write the tokenizer as transformers' CLIPTokenizer reads it with the same ids
        (vocab.json, merges.txt, tokenizer_config.json; transformers pads with the end token where
        this pads with 0, and does not clean text as open_clip does: clip_tokenizer_save)."""
        from tessera.clip_tokenizer_save import save_clip_tokenizer

        save_clip_tokenizer(self, folder)

    def __reduce__(self):
        # Pickle by path (DataLoader workers, multiprocessing): the C++ state reloads fast.
        return (type(self), (str(self.vocab_path), self.context_length))

    def __repr__(self) -> str:
        return (f"ClipTokenizer(vocab_path='{self.vocab_path}', "
                f"context_length={self.context_length})")


@functools.lru_cache(maxsize=1)
def _default_tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


def tokenize(texts: Texts, context_length: int = DEFAULT_CONTEXT_LENGTH) -> torch.LongTensor:
    """open_clip's ``tokenize``: str or list of str -> LongTensor [N, context_length], using a
    shared default :class:`ClipTokenizer`."""
    return _default_tokenizer()(texts, context_length)


class SentencePieceTokenizer:
    """A SentencePiece model such as LLaMA's ``tokenizer.model``, with added special tokens.

    A special token (LLaVA's ``<image>``) is never split: ``encode`` cuts the text at each one
    and encodes the pieces between on their own, as LLaVA's ``tokenizer_image_token`` does. One
    the model already has as a piece keeps its id; others get ids from ``len(model)`` on, as
    transformers numbers added tokens (LLaVA-1.5: ``<image>`` = 32000).

    ``model_path`` may also be a LLaMA folder's ``tokenizer.json`` (transformers 5 saves no
    tokenizer.model): it is read as transformers reads it, id for id (sentencepiece_json.py); or
    the folder itself: its tokenizer.model, else its tokenizer.json.

    Example::

        sp = SentencePieceTokenizer("tokenizer.model", special_tokens=["<image>"])
        sp.encode("Hello world!")          # [1, 15043, 3186, 29991]
        sp.decode([1, 15043, 3186, 29991])  # 'Hello world!'
    """

    def __init__(self, model_path: Union[str, os.PathLike], special_tokens: Sequence[str] = ()):
        path = Path(model_path).expanduser()
        if path.is_dir():  # a LLaMA or LLaVA folder: its tokenizer.model, else transformers 5's tokenizer.json
            path = next((path / n for n in ("tokenizer.model", "tokenizer.json") if is_regular_file(path / n)),
                        path / "tokenizer.model")
        if not is_regular_file(path):
            raise FileNotFoundError(errno.ENOENT, "SentencePiece model file not found (nor tokenizer.json beside it)"
                                    if path.name == "tokenizer.model" else "SentencePiece model file not found",
                                    str(path))
        self.model_path = path
        self.digest = digest(path)  # the model and its folder's files: what an index of lengths is valid for
        config, beside = read_config(path.parent), tokenizer_json(path)
        self._json = None
        if path.suffix == ".json":  # a LLaMA tokenizer.json as transformers 5 saves it, converted in memory
            self._json = convert(*beside, config)
            self._model = self._json.model
            self._impl = _load_model(self._model)
            self.prefix_rule: Optional[str] = "anywhere"  # a BPE model
        else:
            self._impl = _C.text.SentencePieceTokenizer(str(path))
            self._model = path.read_bytes()
            self.prefix_rule = prefix_rule(path)  # where bounded_encoding.encode_at_most may cut a long text
        self._bare_impl = None
        self.special_tokens: Dict[str, int] = {}
        # The model's own bos, eos, unk and pad written in text are those tokens, as transformers reads
        # "</s>" (LLaVA's v1 separator is text).
        self._control = {self._impl.id_to_piece(i): i for i in (self.unk_id, self.bos_id, self.eos_id,
                                                                 self._impl.pad_id()) if i >= 0}
        added, self._pad_token = folder_tokens(path, config, beside, self._impl.vocab_size(), self._impl.id_to_piece,
                                               {"bos_token": self.bos_id, "eos_token": self.eos_id,
                                                "unk_token": self.unk_id})
        self.add_special_tokens([t for t in added if t not in self._control])  # the folder's, at their ids
        self.add_special_tokens(special_tokens)
        if self._pad_token is not None and self.id_to_piece(self.piece_to_id(self._pad_token)) != self._pad_token:
            raise ValueError(f"{path.parent / 'tokenizer_config.json'}: pad_token {self._pad_token!r} is neither a "
                             "piece of the model nor an added token")

    def add_special_tokens(self, tokens: Sequence[str]) -> List[int]:
        """Adds tokens that encode to one id each; returns their ids."""
        tokens = _token_list(tokens, "special_tokens")
        for token in tokens:
            if not isinstance(token, str) or not token or token.isspace():
                raise ValueError(f"a special token must be a non-blank string, got {token!r}")
            if token not in self.special_tokens:
                pid = self._impl.piece_to_id(token)
                known = pid != self._impl.unk_id() or token == self._impl.id_to_piece(pid)
                self.special_tokens[token] = pid if known else self.vocab_size
        return [self.special_tokens[t] for t in tokens]

    def _model_for(self, text: str, first: bool):
        """The model that encodes `text`, a part between special tokens: a tokenizer.json's
        Metaspace puts no "▁" before a part that starts with one, nor (prepend_scheme "first")
        before a part after a special token."""
        j = self._json
        if j is not None and j.metaspace and (text.startswith((" ", "\u2581")) or (j.first_only and not first)):
            return self._bare
        return self._impl

    @property
    def _bare(self):
        """The model without SentencePiece's "▁" before a text, loaded when first needed."""
        if self._bare_impl is None:
            self._bare_impl = _load_model(without_dummy_prefix(self._model))
        return self._bare_impl

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = False) -> List[int]:
        text = _as_text(text)
        whole = {**self._control, **self.special_tokens}
        if not any(t in text for t in whole):
            return self._model_for(text, True).encode(text, add_bos, add_eos)
        ids = [self.bos_id] if add_bos and self.bos_id >= 0 else []
        for at, (piece, special) in enumerate(_split_on(text, whole)):
            ids += [whole[piece]] if special else self._model_for(piece, at == 0).encode(piece, False, False)
        if add_eos and self.eos_id >= 0:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids) -> str:
        ids = _as_ids(ids)
        added = {i: t for t, i in self.special_tokens.items() if i >= self._impl.vocab_size()}
        bad = [i for i in ids if not 0 <= i < self._impl.vocab_size() and i not in added]
        if bad:
            raise ValueError(f"decode: id {bad[0]} is not a token of {self.model_path} "
                             f"(vocabulary of {self.vocab_size})")
        if not added:
            return self._impl.decode(ids)
        # A tokenizer.model's parts were encoded apart, each with its "▁" (legacy): each run is
        # decoded apart. A tokenizer.json's runs are decoded as written and one "▁" is taken off
        # the text's start, as transformers' decoder does (a run decoded apart lost its space).
        model = self._impl if self._json is None else self._bare
        out, run = [], []
        for i in ids + [None]:
            if i is None or i in added:
                if run:
                    out.append(model.decode(run))
                    run = []
                if i is not None:
                    out.append(added[i])
            else:
                run.append(i)
        text = "".join(out)
        return text[1:] if self._json is not None and self._json.prefix and text.startswith(" ") else text

    def id_to_piece(self, id: int) -> str:
        for token, tid in self.special_tokens.items():
            if tid == int(id):
                return token
        return self._impl.id_to_piece(int(id))

    def piece_to_id(self, piece: str) -> int:
        return self.special_tokens.get(piece, self._impl.piece_to_id(piece))

    @property
    def bos_id(self) -> int:
        return self._impl.bos_id()

    @property
    def eos_id(self) -> int:
        return self._impl.eos_id()

    @property
    def pad_id(self) -> int:
        """The model's pad piece, or the pad token its folder's tokenizer_config.json names."""
        return self.piece_to_id(self._pad_token) if self._pad_token is not None else self._impl.pad_id()

    @property
    def unk_id(self) -> int:
        return self._impl.unk_id()

    @property
    def vocab_size(self) -> int:
        """Pieces of the model plus added special tokens."""
        return max([self._impl.vocab_size() - 1, *self.special_tokens.values()]) + 1

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def user_defined(self) -> List[str]:
        """The model's user-defined pieces (spm's user_defined_symbols: a tokenizer trained by
        train_sentencepiece holds "<image>"), which SentencePiece matches inside a text."""
        return [p for p, _, kind in model_pieces(self._model) if kind == USER_DEFINED]

    def save_pretrained(self, folder: Union[str, os.PathLike]) -> None:
        """A Hugging Face tokenizer folder transformers 5 reads with these ids (tokenizer_save.py):
        the model file, a tokenizer.json that encodes as SentencePiece does, and a
        tokenizer_config.json with the added tokens and pad token."""
        from tessera.tokenizer_save import save_sentencepiece

        save_sentencepiece(self, folder)

    def __reduce__(self):
        return (type(self), (str(self.model_path), list(self.special_tokens)))

    def __repr__(self) -> str:
        extra = f", special_tokens={list(self.special_tokens)}" if self.special_tokens else ""
        return f"SentencePieceTokenizer(model_path='{self.model_path}'{extra})"


def _load_model(model: bytes):
    """A SentencePiece model held in memory (the C++ processor reads a file, once)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".model") as f:
        f.write(model)
        f.flush()
        return _C.text.SentencePieceTokenizer(f.name)


def _split_on(text: str, tokens) -> List[tuple]:
    """(piece, is_special) in order; longer tokens win where two start at one place."""
    import re

    rx = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
    out, pos = [], 0
    for m in rx.finditer(text):
        if m.start() > pos:
            out.append((text[pos:m.start()], False))
        out.append((m.group(), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def train_sentencepiece(texts: Sequence[str], path: Union[str, os.PathLike], vocab_size: int = 512,
                        special_tokens: Sequence[str] = ("<image>",), model_type: str = "bpe",
                        **options) -> SentencePieceTokenizer:
    """Trains a SentencePiece model on `texts` with LLaMA's conventions (unk 0, bos 1, eos 2, no
    pad, byte fallback, digits split, no normalisation), writes it atomically to `path` and
    returns its tokenizer. `special_tokens` become pieces of the model; `options` are more
    spm_train flags. Deterministic: one thread."""
    from .io import write_atomic

    special_tokens = _token_list(special_tokens, "train_sentencepiece(): special_tokens")
    flags = {"vocab_size": vocab_size, "model_type": model_type, "unk_id": 0, "bos_id": 1, "eos_id": 2,
             "pad_id": -1, "byte_fallback": True, "split_digits": True, "character_coverage": 1.0,
             "normalization_rule_name": "identity", "num_threads": 1, "minloglevel": 2,
             "user_defined_symbols": ",".join(special_tokens), **options}
    flags = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in flags.items()}
    write_atomic(path, _C.text.train_sentencepiece(_as_list(texts), flags))
    return SentencePieceTokenizer(path, special_tokens)


# The WordPiece tokenizer lives in its own module; imported last (it uses the helpers above).
from tessera.bert_tokenizer import BertEncoding, BertTokenizer  # noqa: E402
