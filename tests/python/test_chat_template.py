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


@pytest.mark.parametrize("name", ["v1", "llava_v1", "plain", "plain_eos"])
def test_transformers_renders_and_tokenizes_the_run_template_to_tessera_ids(tokenizer, tmp_path, name):
    template = load_template(name)
    image = tokenizer.special_tokens["<image>"]
    tokenizer.save_pretrained(tmp_path)
    save_chat_template(str(tmp_path), tokenizer, name)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for chat, generation in (CHATS if template.user_text else PLAIN_CHATS):
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
    """Answers without eos before another turn: tessera tokenizes each answer apart from the next
    question, which a rendered string tokenized at once cannot follow; no template is written,
    and a stale one (a copied folder's) is removed."""
    spec = {**load_template("v1").__dict__, "name": "no_eos", "add_eos_after_assistant": False,
            "assistant_suffix": "."}
    path = tmp_path / "no_eos.json"
    path.write_text(json.dumps(spec))
    assert chat_template(load_template(str(path)), tokenizer, tokenizer.special_tokens["<image>"]) is None
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "chat_template.jinja").write_text("stale")
    with pytest.warns(UserWarning, match="no Jinja chat template gives the ids"):
        save_chat_template(str(tmp_path / "out"), tokenizer, str(path))
    assert not (tmp_path / "out" / "chat_template.jinja").exists()
