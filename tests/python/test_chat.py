"""Conversation templates (data files) and label masking with the LLaMA sentencepiece model:
only the answers are supervised, labels line up with the tokens, the prompt used for generation
is the training prefix, and the refusals (no answer, placeholders vs images, bad turns)."""
import dataclasses
import json

import pytest

from tessera import chat
from tessera.text import SentencePieceTokenizer

IMAGE = 32000


@pytest.fixture(scope="module")
def tok(shared_dir):
    return SentencePieceTokenizer(str(shared_dir / "assets" / "llama2c_tokenizer.model"))


CONV = [{"from": "human", "value": "<image>\nWhat is this item?"}, {"from": "gpt", "value": "A sneaker."},
        {"from": "human", "value": "Do you wear it on your feet?"}, {"from": "gpt", "value": "Yes."}]


# LLaVA's conversation.py: its `v1` is conv_vicuna_v1 (LLaVA-1.5's fine-tuning, `--version v1`),
# `llava_v1` is conv_llava_v1; both ADD_COLON_TWO with sep " " and sep2 "</s>".
LLAVA_SYSTEMS = {
    "v1": "A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "llava_v1": "A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions.",
}


def _llava_prompt(system, turns):
    """ADD_COLON_TWO as LLaVA's Conversation.get_prompt lays it out."""
    seps, text = [" ", "</s>"], system + " "
    for i, (role, message) in enumerate(turns):
        text += f"{role}: {message}{seps[i % 2]}"
    return text


@pytest.mark.parametrize("name", ["v1", "llava_v1"])
def test_shipped_templates_lay_out_llavas_conversations_of_that_name(name):
    """`v1` was conv_llava_v1's text ("human") under LLaVA's name for conv_vicuna_v1 ("user"): a
    model fine-tuned from LLaVA-1.5 with `template: v1` saw a system prompt it was never trained on."""
    t = chat.load_template(name)
    conv = [{"from": "human", "value": "<image>\nWhat is this item?"}, {"from": "gpt", "value": "A sneaker."},
            {"from": "human", "value": "Is it yes?"}, {"from": "gpt", "value": "No."}]
    ours = t.system + t.system_suffix
    for turn in conv:
        if turn["from"] == "human":
            ours += t.user_prefix + turn["value"] + t.user_suffix
        else:
            ours += t.assistant_prefix + " " + turn["value"] + t.assistant_suffix + "</s>"
    assert ours == _llava_prompt(LLAVA_SYSTEMS[name], [("USER" if c["from"] == "human" else "ASSISTANT", c["value"])
                                                       for c in conv])


def test_a_runs_template_is_read_from_its_recipe(tmp_path):
    assert chat.run_template(str(tmp_path)) is None
    (tmp_path / "recipe.json").write_text(json.dumps({"task": "llava", "data": {"template": "llava_v1"}}))
    assert chat.run_template(str(tmp_path)) == "llava_v1"
    (tmp_path / "recipe.json").write_text(json.dumps({"task": "sugar", "data": {}, "eval": {"template": "plain"}}))
    assert chat.run_template(str(tmp_path)) == "plain"
    (tmp_path / "recipe.json").write_text(json.dumps([1, 2]))
    assert chat.run_template(str(tmp_path)) is None


def test_only_answers_and_their_eos_are_supervised(tok):
    ids, labels = chat.render(chat.load_template("v1"), CONV, tok, IMAGE, image_tokens=3, images=1)
    assert len(ids) == len(labels) and ids[0] == tok.bos_id and ids.count(IMAGE) == 3
    learned = [i for i, label in zip(ids, labels) if label != -100]
    assert all(label in (-100, i) for i, label in zip(ids, labels))
    want = tok.encode("A sneaker.", add_bos=False) + [tok.eos_id] + tok.encode("Yes.", add_bos=False) + [tok.eos_id]
    assert learned == want
    assert tok.decode([i for i in ids if i != IMAGE]).startswith("A chat between a curious user")


