"""A BERT tokenizer folder's other files, read as transformers 5 reads them (AutoTokenizer, side by
side): special_tokens_map.json and added_tokens.json as transformers < 4.34 saved them (LAVIS's
"[DEC]" bos), extra_special_tokens as named tokens, and tokenizer.json, which transformers reads
first: a folder transformers saved loads with equal ids (transformers 5 saves tokenizer.json without
vocab.txt); one whose tokenizer.json holds what the other files do not is refused by name. They
were skipped, and the same folder gave other ids."""
import json
import pickle

import pytest

import tessera

transformers = pytest.importorskip("transformers")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "[", "]", "dec", "new", "x", "##x"]
TEXTS = ["hello [DEC] world", "hello [NEW] world", "hello world", "x[NEW]x", "[MASK] hello"]


def special(content, **flags):
    return {"content": content, "special": True, "normalized": False, "lstrip": False, "rstrip": False,
            "single_word": False, **flags}


def folder(path, config=None, **files):
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                                            **(config or {})}))
    for name, value in files.items():
        (path / f"{name}.json").write_text(json.dumps(value))
    return path


def assert_same(path):
    ref = transformers.AutoTokenizer.from_pretrained(str(path))
    ours = tessera.BertTokenizer.from_pretrained(path)
    for text in TEXTS:
        assert ours.encode(text) == ref(text)["input_ids"], text
    assert len(ours) == len(ref)
    for role in ("bos_token", "cls_token", "sep_token", "pad_token", "mask_token"):
        assert getattr(ours, role) == getattr(ref, role), role
    return ours, ref


@pytest.mark.parametrize("config, files", [
    (None, {"special_tokens_map": {"bos_token": "[DEC]", "cls_token": "[CLS]", "sep_token": "[SEP]"},
            "added_tokens": {"[DEC]": 13}}),
    (None, {"special_tokens_map": {"cls_token": "[MASK]"}}),
    ({"extra_special_tokens": {"image_token": "[NEW]"}}, {}),
])
def test_the_older_files_and_named_extra_tokens_give_transformers_ids(tmp_path, config, files):
    assert_same(folder(tmp_path / "tok", config, **files))


