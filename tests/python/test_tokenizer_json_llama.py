"""A LLaMA tokenizer folder as transformers 5 saves it: tokenizer.json and tokenizer_config.json, no
tokenizer.model, the added tokens in tokenizer.json alone. tessera reads it id for id as
transformers does (AutoTokenizer side by side): its BPE ranks, Metaspace's rule for a text that
starts with a space and for the text after an added token, the post-processor's bos, the added
tokens. A file whose BPE SentencePiece cannot reproduce, or a setting tessera does not follow, is
refused by name. Before, such a folder could not be read at all."""
import json
import pickle
import random
import shutil

import pytest

from tessera.text import SentencePieceTokenizer

transformers = pytest.importorskip("transformers")

TEXTS = ["Hello world!", "a  b", "  lead", "def f():\n    return 1\n", "ünïcödé  文字 テスト 🤗", "\u2581x",
         " ",
         "USER: <image>\nWhat is it? ASSISTANT: A shirt.</s>", "<image> first", "<s>[INST] hi [/INST]",
         "x <pad> y", "two<image><image>images", "tab\there 12345"]


def _texts():
    rng = random.Random(0)
    words = ["the", "Shirt", "  ", "\n", "<image>", "</s>", "über", "12", "x", "   code", "\t", "é"]
    return TEXTS + ["".join(rng.choice(words) + rng.choice(["", " "]) for _ in range(rng.randint(1, 12)))
                    for _ in range(150)]


@pytest.fixture(scope="module")
def llama2c_tokenizer_path(shared_dir):
    return shared_dir / "assets" / "llama2c_tokenizer.model"


