"""A LLaVA run's conversation template as the Jinja chat template its checkpoint carries
(chat_template.jinja): transformers' tokenizer, rendering a conversation with it and tokenizing
the prompt, gives the ids tessera's `render` gives (training samples and generation prompts),
for LLaVA's templates, for both whitespace rules a LLaMA tokenizer comes with (tokenizer.model,
and the tokenizer.json transformers 5 saves), and for transformers' block-list messages. Before,
a checkpoint had no chat template: apply_chat_template failed."""
import json
import os
import sys

import pytest

from tessera.chat import IMAGE_PLACEHOLDER, load_template, render
from tessera.chat_template import chat_template
from tessera.text import SentencePieceTokenizer
from tessera.train.llava_processor import save_chat_template

sys.path.insert(0, os.path.dirname(__file__))
from test_tokenizer_json_llama import llama2c_tokenizer_path, saved  # noqa: E402,F401  (fixtures)

transformers = pytest.importorskip("transformers")

IMG = IMAGE_PLACEHOLDER
CHATS = [  # (messages, add_generation_prompt)
    ([{"from": "human", "value": f"{IMG}\nWhat is it?"}], True),
    ([{"from": "human", "value": f"What is it?\n{IMG}"}], True),  # the image moves to the turn's start
    ([{"from": "human", "value": f"{IMG}\nWhat is it?"}, {"from": "gpt", "value": "A shirt, folded."},
      {"from": "human", "value": "And its  colour?"}], True),
    ([{"from": "human", "value": f"{IMG}\nWhat is it?"}, {"from": "gpt", "value": "A shirt."},
      {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Red\nand blue."}], False),
    ([{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Bye"}],
     True),
]
PLAIN_CHATS = [([{"from": "human", "value": f"{IMG}"}], True),
               ([{"from": "human", "value": f"Describe.\n{IMG}"}, {"from": "gpt", "value": "A shirt."}], False)]


def _messages(chat):
    """The conversation in transformers' roles."""
    return [{"role": {"human": "user", "gpt": "assistant"}[t["from"]], "content": t["value"]} for t in chat]


def _hf_ids(hf, messages, generation):
    prompt = hf.apply_chat_template(messages, add_generation_prompt=generation, tokenize=False)
    return hf(prompt)["input_ids"]  # the processor's two steps: render, then tokenize (bos added)


@pytest.fixture(params=["tokenizer.model", "tokenizer.json"])
def tokenizer(request, llama2c_tokenizer_path, saved):
    if request.param == "tokenizer.json":  # prepend_scheme "first": no "▁" after an added token
        return SentencePieceTokenizer(str(saved))
    return SentencePieceTokenizer(str(llama2c_tokenizer_path), special_tokens=["<image>"])


# Templates of other layouts (JSON files): answers without eos, newline and ChatML-like
# separators, no image moved.
CUSTOM = {
    "no_eos": {"add_eos_after_assistant": False, "assistant_suffix": "."},
    "hash_nl": {"system": "Sys.", "system_suffix": "\n\n", "user_prefix": "### Human:\n", "user_suffix": "\n",
                "assistant_prefix": "### Assistant:\n"},
    "chatml": {"system": "<|im_start|>system\nYou are helpful.", "system_suffix": "<|im_end|>\n",
               "user_prefix": "<|im_start|>user\n", "user_suffix": "<|im_end|>\n",
               "assistant_prefix": "<|im_start|>assistant\n", "assistant_suffix": "<|im_end|>"},
    "no_image_first": {"image_first": False},
}
MORE_CHATS = [
    ([{"from": "human", "value": f"Compare {IMG} and {IMG}{IMG}"}, {"from": "gpt", "value": " Both."},
      {"from": "human", "value": f"Image 1: {IMG} Image 2: {IMG}"}], True),
    ([{"from": "human", "value": f"{IMG}\nQ"}, {"from": "gpt", "value": "1984"}, {"from": "human", "value": "\tok"},
      {"from": "gpt", "value": "日本 🙂\n"}], False),
]


def _template(name, tmp_path):
    """A shipped template's name, or a JSON file of v1 with CUSTOM's changes."""
    if name not in CUSTOM:
        return name
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**load_template("v1").__dict__, "name": name, **CUSTOM[name]}))
    return str(path)


@pytest.mark.parametrize("name", ["v1", "llava_v1", "plain", "plain_eos", *CUSTOM])
def test_transformers_renders_and_tokenizes_the_run_template_to_tessera_ids(tokenizer, tmp_path, name):
    name = _template(name, tmp_path)
    template = load_template(name)
    image = tokenizer.special_tokens["<image>"]
    tokenizer.save_pretrained(tmp_path)
    save_chat_template(str(tmp_path), tokenizer, name)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for chat, generation in (CHATS + MORE_CHATS if template.user_text else PLAIN_CHATS):
        want, _ = render(template, chat, tokenizer, image, 1, images=sum(t["value"].count(IMG) for t in chat),
                         add_generation_prompt=generation)
        assert _hf_ids(hf, _messages(chat), generation) == want, (name, chat)


def test_block_list_messages_render_as_their_string(tokenizer, tmp_path):
    """transformers' message form: content blocks in order, an image block standing for <image>."""
    tokenizer.save_pretrained(tmp_path)
    save_chat_template(str(tmp_path), tokenizer, "v1")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    blocks = [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, {"type": "image"}]},
              {"role": "assistant", "content": [{"type": "text", "text": "A shirt."}]},
              {"role": "user", "content": [{"type": "text", "text": "Colour?"}, {"type": "text", "text": "Say it."}]}]
    strings = [{"role": "user", "content": f"What is it?{IMG}"}, {"role": "assistant", "content": "A shirt."},
               {"role": "user", "content": "Colour? Say it."}]
    assert _hf_ids(hf, blocks, True) == _hf_ids(hf, strings, True)
    with pytest.raises(Exception, match="takes user and assistant turns"):
        hf.apply_chat_template([{"role": "system", "content": "Be brief."}, *strings], tokenize=False)