@pytest.mark.parametrize("lower", [True, False])
def test_a_folder_transformers_saved_loads_with_equal_ids(tmp_path, lower):
    ref = transformers.AutoTokenizer.from_pretrained(str(folder(tmp_path / "plain", {"do_lower_case": lower})))
    ref.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[NEW]"]})
    ref.save_pretrained(str(tmp_path / "saved"))
    # transformers 5 writes tokenizer.json and no vocab.txt (4 wrote both): its WordPiece vocabulary is read
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    ours, _ = assert_same(tmp_path / "saved")
    assert ours.bos_token == "[DEC]" and ours.do_lower_case is lower
    assert pickle.loads(pickle.dumps(ours)).encode("Hello [NEW] x") == ours.encode("Hello [NEW] x")
    (tmp_path / "saved" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")  # both, as transformers 4 saved
    assert_same(tmp_path / "saved")


PADDING = {"direction": "Left", "pad_id": 0, "pad_token": "[PAD]", "pad_type_id": 0, "strategy": "BatchLongest",
           "pad_to_multiple_of": None}


@pytest.mark.parametrize("edit, vocab_txt, message", [
    (lambda d: d["model"].update(type="BPE"), False, "model.type is \"BPE\", not WordPiece"),
    (lambda d: d["model"]["vocab"].update(hello=99), False,
     "model.vocab\\[\"hello\"\\] is 99; ids run from 0 to 12 without gaps"),
    (None, False, "neither vocab.txt nor tokenizer.json"),
    (lambda d: d["added_tokens"].append({"id": 13, **special("[NEW]")}), True,
     "tokenizer.json: added token '\\[NEW\\]' \\(id 13\\) is not one tessera read"),
    (lambda d: d["model"]["vocab"].update(hello=6, world=5), True,
     "tokenizer.json: 'hello' has id 6 there and 5 in vocab.txt"),
    (lambda d: d.update(padding=PADDING), True,
     "tokenizer.json: padding direction 'Left' differs from padding_side 'right'"),
], ids=["bpe", "gap", "none", "added", "vocab", "padding"])
def test_a_tokenizer_json_that_is_no_bert_vocabulary_or_holds_more_is_refused(tmp_path, edit, vocab_txt, message):
    """Alone (transformers 5's save), or beside a vocab.txt it must agree with."""
    plain = folder(tmp_path / "plain")
    data = json.loads(transformers.AutoTokenizer.from_pretrained(str(plain)).backend_tokenizer.to_str())
    if not vocab_txt:
        (plain / "vocab.txt").unlink()
    if edit is not None:
        edit(data)
        (plain / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        tessera.BertTokenizer.from_pretrained(plain)


@pytest.mark.parametrize("flags, message", [({"single_word": True}, "single_word true"),
                                            ({"normalized": True}, "normalized true")])
def test_added_token_flags_that_change_ids_are_refused(tmp_path, flags, message):
    path = folder(tmp_path / "tok", {"added_tokens_decoder": {"13": special("[NEW]", **flags)}})
    with pytest.raises(ValueError, match=f"added token '\\[NEW\\]' has {message}"):
        tessera.BertTokenizer.from_pretrained(path)


def test_a_role_the_two_files_give_differently_is_refused(tmp_path):
    path = folder(tmp_path / "tok", {"cls_token": "[CLS]"}, special_tokens_map={"cls_token": "[MASK]"})
    with pytest.raises(ValueError, match="special_tokens_map.json: cls_token '\\[MASK\\]' differs"):
        tessera.BertTokenizer.from_pretrained(path)


def test_a_tokenizer_json_alone_keeps_its_normalizer_flags(tmp_path):
    """No tokenizer_config.json: transformers reads tokenizer.json as written, its lowercase false
    included (tessera lower-cased by BertTokenizer's default)."""
    ref = transformers.AutoTokenizer.from_pretrained(str(folder(tmp_path / "plain", {"do_lower_case": False})))
    ref.save_pretrained(str(tmp_path / "saved"))
    (tmp_path / "saved" / "tokenizer_config.json").unlink()
    (tmp_path / "saved" / "tokenizer.json").write_text(json.dumps(
        {**json.loads((tmp_path / "saved" / "tokenizer.json").read_text()),
         "model": {**json.loads((tmp_path / "saved" / "tokenizer.json").read_text())["model"],
                   "vocab": {t: i for i, t in enumerate(VOCAB + ["Hello"])}}}))
    ours = tessera.BertTokenizer.from_pretrained(tmp_path / "saved")
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    assert ours.encode("Hello hello") == theirs("Hello hello")["input_ids"] == [2, 13, 5, 3]
    data = json.loads((tmp_path / "saved" / "tokenizer.json").read_text())
    data["added_tokens"].append("[NEW]")
    (tmp_path / "saved" / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="an added_tokens entry must be an object, got '\\[NEW\\]'"):
        tessera.BertTokenizer.from_pretrained(tmp_path / "saved")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["model"].update(max_input_chars_per_word=3), "model.max_input_chars_per_word 3"),
    (lambda d: d.update(pre_tokenizer={"type": "WhitespaceSplit"}), "pre_tokenizer .*WhitespaceSplit"),
    (lambda d: d.update(post_processor=None), "post_processor None"),
    (lambda d: d["model"].update(unk_token="x"), "model.unk_token 'x'"),
], ids=["word-length", "pre-tokenizer", "no-specials", "unk"])
def test_a_tokenizer_json_alone_whose_pipeline_is_not_berts_is_said(tmp_path, edit, message):
    """Without tokenizer_config.json, transformers' AutoTokenizer reads tokenizer.json alone as
    written (its word-length limit, pre-tokenizer, post-processor and unknown token change ids),
    while its BertTokenizer class, and AutoTokenizer in a BERT model's folder, build BERT's pipeline.
    tessera reads BERT's, as BertTokenizer: equal ids to it, and a warning naming the difference."""
    plain, text = folder(tmp_path / "plain"), "hello, worldx [zz] xxxx"
    bert = transformers.AutoTokenizer.from_pretrained(str(plain))
    data = json.loads(bert.backend_tokenizer.to_str())
    (plain / "tokenizer_config.json").unlink()
    (plain / "vocab.txt").unlink()
    edit(data)
    (plain / "tokenizer.json").write_text(json.dumps(data))
    assert transformers.AutoTokenizer.from_pretrained(str(plain))(text)["input_ids"] != bert(text)["input_ids"]
    with pytest.warns(UserWarning, match=f"tokenizer.json: {message}.*not BERT's. tessera reads BERT's pipeline"):
        ours = tessera.BertTokenizer.from_pretrained(plain)
    assert ours.encode(text) == transformers.BertTokenizer.from_pretrained(str(plain))(text)["input_ids"] \
        == bert(text)["input_ids"]
