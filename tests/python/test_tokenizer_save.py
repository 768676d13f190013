"""SentencePieceTokenizer.save_pretrained: a Hugging Face folder transformers 5 reads with tessera's
ids (AutoTokenizer side by side), runs of spaces, a text starting with a space and the text after
an added token included, where transformers 5's own conversion of a tokenizer.model differs from
SentencePiece; tessera reads the folder back, by its tokenizer.model or its tokenizer.json, with
the same ids. LLaMA's model and one trained by tessera (an added <image> piece) both."""
import json
import random
import shutil

import pytest

from tessera.text import SentencePieceTokenizer, train_sentencepiece

transformers = pytest.importorskip("transformers")

WORDS = ["the", "Shirt", "  ", "\n", "<image>", "</s>", "<s>", "über", "12", "x", "   code", "\t", "é", "USER:",
         "ASSISTANT:", "文字", "🤗", " ", "def f():\n    return 1", "\u2581", " \u2581 ", "<pad>", "<unk>"]
# Trained models: spm options beside train_sentencepiece's (unk 0, bos 1, eos 2, byte fallback, <image>).
TRAINED = {"trained": {}, "pad-piece": {"pad_id": 3}, "no-prefix": {"add_dummy_prefix": False,
                                                                    "remove_extra_whitespaces": False},
           "no-bos": {"bos_id": -1}, "no-bytes": {"byte_fallback": False}}


def texts(n=250):
    rng = random.Random(0)
    return ["a  b", "  lead", "x <image> y", "<image>\nWhat is it?", ""] + [
        "".join(rng.choice(WORDS) + rng.choice(["", " "]) for _ in range(rng.randint(1, 14))) for _ in range(n)]


@pytest.fixture(scope="module", params=["llama", *TRAINED])
def source(request, shared_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "llama":
        shutil.copy(shared_dir / "assets" / "llama2c_tokenizer.model", folder / "tokenizer.model")
        (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<unk>", "model_max_length": 4096,
                                                                  "add_bos_token": True}))
        return SentencePieceTokenizer(folder / "tokenizer.model", special_tokens=["<image>", "<pad>"])
    lines = [f"A {c} shirt  with\tcode {i}:\n    x = {i}" for i, c in enumerate(["red", "blue", "grün", "黒"] * 30)]
    vocab = 80 if request.param == "no-bytes" else 300
    return train_sentencepiece(lines, folder / "tokenizer.model", vocab_size=vocab, **TRAINED[request.param])


def test_transformers_reads_the_saved_folder_with_tessera_ids(source, tmp_path):
    source.save_pretrained(tmp_path / "saved")
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    for text in texts():
        ids = source.encode(text)
        assert ref(text)["input_ids"] == ids, text
        # decode compared on ordinary pieces: special ones follow SentencePiece's conventions (data.md)
        special = (source.bos_id, source.eos_id, source.unk_id, source.pad_id, *source.special_tokens.values())
        plain = [i for i in ids if i not in special]
        assert ref.decode(plain) == source.decode(plain), text
    assert len(ref) == len(source) and ref.pad_token_id == (source.pad_id if source.pad_id >= 0 else None)
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config.get("model_max_length", 4096) == 4096


@pytest.mark.parametrize("name", ["tokenizer.model", "tokenizer.json"])
def test_tessera_reads_its_saved_folder_back(source, tmp_path, name):
    source.save_pretrained(tmp_path / "saved")
    again = SentencePieceTokenizer(tmp_path / "saved" / name, special_tokens=list(source.special_tokens))
    assert again.special_tokens == source.special_tokens and again.pad_id == source.pad_id
    for text in texts(80):
        assert again.encode(text) == source.encode(text), text


def test_user_defined_pieces_the_tokenizer_does_not_cut_fall_back_with_a_warning(tmp_path):
    """SentencePiece matches a user-defined piece inside the text ("<sep>" after its "▁"); an
    added token in tokenizers is cut out first: no tokenizer.json can say that, so the save warns."""
    lines = [f"A {c} shirt <sep> {i}" for i, c in enumerate(["red", "blue"] * 30)]
    train_sentencepiece(lines, tmp_path / "tokenizer.model", vocab_size=300, special_tokens=["<sep>"])
    plain = SentencePieceTokenizer(tmp_path / "tokenizer.model")  # <sep> not cut
    with pytest.warns(UserWarning, match="user-defined pieces the tokenizer does not cut out"):
        plain.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / "tokenizer.json").exists()
    assert plain.user_defined == ["<sep>"]
