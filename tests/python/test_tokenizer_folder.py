"""A SentencePiece model's folder, read as transformers 5 reads it (AutoTokenizer, side by side):
the model's bos / eos / unk written in text are those tokens (LLaVA's v1 separator "</s>" is
text), the tokenizer_config.json's added tokens keep their ids and its pad token gives pad_id, and
a setting tessera's encoding does not follow is refused by key. Before, the file was never read
and "</s>" trained as the characters '<', '/s', '>'. (A space right after a special token is one
place where transformers 5's converted tokenizer and SentencePiece differ; tessera is
SentencePiece's, as LLaVA's slow tokenizer: the texts here have none.)"""
import json
import os
import shutil

import pytest

import tessera

transformers = pytest.importorskip("transformers")
MODEL = "/work/shared/assets/llama2c_tokenizer.model"
pytestmark = pytest.mark.skipif(not os.path.isfile(MODEL), reason="the LLaMA tokenizer asset is not here")
TEXTS = ["Hello world", "Hello.</s>", "<s>Hi", "</s>USER: hi", "<image>\nWhat is it?", "x<image>y", "a\n\nb",
         "héllo 日本 ☃", "<pad>a", "an <unk>word", "a<x>b <y>c", "USER: <image>\nWhat is this? ASSISTANT: A shirt.</s>"]


def token(content, **flags):
    return {"content": content, "special": True, "normalized": False, "lstrip": False, "rstrip": False,
            "single_word": False, **flags}


def folder(tmp_path, **changes):
    """A LLaVA-1.5-like folder: legacy, bos, <image> = 32000."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODEL, tmp_path / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False, "legacy": True, "pad_token": None,
              "added_tokens_decoder": {"0": token("<unk>"), "1": token("<s>"), "2": token("</s>"),
                                       "32000": token("<image>")}}
    for key, value in changes.items():
        if key == "added":
            config["added_tokens_decoder"].update(value)
        else:
            config[key] = value
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("changes", [{}, {"added": {"32001": token("<pad>")}, "pad_token": "<pad>"},
                                     {"pad_token": "<unk>"},
                                     {"additional_special_tokens": ["<x>", "<image>"]},
                                     {"additional_special_tokens": ["<x>"], "extra_special_tokens": ["<y>"]}])
def test_ids_equal_transformers_on_the_same_folder(tmp_path, changes):
    path = folder(tmp_path / "tok", **changes)
    ref = transformers.AutoTokenizer.from_pretrained(str(path))
    ours = tessera.SentencePieceTokenizer(path / "tokenizer.model", special_tokens=["<image>"])
    for text in TEXTS:
        assert ours.encode(text) == ref(text)["input_ids"], text
    assert (ours.bos_id, ours.eos_id, ours.unk_id) == (ref.bos_token_id, ref.eos_token_id, ref.unk_token_id)
    assert ours.pad_id == (ref.pad_token_id if ref.pad_token_id is not None else -1)
    assert len(ours) == len(ref)


def test_a_template_writing_the_eos_as_text_trains_the_eos(tmp_path):
    """LLaVA's conv_vicuna_v1 writes its second separator "</s>" into the prompt."""
    from tessera.chat import ConversationTemplate, render

    ours = tessera.SentencePieceTokenizer(MODEL, special_tokens=["<image>"])
    template = ConversationTemplate(name="vicuna_text", user_prefix="USER: ", assistant_prefix=" ASSISTANT: ",
                                    assistant_suffix="</s>", add_eos_after_assistant=False)
    ids, labels = render(template, [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "A cat."}], ours,
                         ours.special_tokens["<image>"], 4)
    assert ids[-1] == ours.eos_id and labels[-1] == ours.eos_id


@pytest.mark.parametrize("changes, message", [
    ({"add_bos_token": False}, "add_bos_token False"),
    ({"add_bos_token": None}, "add_bos_token None"),
    ({"video_token": {"__type": "AddedToken", "content": "<video>", "lstrip": True}}, "video_token '<video>' has lstrip"),
    ({"extra_special_tokens": [token("<x>", rstrip=True)]}, "extra token '<x>' has rstrip"),
    ({"add_eos_token": True}, "add_eos_token True"),
    ({"bos_token": "</s>"}, "bos_token '</s>' differs from the model's '<s>'"),
    ({"added": {"32000": token("<image>", rstrip=True)}}, "'<image>' \\(id 32000\\) has rstrip true"),
    ({"added": {"32002": token("<pad>")}}, "'<pad>' takes id 32002; .* would take 32001"),
    ({"added": {"5": token("<x>")}}, "'<x>' takes id 5, the model's piece"),
])
def test_settings_tessera_does_not_follow_are_refused_by_key(tmp_path, changes, message):
    path = folder(tmp_path / "tok", **changes)
    with pytest.raises(ValueError, match=f"tokenizer_config.json: .*{message}"):
        tessera.SentencePieceTokenizer(path / "tokenizer.model", special_tokens=["<image>"])