@pytest.mark.parametrize("question", ["<image>", "<image>\nGive a brief description of the image.",
                                      "Render a clear and concise summary of the photo.\n<image>"])
def test_plain_is_llavas_preprocess_plain(tok, shared_dir, question):
    """LLaVA's preprocess_plain, written from its definition: the question becomes "<image>", the
    prompt is "<image>" + caption + "\n" through tokenizer_image_token (bos, the image, the rest
    encoded alone), and everything up to the caption is masked. No eos is learned."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(shared_dir / "assets" / "llama2c_tokenizer.model"))
    caption = "a grey ankle boot with a low heel"
    conv = [{"from": "human", "value": question}, {"from": "gpt", "value": caption}]
    ids, labels = chat.render(chat.load_template("plain"), conv, tok, IMAGE, image_tokens=4, images=1)
    target = sp.encode(caption + "\n")
    assert ids == [sp.bos_id()] + [IMAGE] * 4 + target
    assert labels == [chat.IGNORE] * 5 + target


def test_plain_eos_is_plain_with_the_caption_ended_by_eos(tok):
    """BLIP-2's caption stage for an LM that stops at eos: bos, the image, the caption and eos;
    the caption and eos learned, the question's words dropped as in plain."""
    conv = [{"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": "A photo of a coat."}]
    template = chat.load_template("plain_eos")
    ids, labels = chat.render(template, conv, tok, IMAGE, image_tokens=2, images=1)
    target = tok.encode("A photo of a coat.", add_bos=False) + [tok.eos_id]
    assert ids == [tok.bos_id, IMAGE, IMAGE] + target
    assert labels == [chat.IGNORE] * 3 + target
    assert chat.stop_ids(template, tok) == [tok.eos_id]
    assert chat.prompt(template, conv[:1], tok, IMAGE, 2, images=1) == [tok.bos_id, IMAGE, IMAGE]


def test_answers_of_a_template_without_eos_stop_at_its_suffix(tok):
    plain, v1 = chat.load_template("plain"), chat.load_template("v1")
    newline = tok.encode("x\n", add_bos=False)[-1]
    assert tok.decode([newline]) == "\n"
    assert chat.stop_ids(plain, tok) == [tok.eos_id, newline]
    assert chat.stop_ids(v1, tok) == [tok.eos_id]
    assert chat.cut_answer(plain, "a sneaker\na shirt") == "a sneaker"
    assert chat.cut_answer(plain, "a sneaker.\n") == "a sneaker."
    assert chat.cut_answer(v1, "a sneaker\na shirt") == "a sneaker\na shirt"
    # llava-hf's layout (answers end with a space, no eos): cut where the next turn begins, not at
    # the first space (an answer's first word before)
    spaced = dataclasses.replace(v1, system="", user_prefix="USER: ", user_suffix=" ", assistant_prefix="ASSISTANT:",
                                 assistant_suffix=" ", add_eos_after_assistant=False)
    assert chat.cut_answer(spaced, "A red sneaker on the table. USER: and now?") == "A red sneaker on the table."
    assert chat.cut_answer(spaced, "A red sneaker. ") == "A red sneaker."
    # The prompt to caption from is the training prefix: bos and the image.
    assert chat.prompt(plain, [{"from": "human", "value": "<image>"}], tok, IMAGE, 2, images=1) == \
        [tok.bos_id, IMAGE, IMAGE]


def test_generation_prompt_is_the_training_prefix(tok):
    template = chat.load_template("v1")
    train_ids, labels = chat.render(template, CONV[:2], tok, IMAGE, image_tokens=3, images=1)
    first_answer = labels.index(next(label for label in labels if label != -100))
    assert chat.prompt(template, CONV[:1], tok, IMAGE, image_tokens=3, images=1) == train_ids[:first_answer]