@pytest.fixture(scope="module")
def saved(tmp_path_factory, llama2c_tokenizer_path):
    """transformers 5's save of LLaMA's tokenizer with LLaVA's <image> and llava-hf's <pad>."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(llama2c_tokenizer_path, src / "tokenizer.model")
    (src / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer",
                                                          "add_bos_token": True}))
    ref = transformers.AutoTokenizer.from_pretrained(str(src))
    ref.add_tokens(["<image>"], special_tokens=True)
    ref.add_special_tokens({"pad_token": "<pad>"})
    out = tmp_path_factory.mktemp("saved")
    ref.save_pretrained(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    return out


def variant(saved, tmp_path, config=None, edit=None):
    shutil.copytree(saved, tmp_path / "tok")
    path = tmp_path / "tok"
    for name, change in (("tokenizer_config.json", config), ("tokenizer.json", edit)):
        if change:
            data = json.loads((path / name).read_text())
            change(data) if callable(change) else data.update(change)
            (path / name).write_text(json.dumps(data))
    return path


def assert_same(path, texts=None, special=("<image>",)):
    ref = transformers.AutoTokenizer.from_pretrained(str(path))
    ours = SentencePieceTokenizer(path / "tokenizer.json", special_tokens=list(special))
    for text in texts or _texts():
        assert ours.encode(text) == ref(text)["input_ids"], text
    assert len(ours) == len(ref) and ours.pad_id == (-1 if ref.pad_token_id is None else ref.pad_token_id)
    return ours, ref


def test_a_folder_transformers_5_saved_reads_with_its_ids(saved):
    ours, ref = assert_same(saved)
    ids = ref("Hello  world, ünï")["input_ids"]
    assert ours.decode(ids[1:]) == ref.decode(ids, skip_special_tokens=True)
    again = pickle.loads(pickle.dumps(ours))
    assert again.encode(TEXTS[7]) == ours.encode(TEXTS[7])


@pytest.mark.parametrize("config", [{"legacy": True}, {"add_prefix_space": False}], ids=["legacy", "no-prefix"])
def test_the_llama_class_whitespace_settings(saved, tmp_path, config):
    assert_same(variant(saved, tmp_path, config))


def test_a_generic_class_reads_transformers_4_normalizer(saved, tmp_path):
    """PreTrainedTokenizerFast reads the file as written: transformers 4's Prepend and Replace."""
    def legacy_form(data):
        data["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        data["pre_tokenizer"] = None
    assert_same(variant(saved, tmp_path, {"tokenizer_class": "PreTrainedTokenizerFast"}, legacy_form))


def _swap_first_merges(data):
    merges = data["model"]["merges"]
    first = merges.pop(0)
    i = next(i for i in range(1, len(merges)) if "".join(merges[i]) == "".join(merges[i - 1]))
    merges.insert(i, first)  # another piece's merge between two that make one piece


def _drop_merge(data):
    data["model"]["merges"] = [m for m in data["model"]["merges"] if m != ["\u2581", "t"]]


@pytest.mark.parametrize("config, edit, message", [
    (None, _swap_first_merges, "are not consecutive"),
    (None, _drop_merge, "no merge of '\u2581' and 't' into '\u2581t'"),
    (None, lambda d: d["model"].update(byte_fallback=False, fuse_unk=False), "model.fuse_unk False"),
    (None, lambda d: d["model"].update(type="Unigram"), "model is not BPE"),
    ({"tokenizer_class": "GemmaTokenizer"}, None, "tokenizer_class 'GemmaTokenizer'"),
    (None, lambda d: d["post_processor"]["single"].pop(0), "post_processor adds no bos"),
    (None, lambda d: d["post_processor"]["single"].append({"SpecialToken": {"id": "</s>", "type_id": 0}}),
     "single template \\['<s>', 'A', '</s>'\\]"),
    ({"added_tokens_decoder": {"32000": {"content": "<img>", "special": True}}}, None,
     "added_tokens_decoder \\{32000: '<img>'\\} differs from .*tokenizer.json's added tokens "
     "\\{32000: '<image>', 32001: '<pad>'\\}"),
], ids=["merge-order", "missing-merge", "unk-unfused", "unigram", "class", "no-bos", "eos", "added-conflict"])
def test_what_sentencepiece_cannot_reproduce_is_refused_by_name(saved, tmp_path, config, edit, message):
    path = variant(saved, tmp_path, config, edit)
    with pytest.raises(ValueError, match=message):
        SentencePieceTokenizer(path / "tokenizer.json")


def test_a_folder_with_both_files_reads_tokenizer_model(saved, tmp_path, llama2c_tokenizer_path):
    """tokenizer.model wins (SentencePiece, as LLaMA was trained); tokenizer.json still gives the
    added tokens transformers 5 lists there alone, and its bos."""
    path = variant(saved, tmp_path)
    shutil.copy(llama2c_tokenizer_path, path / "tokenizer.model")
    ours = SentencePieceTokenizer(path / "tokenizer.model", special_tokens=["<image>"])
    ref = transformers.AutoTokenizer.from_pretrained(str(path))
    assert ours.piece_to_id("<pad>") == ours.pad_id == ref.pad_token_id == 32001
    # No runs of spaces (transformers 5's ranks differ there) and no text after a special token
    # (tessera reads a tokenizer.model in legacy mode, as LLaVA trained: data.md)
    for text in ["Hello world!", "ünïcödé 文字 テスト 🤗", "A shirt.</s>", "tab\there 12345<pad>", "<image>"]:
        assert ours.encode(text) == ref(text)["input_ids"], text


def test_a_folder_names_its_tokenizer(saved, tmp_path):
    """data.tokenizer may name the folder: its tokenizer.model, else its tokenizer.json."""
    assert SentencePieceTokenizer(saved).model_path == saved / "tokenizer.json"
    assert SentencePieceTokenizer(saved).encode(TEXTS[7]) == SentencePieceTokenizer(saved / "tokenizer.json").encode(
        TEXTS[7])
    with pytest.raises(FileNotFoundError, match="nor tokenizer.json"):
        SentencePieceTokenizer(tmp_path)


# ---- a hostile review's findings ----------------------------------------------------------------
def test_user_defined_symbols_are_cut_out_as_transformers_does(tmp_path):
    """An added token inside the vocabulary (spm's user_defined_symbols) is cut out before
    Metaspace puts its "▁": "[X]" was <s> ▁ [X] in tessera, <s> [X] in transformers."""
    from tessera.text import train_sentencepiece

    lines = [f"A {c} shirt with [X] and <tool> {i}" for i, c in enumerate(["red", "blue", "grün"] * 20)]
    train_sentencepiece(lines, tmp_path / "src" / "tokenizer.model", vocab_size=320, special_tokens=["<tool>", "[X]"])
    (tmp_path / "src" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer",
                                                                         "add_bos_token": True}))
    transformers.AutoTokenizer.from_pretrained(str(tmp_path / "src")).save_pretrained(str(tmp_path / "saved"))
    assert_same(tmp_path / "saved", ["[X]", "<tool>x", "a[X]b", " [X] red", "[X]<tool>", "shirt [X]"], special=())


