"""Every reader of a path that someone else's file names (a caption list's images, a shard list,
a tokenizer or model folder) refuses a folder, a FIFO and a device, naming the path. A caption
entry naming a FIFO blocked the data loader for good, one naming /dev/zero read until memory ran
out, and a folder failed with "basic_string::_M_create", naming nothing."""
import contextlib
import json
import os
import threading

import pytest

import tessera
from tessera import _C
from tessera.bert_tokenizer import BertTokenizer
from tessera.data import CaptionDataset
from tessera.data.shards import file_samples
from tessera.text import ClipTokenizer, SentencePieceTokenizer


def _captions(path, folder):
    (folder / "caps.jsonl").write_text(json.dumps({"image": str(path), "caption": "a cat"}) + "\n")
    return CaptionDataset(str(folder / "caps.jsonl"))[0]


def _model_folder(path, folder):
    return tessera.from_pretrained(str(folder))


READERS = {  # name: (the file's name in its folder, the call that reads it)
    "caption image": ("img.jpg", _captions),
    "caption list": ("caps.csv", lambda p, _: CaptionDataset(str(p))),
    "tar shard": ("s-000.tar", lambda p, _: list(_C.data.TarReader(str(p)))),
    "json records": ("data.json", lambda p, _: _C.data.json_records(str(p), 1 << 20)),
    "sentencepiece model": ("tokenizer.model", lambda p, _: SentencePieceTokenizer(str(p))),
    "clip merges": ("bpe.txt.gz", lambda p, _: ClipTokenizer(str(p))),
    "wordpiece vocabulary": ("vocab.txt", lambda p, folder: BertTokenizer.from_pretrained(str(folder))),
    "image packed into a shard": ("img.png", lambda p, _: list(file_samples([(str(p), "a cat", None)]))),
    "model config": ("config.json", _model_folder),
    "safetensors file": ("model.safetensors", lambda p, _: _C.core.load_safetensors(str(p))),
}
KINDS = {
    "folder": os.mkdir,
    "fifo": os.mkfifo,
    "device": lambda p: os.symlink("/dev/zero", p),  # read, it never ends
}


@contextlib.contextmanager
def _no_reader_waits(fifo):
    """Fails the test if anything opens `fifo` for reading (such an open waits for a writer; the
    watchdog's non-blocking open succeeds only then, and frees it)."""
    stuck, done = [], threading.Event()

    def watch():
        while not done.wait(0.2):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                stuck.append(fifo)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    assert not stuck, f"a reader waited on the FIFO {fifo}"


@pytest.mark.parametrize("reader, kind", [(r, k) for r in READERS for k in KINDS
                                          if (r, k) != ("sentencepiece model", "folder")])  # a folder holding one
def test_a_path_that_is_not_a_regular_file_is_refused_by_name(tmp_path, reader, kind):
    name, read = READERS[reader]
    folder = tmp_path / "from-someone-else"
    folder.mkdir()
    path = folder / name
    KINDS[kind](str(path))
    with _no_reader_waits(str(path)) if kind == "fifo" else contextlib.nullcontext():
        with pytest.raises(ValueError, match="not a regular file") as error:
            read(path, folder)
    assert name in str(error.value)


def test_a_broken_link_is_a_missing_file(tmp_path, lm):
    """A pruned Hugging Face cache leaves links to nothing; transformers reads them as absent, and so
    does tessera (a generation_config.json linked to nothing failed the load)."""
    from tessera.io import is_regular_file

    lm.save_pretrained(str(tmp_path / "m"))
    (tmp_path / "m" / "generation_config.json").unlink(missing_ok=True)
    plain = tessera.from_pretrained(str(tmp_path / "m")).generation_config.to_dict()
    os.symlink(tmp_path / "pruned-blob", tmp_path / "m" / "generation_config.json")
    assert not is_regular_file(tmp_path / "m" / "generation_config.json")
    assert tessera.from_pretrained(str(tmp_path / "m")).generation_config.to_dict() == plain