@pytest.mark.parametrize("conv, images, message", [
    ([{"from": "human", "value": "<image>\nhi"}], 1, "no supervised token"),
    ([{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": " "}], 1, "turn 1: empty answer"),
    (CONV, 2, r"1 image placeholder\(s\) '<image>' in the text but 2 image\(s\)"),
    ([{"from": "robot", "value": "x"}], 0, "turn 0 needs 'from'"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "<image>"}], 1, "answer may not hold an image"),
])
def test_bad_samples_are_refused_by_name(tok, conv, images, message):
    with pytest.raises(ValueError, match=message):
        chat.render(chat.load_template("v1"), conv, tok, IMAGE, image_tokens=3, images=images, where="train.json[7]")


def test_unknown_or_malformed_template_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown conversation template 'vicuna_v9' \\(shipped: llava_v1, plain, plain_eos, v1"):
        chat.load_template("vicuna_v9")
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"name": "t", "exec": "import os"}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) exec"):
        chat.load_template(str(bad))


@pytest.mark.parametrize("missing", ["bos", "eos"])
def test_a_tokenizer_without_bos_or_eos_is_refused_by_name(tmp_path, missing):
    """A SentencePiece model trained without one says id -1, which was written into ids and labels
    (chat then failed on token id -1); interleaved data renders through the same check."""
    from tessera.text import train_sentencepiece

    texts = [f"sample line {i} with words about a red shoe and a cat" for i in range(300)]
    tok = train_sentencepiece(texts, tmp_path / "m.model", vocab_size=300, **{f"{missing}_id": -1})
    with pytest.raises(ValueError, match=rf"train.json\[7\]: the tokenizer has no {missing} token \({missing}_id -1\)"):
        chat.render(chat.load_template("v1"), CONV[:2], tok, IMAGE, image_tokens=3, images=1, where="train.json[7]")


def test_v1_tokenizes_as_llava_with_a_whitespace_keeping_tokenizer(tmp_path):
    """LLaMA's SentencePiece keeps whitespace: the separators (" " after the system prompt and each
    question), tokenized alone, added a lone "▁" before every USER and ASSISTANT. LLaVA tokenizes
    the conversation as one string (split at <image> and </s>); the ids now equal that."""
    import random

    import sentencepiece as spm

    rng = random.Random(0)
    words = ("a chat between curious human and an artificial intelligence assistant the gives helpful detailed "
             "polite answers to questions what is this item t-shirt no yes USER ASSISTANT").split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice([".", "?", ":", ""])
             for _ in range(2000)] + ["USER: hi ASSISTANT: hello."] * 50
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "llama"),
                                   vocab_size=400, model_type="bpe", normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "llama.model"))
    tok = SentencePieceTokenizer(str(tmp_path / "llama.model"), special_tokens=["<image>"])
    image = tok.special_tokens["<image>"]
    t = chat.load_template("v1")
    conv = [{"from": "human", "value": "<image>\nWhat is this item?"}, {"from": "gpt", "value": "A t-shirt."},
            {"from": "human", "value": "Is it yes?"}, {"from": "gpt", "value": "No."}]
    text = (f"{t.system} USER: <image>\nWhat is this item? ASSISTANT: A t-shirt.</s>"
            f"USER: Is it yes? ASSISTANT: No.</s>")
    want = [1]  # LLaVA: bos, then each piece between <image> and </s> encoded alone
    for i, part in enumerate(text.split("<image>")):
        want += [image] * 2 if i else []
        for j, chunk in enumerate(part.split("</s>")):
            want += ([2] if j else []) + (sp.encode(chunk) if chunk else [])
    ids, labels = chat.render(t, conv, tok, image, 2, images=1)
    assert ids == want
    assert tok.decode([i for i, l in zip(ids, labels) if l != chat.IGNORE and i != 2]).split() == \
        ["A", "t-shirt.", "No."]


def _llava_preprocess_multimodal(conv):
    """LLaVA's preprocess_multimodal (mm_use_im_start_end off), written from its definition: a
    turn holding <image> has it removed, the rest stripped, and "<image>\\n" put in front."""
    out = []
    for turn in conv:
        value = turn["value"]
        if "<image>" in value:
            value = ("<image>\n" + value.replace("<image>", "").strip()).strip()
        out.append({**turn, "value": value})
    return out


