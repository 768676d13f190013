"""A ClipTokenizer saved as the Hugging Face folder transformers' CLIPTokenizer reads with the
same ids: vocab.json and merges.txt made from open_clip's merges file as open_clip makes its
vocabulary (the 256 byte characters, each again with "</w>", then one entry per merge), the start
and end tokens under transformers' names, and a tokenizer_config.json that pads with the end token
(transformers' CLIP padding; tessera and open_clip pad with id 0, which the features, pooled at
the end token, never attend to) and reads a caption's literal "<|endoftext|>" as text, as
open_clip does. A CLIP checkpoint then loads with CLIPProcessor: before, it held the weights alone.

transformers' CLIPTokenizer does not clean text as open_clip does (ftfy, HTML entities unescaped
twice, final sigma) and knows open_clip's own spellings of the specials ("<start_of_text>") as
text: a caption those change gets other ids there, as with every CLIP folder transformers reads."""
from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

#: The merges open_clip's SimpleTokenizer reads: 49,152 ids less the byte characters (twice) and
#: the two special tokens.
MERGES = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"


def byte_characters() -> List[str]:
    """GPT-2's printable stand-in for each byte (its `bytes_to_unicode`), in open_clip's order: the
    printable bytes as themselves, then the others as chr(256), chr(257), ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]


def read_merges(path: Union[str, os.PathLike]) -> List[Tuple[str, str]]:
    """The first MERGES merges of a merges file (gzip or plain text, as the C++ tokenizer reads it)."""
    path = Path(path)
    with open(path, "rb") as f:
        zipped = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if zipped else open
    merges: List[Tuple[str, str]] = []
    with opener(path, "rt", encoding="utf-8") as f:
        next(f, None)  # the "#version" header
        for number, line in enumerate(f, 2):
            if len(merges) == MERGES:
                break
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}: line {number} is not a merge of two parts: {line.rstrip()!r}")
            merges.append((parts[0], parts[1]))
    if len(merges) < MERGES:
        raise ValueError(f"{path}: {len(merges)} merges, open_clip's tokenizer reads {MERGES}")
    return merges


def clip_vocabulary(path: Union[str, os.PathLike]) -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    """(vocab, merges) of the merges file: the ids open_clip's tokenizer gives each token."""
    merges = read_merges(path)
    chars = byte_characters()
    tokens = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), START, END]
    return {t: i for i, t in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=2)
def _file_texts(path: str, content: bytes) -> Tuple[str, str]:
    """vocab.json's and merges.txt's text, kept for the next save of the same merges file (keyed on
    its bytes, as tokenizer_save's cache): a run saves its tokenizer with every checkpoint, and
    reading the file is milliseconds where deriving the texts took 0.3 s."""
    vocab, merges = clip_vocabulary(path)
    return (json.dumps(vocab, ensure_ascii=False) + "\n",
            "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def save_clip_tokenizer(tok, folder: Union[str, os.PathLike]) -> None:
    """vocab.json, merges.txt and tokenizer_config.json of `tok` (a ClipTokenizer) in `folder`."""
    from .io import write_atomic, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _file_texts(str(tok.vocab_path), Path(tok.vocab_path).read_bytes())
    write_atomic(folder / "vocab.json", vocab)
    write_atomic(folder / "merges.txt", merges)
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": int(tok.context_length),
        "bos_token": START, "eos_token": END, "unk_token": END, "pad_token": END, "split_special_tokens": True,
        "do_lower_case": True, "errors": "replace",
    })