def test_legacy_false_is_said(tmp_path):
    path = folder(tmp_path / "tok", legacy=False)
    with pytest.warns(UserWarning, match="legacy false: tessera encodes as transformers' legacy mode"):
        tessera.SentencePieceTokenizer(path / "tokenizer.model")


def test_a_folder_as_older_transformers_saved_it(tmp_path):
    """transformers < 4.34 kept an added pad in added_tokens.json and named it in
    special_tokens_map.json; transformers 5 reads both ("<image>" took the pad's id)."""
    path = tmp_path / "tok"
    path.mkdir()
    shutil.copy(MODEL, path / "tokenizer.model")
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": True,
                                                            "add_bos_token": True, "pad_token": None}))
    (path / "added_tokens.json").write_text(json.dumps({"<pad>": 32000}))
    (path / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                              "unk_token": "<unk>", "pad_token": "<pad>"}))
    ref = transformers.AutoTokenizer.from_pretrained(str(path))
    ours = tessera.SentencePieceTokenizer(path / "tokenizer.model", special_tokens=["<image>"])
    assert ours.encode("a<pad>b") == ref("a<pad>b")["input_ids"] and ours.pad_id == ref.pad_token_id == 32000
    assert ours.special_tokens["<image>"] == 32001


def test_an_unset_add_bos_token_starts_with_bos_and_says_so(tmp_path):
    """transformers 5 reads a LlamaTokenizer config without add_bos_token as no bos; transformers 4,
    which LLaVA trained with, as bos. tessera keeps LLaVA's ids, and says that transformers 5's differ."""
    path = folder(tmp_path / "tok")
    config = json.loads((path / "tokenizer_config.json").read_text())
    del config["add_bos_token"]
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    theirs = transformers.AutoTokenizer.from_pretrained(str(path))("Hello")["input_ids"]
    with pytest.warns(UserWarning, match="no add_bos_token: tessera starts every text with bos, as transformers 4"):
        ours = tessera.SentencePieceTokenizer(path / "tokenizer.model").encode("Hello")
    assert theirs[0] != 1 and ours == [1] + theirs


@pytest.mark.parametrize("changes", [
    {"mask_token": "<mask>"}, {"pad_token": "<nothing>"},
    {"mask_token": "<mask>", "extra_special_tokens": ["<cls>"]},  # the mask first, as transformers numbers them
    {"cls_token": "<cls>", "sep_token": "<sep>", "mask_token": "<mask>"},
    {"video_token": "<video>", "extra_special_tokens": ["<cls>"]},  # a named token before the extra ones
    {"extra_special_tokens": ["ing", "<cls>"]},  # a piece is cut out of words, and takes no new id
    {"video_token": {"content": "<video>"}, "mask_token": "<mask>"},  # a dict without "__type" is no token
    {"video_token": "<sep>", "extra_special_tokens": {"video_token": "<video>"}},  # the dict's name wins
    {"video_token": "", "mask_token": "<mask>"},  # an empty name is no token
])
def test_tokens_the_config_alone_names_take_transformers_ids(tmp_path, changes):
    """transformers 5 adds the special tokens a config names without a number (roles past bos, eos
    and unk, named tokens, then the extra ones) after the numbered ones; tessera left them out, so
    "<mask>" encoded as bytes, and "<cls>" after it took the mask's id."""
    path = folder(tmp_path / "tok", **changes)
    ref = transformers.AutoTokenizer.from_pretrained(str(path))
    ours = tessera.SentencePieceTokenizer(path / "tokenizer.model", special_tokens=["<image>"])
    for text in ["a<mask>b<image>c<cls>d<sep>e<video>f<nothing>g", "singing\nwing", "<cls><mask>x"]:
        assert ours.encode(text) == ref(text)["input_ids"], text
    assert len(ours) == len(ref)