def test_a_template_no_spelling_reproduces_is_left_out_and_said(tokenizer, tmp_path):
    """An assistant prefix that ends with a space: tessera tokenizes it apart from the answer
    ("▁" then "▁1984"), a string tokenized at once merges the spaces ("▁▁" then "1984") for some
    answers and not others, so no spelling gives tessera's ids; no template is written, and a
    stale one (a copied folder's) is removed."""
    path = tmp_path / "prefix_space.json"
    path.write_text(json.dumps({**load_template("v1").__dict__, "name": "prefix_space",
                                "assistant_prefix": "ASSISTANT: "}))
    assert chat_template(load_template(str(path)), tokenizer, tokenizer.special_tokens["<image>"]) is None
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "chat_template.jinja").write_text("stale")
    with pytest.warns(UserWarning, match="no Jinja chat template gives the ids"):
        save_chat_template(str(tmp_path / "out"), tokenizer, str(path))
    assert not (tmp_path / "out" / "chat_template.jinja").exists()


def test_template_text_outside_the_basic_plane_is_kept(tokenizer, tmp_path):
    """An emoji in a template's system prompt: an ASCII-escaped literal reached Jinja as two lone
    surrogates, and the writer failed at every checkpoint."""
    path = tmp_path / "emoji.json"
    path.write_text(json.dumps({**load_template("v1").__dict__, "name": "emoji", "system": "Be kind 🙂."}))
    tokenizer.save_pretrained(tmp_path)
    save_chat_template(str(tmp_path), tokenizer, str(path))
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    chat = [{"from": "human", "value": f"{IMG}\nHi"}]
    want, _ = render(load_template(str(path)), chat, tokenizer, tokenizer.special_tokens["<image>"], 1, images=1,
                     add_generation_prompt=True)
    assert _hf_ids(hf, _messages(chat), True) == want