def test_decode_keeps_the_space_after_an_added_token(saved):
    ours, ref = assert_same(saved, TEXTS[:1])
    for text in ["USER: <image> What?", "x <pad> y", "<image>\nA shirt", " lead  spaces <image>"]:
        ids = ref(text)["input_ids"][1:]
        assert ours.decode(ids) == ref.decode(ids), text


@pytest.mark.parametrize("config, edit, message", [
    (None, lambda d: d.update(post_processor="x"), "post_processor 'x' is not a post-processor object"),
    (None, lambda d: d.update(post_processor={"type": "Sequence", "processors": None}), "is not a post-processor"),
    (None, lambda d: d["post_processor"]["single"].__setitem__(0, {"SpecialToken": 5}),
     "single template \\[\"{'SpecialToken': 5}\", 'A'\\]"),
    ({"legacy": "false"}, None, "legacy must be true, false or null, got 'false'"),
    (None, lambda d: d["added_tokens"].append({"id": -5, "content": "<q>", "special": True}), "token id >= 0"),
    (None, lambda d: d["added_tokens"].append({"id": 5, "content": "<zz>", "special": True}),
     "added token '<zz>' takes id 5, the vocabulary's '<0x02>'"),
    ({"added_tokens_decoder": {"32002": {"content": "<x>", "special": True}}}, None, "differs from"),
    (None, lambda d: d["added_tokens"].append({"id": 32002, "content": " ", "special": True}),
     "added_tokens\\[5\\] is blank"),
    ({"added_tokens_decoder": {"32002": None}}, None, "tokenizer_config.json: added_tokens_decoder\\[32002\\] is blank"),
    ({"bos_token": 5}, None, "tokenizer_config.json: bos_token must be a token string"),
    # One id twice kept the last entry, where transformers matches the first (silently other ids).
    (None, lambda d: d["added_tokens"].extend([{"id": 32002, "content": "<x>", "special": True},
                                               {"id": 32002, "content": "<y>", "special": True}]),
     "added_tokens\\[6\\] gives id 32002 again \\(added_tokens\\[5\\]\\)"),
    # transformers raises a TypeError; tessera read the string as no tokens.
    ({"extra_special_tokens": "<x>"}, None, "extra_special_tokens must be a list of tokens"),
    # SentencePiece's own message named tessera's converted file, not this one.
    (None, lambda d: d["model"]["vocab"].update({"": 32000}), "tokenizer.json: model.vocab\\[''\\] \\(id 32000\\)"),
], ids=["post-str", "post-null", "template-item", "legacy-str", "negative-id", "inside-mismatch", "config-extra",
        "blank", "null-entry", "bos-int", "id-twice", "extra-str", "empty-piece"])
def test_malformed_files_are_refused_naming_file_and_key(saved, tmp_path, config, edit, message):
    path = variant(saved, tmp_path, config, edit)
    with pytest.raises(ValueError, match=message):
        SentencePieceTokenizer(path / "tokenizer.json")


def test_a_tokenizer_json_saved_again_keeps_transformers_ids(saved, tmp_path):
    """save_pretrained of a tokenizer.json tokenizer with a token added since: the token goes into
    the file's added tokens too (a config listing other tokens than the file is refused)."""
    ours = SentencePieceTokenizer(saved / "tokenizer.json", special_tokens=["<image>", "<new>"])
    ours.save_pretrained(tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    assert_same(tmp_path / "again", TEXTS + ["a <new> b", "<new>"], special=("<image>", "<new>"))


@pytest.mark.parametrize("config, new", [
    ({"extra_special_tokens": ["<x>", "<image>", "<y>"]}, ["<x>", "<y>"]),
    ({"extra_special_tokens": ["<x>"], "additional_special_tokens": ["<y>"]}, ["<x>"]),  # the older key is hidden
    (lambda c: [c.pop("extra_special_tokens", None), c.update(additional_special_tokens=["<y>"])], ["<y>"]),
], ids=["extra", "both", "additional-alone"])
def test_special_tokens_the_config_alone_names_take_the_next_ids(saved, tmp_path, config, new):
    """transformers adds a special token named only in tokenizer_config.json after the others
    (extra_special_tokens, or without that key additional_special_tokens); tessera left it out, and
    "<x>" encoded as its bytes."""
    path = variant(saved, tmp_path, config)
    ours, ref = assert_same(path, TEXTS + ["a <x> b<y>c", "<y><x>"])
    assert ref.convert_tokens_to_ids(new) == list(range(32002, 32002 + len(new))) and len(ours) == len(ref)