@pytest.mark.parametrize("conv, message", [
    (CONV, r"takes one question and its answer .* got turns \['user', 'assistant', 'user', 'assistant'\]"),
    ([{"from": "human", "value": "Describe fashion."}, {"from": "gpt", "value": "Shoes."}], "no image placeholder"),
])
def test_plain_refuses_what_llava_asserts_against(tok, conv, message):
    """LLaVA's preprocess_plain asserts two turns and an image in the first: a second question was
    dropped without a word, a text-only sample trained on its answer alone."""
    images = sum(t["value"].count("<image>") for t in conv)
    with pytest.raises(ValueError, match=message):
        chat.render(chat.load_template("plain"), conv, tok, IMAGE, image_tokens=2, images=images)


def test_a_plain_prompt_with_words_says_they_are_dropped(tok):
    with pytest.warns(UserWarning, match="drops the question's words"):
        ids = chat.prompt(chat.load_template("plain"), [{"from": "human", "value": "<image>\nWhat is it?"}], tok,
                          IMAGE, 2, images=1)
    assert ids == [tok.bos_id, IMAGE, IMAGE]


def test_a_newline_merged_into_the_last_piece_ends_the_answer_too(tmp_path):
    """A tokenizer trained on captions that end in ".\n" learns that pair as one piece: the caption's
    last id is not the bare newline's, and generation must stop at the one the model learned."""
    import random

    from tessera.text import train_sentencepiece

    rng = random.Random(0)
    words = "a black cat white dog on the red mat small shirt blue shoe bag coat".split()
    texts = [" ".join(rng.choice(words) for _ in range(6)).capitalize() + ".\n" for _ in range(3000)]
    tok = train_sentencepiece(texts, str(tmp_path / "sp.model"), vocab_size=300)
    plain = chat.load_template("plain")
    image = tok.special_tokens["<image>"]
    _, labels = chat.render(plain, [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A black cat."}],
                            tok, image, 1, images=1)
    last = [i for i in labels if i != chat.IGNORE][-1]
    assert tok.decode([last]).endswith("\n") and tok.decode([last]) != "\n", "the tokenizer merged no newline"
    assert last in chat.stop_ids(plain, tok)
    assert chat.cut_answer(plain, tok.decode([i for i in labels if i != chat.IGNORE])) == "A black cat."


@pytest.mark.parametrize("name", ["v1", "llava_v1"])
@pytest.mark.parametrize("question", ["What is this item?\n<image>", "  <image>  What is this item? ",
                                      "What is <image> this item?", "<image>", "<image>\nWhat is this item?"])
def test_the_image_moves_to_the_start_of_its_turn_as_llava_does(tok, name, question):
    """LLaVA-1.5's data has <image> at the end of some questions; LLaVA trains every one of them
    with the image first. The shipped templates do the same; a template without image_first keeps
    the text as written."""
    template = chat.load_template(name)
    assert template.image_first
    conv = [{"from": "human", "value": question}, {"from": "gpt", "value": "A sneaker."}]
    as_written = dataclasses.replace(template, image_first=False)
    want = chat.render(as_written, _llava_preprocess_multimodal(conv), tok, IMAGE, image_tokens=2, images=1)
    assert chat.render(template, conv, tok, IMAGE, image_tokens=2, images=1) == want
    if not question.startswith("<image>"):
        assert chat.render(as_written, conv, tok, IMAGE, image_tokens=2, images=1) != want


def test_a_turn_with_two_images_keeps_their_order(tok):
    conv = [{"from": "human", "value": "Compare <image> with <image>."}, {"from": "gpt", "value": "Same."}]
    template = chat.load_template("v1")
    assert chat.render(template, conv, tok, IMAGE, 2, images=2) == \
        chat.render(dataclasses.replace(template, image_first=False), conv, tok, IMAGE, 2, images=2)
