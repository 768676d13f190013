"""Embedded instruction data and its parts: OpenCV drawing and PNG round trips, SentencePiece
training and special tokens (LLaVA's <image> on llama2.c's tokenizer, as transformers numbers
added tokens), deterministic generation, held-out images disjoint from training, LoRA models
saved merged with their PEFT adapter, and `tessera chat` streaming an answer."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

import tessera
from tessera import _C
from tessera.data import decode_image, instruct
from tessera.text import SentencePieceTokenizer, train_sentencepiece

FMNIST = "/usr/share/datasets/fashion-mnist"
needs_opencv = pytest.mark.skipif(not _C.data.drawing_available(), reason="built without OpenCV")


@needs_opencv
def test_shapes_are_drawn_where_asked_and_png_round_trips():
    img = _C.data.draw_shapes(28, 28, [("square", (10, 200, 30), 7, 7, 4), ("circle", (200, 0, 0), 20, 20, 5),
                                       ("triangle", (0, 0, 250), 7, 21, 5)], (0, 0, 0))
    assert img.shape == (28, 28, 3) and img.dtype == torch.uint8
    assert img[7, 7].tolist() == [10, 200, 30] and img[3, 3].tolist() == [10, 200, 30]  # square's corner
    assert img[2, 2].tolist() == [0, 0, 0] and img[20, 20].tolist() == [200, 0, 0]
    assert img[21, 7].tolist() == [0, 0, 250] and img[0, 27].tolist() == [0, 0, 0]
    # Exact pixel area of the square: side 2r + 1.
    assert int((img == torch.tensor([10, 200, 30], dtype=torch.uint8)).all(-1).sum()) == 81
    before = img.clone()
    assert torch.equal(decode_image(_C.data.encode_png(img)), img) and torch.equal(img, before)
    gray = torch.arange(64, dtype=torch.uint8).view(8, 8)
    assert torch.equal(decode_image(_C.data.encode_png(gray))[..., 0], gray)
    with pytest.raises(RuntimeError, match="encode_png: expected a uint8"):
        _C.data.encode_png(gray.float())
    with pytest.raises(RuntimeError, match="height and width must be positive"):
        _C.data.draw_shapes(1 << 40, 1 << 40, [])
    with pytest.raises(RuntimeError, match="shape 0 has unknown kind 'star'"):
        _C.data.draw_shapes(8, 8, [("star", (1, 2, 3), 1, 1, 1)])
    with pytest.raises(RuntimeError, match="shape 0 .circle. needs size > 0"):
        _C.data.draw_shapes(8, 8, [("circle", (1, 2, 3), 1, 1, 0)])


def test_special_tokens_on_llama2c_tokenizer_follow_llava(shared_dir):
    sp = SentencePieceTokenizer(shared_dir / "assets" / "llama2c_tokenizer.model", special_tokens=["<image>"])
    assert sp.special_tokens == {"<image>": 32000} and sp.vocab_size == 32001
    ids = sp.encode("<image>\nWhat is this?")
    # LLaVA's tokenizer_image_token: each chunk encoded alone, the image id between.
    plain = SentencePieceTokenizer(shared_dir / "assets" / "llama2c_tokenizer.model")
    assert ids == [1, 32000] + plain.encode("\nWhat is this?", add_bos=False)
    assert sp.decode(ids) == "<image>\nWhat is this?"
    assert sp.piece_to_id("<image>") == 32000 and sp.id_to_piece(32000) == "<image>"


def test_trained_tokenizer_keeps_image_as_one_piece(tmp_path):
    lines = ["a photo of a sneaker.", "What is this item? A bag.", "Is this something you wear on your feet? Yes."] * 50
    sp = train_sentencepiece(lines, tmp_path / "t.model", vocab_size=300, hard_vocab_limit=False)
    image = sp.special_tokens["<image>"]
    assert image < sp.vocab_size and sp.id_to_piece(image) == "<image>"
    ids = sp.encode("<image>\nWhat is this item?")
    assert ids.count(image) == 1 and sp.decode(ids).endswith("What is this item?")
    assert (sp.bos_id, sp.eos_id, sp.unk_id) == (1, 2, 0)
    again = train_sentencepiece(lines, tmp_path / "u.model", vocab_size=300, hard_vocab_limit=False)
    assert again.encode(lines[1]) == sp.encode(lines[1])  # deterministic
    with pytest.raises(RuntimeError, match="Vocabulary size too high"):
        train_sentencepiece(lines[:3], tmp_path / "v.model", vocab_size=5000)
    assert not (tmp_path / "v.model").exists()  # nothing half-written


@needs_opencv
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_generation_is_deterministic_and_held_out_is_disjoint(tmp_path):
    sizes = dict(fashion=20, scenes=8, heldout_fashion=6, heldout_scenes=4, vocab_size=500)
    a = instruct.generate(str(tmp_path / "a"), **sizes)
    instruct.generate(str(tmp_path / "b"), **sizes)

    def digest(root):
        h = hashlib.sha256()
        for dirpath, _, files in sorted(os.walk(root)):
            for f in sorted(files):
                h.update(f.encode() + open(os.path.join(dirpath, f), "rb").read())
        return h.hexdigest()

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert a["captions.json"] == 28 and not (tmp_path / "a.partial").exists()
    train = json.load(open(tmp_path / "a" / "instruct.json"))
    held = json.load(open(tmp_path / "a" / "heldout.json"))
    assert all("/test/" in s["image"] for s in held) and all("/train/" in s["image"] for s in train)

    def pixels(samples, kind):
        return {hashlib.sha256(decode_image(open(tmp_path / "a" / s["image"], "rb").read()).numpy().tobytes())
                .hexdigest() for s in samples if s["image"].startswith(f"images/{kind}/")}

    # Held out means never seen: no held-out scene is drawn identically for training.
    assert pixels(held, "scenes") and pixels(held, "scenes").isdisjoint(pixels(train, "scenes"))
    kinds = {s["kind"] for s in held}
    assert {"fashion_what", "fashion_feet", "scene_count"} <= kinds
    what = [s for s in held if s["kind"] == "fashion_what"]
    assert all(s["conversations"][0]["value"] == "<image>\nWhat is this item?" for s in what)
    # The LM's corpus: each training caption once more after what it names, nothing of held-out.
    captions = [s["conversations"][1]["value"] for s in json.load(open(tmp_path / "a" / "captions.json"))]
    lines = open(tmp_path / "a" / "text.txt").read().splitlines()
    echoes = [line for line in lines if not line[0].isupper()]
    assert len(echoes) == len(captions) == 28 and a["text_lines"] == len(lines)
    for caption, echo in zip(captions, echoes):
        subject, rest = echo.split(". ", 1)
        assert rest == caption and caption.endswith(f" {subject}.")  # "coat. A photo of a coat."
    # ensure() does not regenerate a matching set
    stamp = os.path.getmtime(tmp_path / "a" / "manifest.json")
    instruct.ensure(str(tmp_path / "a"), **sizes)
    assert os.path.getmtime(tmp_path / "a" / "manifest.json") == stamp


def test_lora_model_saves_merged_with_its_adapter(tmp_path):
    from tessera.lora import apply_lora, merge_lora

    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=32)
    m = tessera.LlamaForCausalLM(cfg)
    apply_lora(m, ["q_proj", "v_proj"], r=4, lora_alpha=8)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_()
    ids = torch.randint(64, (2, 7))
    ref = m(ids).logits
    m.save_pretrained(str(tmp_path / "a"))
    assert sorted(os.listdir(tmp_path / "a" / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    plain = tessera.from_pretrained(str(tmp_path / "a"))  # no LoRA keys: a plain model
    torch.testing.assert_close(plain(ids).logits, ref, atol=1e-5, rtol=0)
    merge_lora(m)  # already merged weights are not merged twice
    m.save_pretrained(str(tmp_path / "b"))
    torch.testing.assert_close(tessera.from_pretrained(str(tmp_path / "b"))(ids).logits, ref, atol=1e-5, rtol=0)


def _chat_model(tmp_path):
    """A small random LLaVA saved with a generated set's tokenizer: (model, config, tokenizer, data, image)."""
    data = tmp_path / "set"
    instruct.generate(str(data), fashion=8, scenes=4, heldout_fashion=2, heldout_scenes=2, vocab_size=500)
    tok = SentencePieceTokenizer(data / "tokenizer.model", special_tokens=["<image>"])
    config = dict(text_config=dict(vocab_size=512, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2),
                  vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=28, patch_size=7),
                  image_token_index=tok.special_tokens["<image>"], vision_feature_layer=-1)
    model = tessera.LlavaForConditionalGeneration(config)
    model.save_pretrained(str(tmp_path / "ckpt"))
    return model, config, tok, data, str(data / "images" / "fashion" / "test" / "00000.png")


def _chat(tmp_path, data, image, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "tessera.cli", "chat", str(tmp_path / "ckpt"), "--image", image,
                           "--tokenizer", str(data / "tokenizer.model"), "--max-new-tokens", "5", *args],
                          capture_output=True, input=stdin, timeout=120)


@needs_opencv
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_an_interactive_chat_survives_a_bad_question(tmp_path):
    """One bad line (not UTF-8, an extra <image>) ended the whole conversation; now it is named on
    stderr and the next question is answered."""
    _, _, _, data, image = _chat_model(tmp_path)
    run = _chat(tmp_path, data, image, stdin=b"What is this item?\nbad \xff bytes\nlook at <image> again\nAnd now?\n")
    assert run.returncode == 0, run.stderr
    err = run.stderr.decode()
    assert "question 2: not UTF-8 text" in err and "question 3: 2 image placeholder(s)" in err, err


@needs_opencv
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_an_interactive_chat_goes_on_past_a_full_context(tmp_path):
    """A conversation that filled the model's context ended the session (rc 2) and the questions
    after it were never read; it now starts a new conversation (the images again) from that question."""
    _, _, _, data, image = _chat_model(tmp_path)
    run = _chat(tmp_path, data, image, stdin=b"Is this something you wear on your feet? Tell me.\n" * 14)
    err = run.stderr.decode()
    assert run.returncode == 0, err
    assert "fills the model's context; a new one starts with this question" in err, err


@needs_opencv
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
def test_chat_streams_the_greedy_answer(tmp_path):
    model, config, tok, data, image = _chat_model(tmp_path)
    run = _chat(tmp_path, data, image, "-q", "What is this item?")
    run.stdout, run.stderr = run.stdout.decode(), run.stderr.decode()
    assert run.returncode == 0, run.stderr
    # The same answer through generate() and the v1 template.
    from tessera.chat import load_template, prompt
    from tessera.data import ImageTransform, clip_transform, read_image

    ids = prompt(load_template("v1"), [{"from": "human", "value": "<image>\nWhat is this item?"}], tok,
                 config["image_token_index"], model.config["image_seq_length"], images=1)
    px = ImageTransform(clip_transform(28, train=False))(read_image(image))[None]
    out = model.generate(torch.tensor([ids]), pixel_values=px, max_new_tokens=5, eos_token_id=tok.eos_id)[0, len(ids):]
    new = [t for t in out.tolist() if t < tok.vocab_size]
    if tok.eos_id in new:
        new = new[:new.index(tok.eos_id)]
    assert run.stdout.strip() == tok.decode(new).strip()
