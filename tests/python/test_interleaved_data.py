"""Interleaved data for Sugar: the generator is deterministic and idempotent, held-out images are
never seen in training, minimal pairs swap exactly the two colours, the sentences fit the
instruction data's tokenizer; each slice's token span is exact (text decodes back, an image's
span holds its image tokens and, in LLaVA's forward, its image features); slice-end points are
seeded and never empty; bad input is refused naming the file, line, id and segment."""
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import tessera
from tessera import _C
from tessera.chat import IGNORE
from tessera.data import ImageTransform, clip_transform, decode_image, instruct, interleaved
from tessera.text import SentencePieceTokenizer, train_sentencepiece
from tessera.train.conversation_data import load_pixels
from tessera.train.interleaved_data import (check_points, encode_interleaved, pair_samples, read_interleaved,
                                            read_pairs, sample_points)

FMNIST = "/usr/share/datasets/fashion-mnist"
pytestmark = [pytest.mark.skipif(not _C.data.drawing_available(), reason="built without OpenCV"),
              pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")]
SIZES = dict(sequences=30, scenes=10, heldout_sequences=8, pairs=6, single_modality=10)
IMAGE_TOKENS = 16  # a 28 px tower with 7 px patches, CLS dropped
CAPTION = re.compile(r"^A (\w+) (\w+) and a (\w+) (\w+)\.$")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("interleaved")
    interleaved.generate(str(root / "set"), **SIZES)
    instruct.generate(str(root / "instruct"), fashion=60, scenes=20, heldout_fashion=2, heldout_scenes=2,
                      vocab_size=600)
    return root / "set"


@pytest.fixture(scope="module")
def tok(data):
    return SentencePieceTokenizer(data.parent / "instruct" / "tokenizer.model", special_tokens=["<image>"])


def encode(path, tok, max_length=112, **kw):
    return encode_interleaved(read_interleaved(str(path)), tok, tok.special_tokens["<image>"], IMAGE_TOKENS,
                              max_length, **kw)


def lines(path):
    return [json.loads(line) for line in open(path)]


def digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f != "manifest.json":  # it holds the output folder's absolute root argument only
                h.update(os.path.relpath(os.path.join(dirpath, f), root).encode())
                h.update(open(os.path.join(dirpath, f), "rb").read())
    return h.hexdigest()


def pixels(root, path):
    return decode_image(open(os.path.join(root, path), "rb").read())


def test_generation_is_deterministic_idempotent_and_held_out_is_unseen(data, tmp_path):
    run = subprocess.run([sys.executable, "-m", "tessera.data.interleaved", str(tmp_path / "cli"), "--sequences", "30",
                          "--scenes", "10", "--heldout-sequences", "8", "--pairs", "6",
                          "--single-modality", "10"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert digest(tmp_path / "cli") == digest(data) and not (tmp_path / "cli.partial").exists()
    manifest = json.loads(run.stdout)
    assert (manifest["train.jsonl"], manifest["heldout.jsonl"], manifest["pairs.jsonl"]) == (30 + 2 * 10 + 20, 8, 6)
    stamp = os.path.getmtime(tmp_path / "cli" / "manifest.json")
    interleaved.ensure(str(tmp_path / "cli"), **SIZES)  # the same arguments: nothing rewritten
    assert os.path.getmtime(tmp_path / "cli" / "manifest.json") == stamp
    interleaved.ensure(str(tmp_path / "cli"), **{**SIZES, "seed": 1})
    assert digest(tmp_path / "cli") != digest(data)

    train, held, pairs = lines(data / "train.jsonl"), lines(data / "heldout.jsonl"), lines(data / "pairs.jsonl")
    for s in train + held:
        if s["kind"] == "fashion_sequence":  # 2-4 items, each an image and its sentence, one order per sequence
            kinds = [next(iter(seg)) for seg in s["segments"]]
            assert 2 <= kinds.count("image") <= 4 and kinds in (["image", "text"] * (len(kinds) // 2),
                                                                 ["text", "image"] * (len(kinds) // 2))
    # The first 10 training sequences again: their images alone, in order, and their sentences alone.
    pure = [s for s in train if s["kind"] in ("fashion_images", "fashion_texts")]
    for source, images, texts in zip(train[:10], pure[0::2], pure[1::2]):
        assert (images["kind"], texts["kind"]) == ("fashion_images", "fashion_texts")
        assert images["segments"] == [seg for seg in source["segments"] if "image" in seg]
        assert texts["segments"] == [seg for seg in source["segments"] if "text" in seg]
    assert len(pure) == 20
    used = [seg["image"] for s in train + held if s not in pure for seg in s["segments"] if "image" in seg]
    assert len(used) == len(set(used))  # each image in one interleaved sample only
    assert all("/test/" in seg["image"] for s in held for seg in s["segments"] if "image" in seg)

    def hashes(paths):
        return {hashlib.sha256(pixels(data, p).numpy().tobytes()).hexdigest() for p in paths}

    seen = hashes(seg["image"] for s in train for seg in s["segments"] if "image" in seg)
    unseen = hashes([seg["image"] for s in held for seg in s["segments"] if "image" in seg]
                    + [p for pair in pairs for p in pair["images"]])
    assert unseen and seen.isdisjoint(unseen)
    assert len(hashes(p for pair in pairs for p in pair["images"])) == 2 * len(pairs)  # no pair repeats


def test_minimal_pairs_swap_exactly_the_two_colours(data):
    pairs = lines(data / "pairs.jsonl")
    scenes = [s for s in lines(data / "train.jsonl") if s["kind"] == "scene"]
    # Training scenes come in swapped pairs too: (a, b) one after the other.
    as_pairs = [{"images": [a["segments"][0]["image"], b["segments"][0]["image"]],
                 "captions": [a["segments"][1]["text"], b["segments"][1]["text"]]}
                for a, b in zip(scenes[::2], scenes[1::2])]
    for pair in pairs + as_pairs:
        (c0, k0, c1, k1), (d0, m0, d1, m1) = (CAPTION.match(c).groups() for c in pair["captions"])
        assert (k0, k1) == (m0, m1) and k0 != k1 and (d0, d1) == (c1, c0) and c0 != c1
        a, b = (pixels(data, p) for p in pair["images"])
        first, second = (torch.tensor(instruct.COLOURS[c], dtype=torch.uint8) for c in (c0, c1))
        in_a, in_b = (a == first).all(-1), (b == second).all(-1)
        assert in_a.any() and torch.equal(in_a, in_b)  # the first colour's pixels wear the second
        assert torch.equal((a == second).all(-1), (b == first).all(-1))
        assert torch.equal(a[(a == 0).all(-1)], b[(a == 0).all(-1)])  # the shapes cover the same pixels


def test_sentences_fit_the_instruction_tokenizer(data, tok):
    texts = [seg["text"] for f in ("train.jsonl", "heldout.jsonl") for s in lines(data / f)
             for seg in s["segments"] if "text" in seg]
    texts += [c for p in lines(data / "pairs.jsonl") for c in p["captions"]]
    for text in set(texts):
        ids = tok.encode(text, add_bos=False)
        assert tok.unk_id not in ids and not any(tok.id_to_piece(i).startswith("<0x") for i in ids), text
        assert tok.decode(ids) == text


def test_spans_are_exact(data, tok):
    image = tok.special_tokens["<image>"]
    for name in ("train.jsonl", "heldout.jsonl"):
        e = encode(data / name, tok)
        for i, s in enumerate(e.samples):
            n = int(e.attention_mask[i].sum())
            ids, labels = e.input_ids[i, :n].tolist(), e.labels[i, :n].tolist()
            spans = e.spans[i]
            # Contiguous from after the BOS to before the EOS: nothing between slices.
            assert spans[0][0] == 1 and spans[-1][1] == n - 1 and ids[0] == tok.bos_id and ids[-1] == tok.eos_id
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            for (start, end), kind, seg in zip(spans, e.kinds[i], s.segments):
                if kind == "image":
                    assert end - start == IMAGE_TOKENS and set(ids[start:end]) == {image}
                    assert set(labels[start:end]) == {IGNORE}
                else:
                    assert tok.decode(ids[start:end]) == seg["text"] and labels[start:end] == ids[start:end]
            assert ids.count(image) == IMAGE_TOKENS * len(e.images[i]) == IMAGE_TOKENS * e.kinds[i].count("image")
            assert labels[-1] == tok.eos_id and labels[0] == IGNORE


def test_image_spans_hold_their_image_features_in_llava_hidden_states(data, tok):
    image = tok.special_tokens["<image>"]
    config = dict(text_config=dict(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2),
                  vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=28, patch_size=7),
                  image_token_index=image, vision_feature_layer=-1)
    torch.manual_seed(0)
    model = tessera.LlavaForConditionalGeneration(config).eval()
    assert model.config["image_seq_length"] == IMAGE_TOKENS
    e = encode(data / "train.jsonl", tok)
    i = next(r for r, imgs in enumerate(e.images) if len(imgs) >= 3)
    transform = ImageTransform(clip_transform(28, train=False))
    px = load_pixels(e.images[i], transform)
    with torch.no_grad():
        embeds = model(e.input_ids[i:i + 1], pixel_values=px, attention_mask=e.attention_mask[i:i + 1],
                       output_hidden_states=True).hidden_states[0][0]
        images = iter(range(len(px)))
        for (start, end), kind in zip(e.spans[i], e.kinds[i]):
            if kind == "image":  # the features of this image alone, in a prompt of nothing but it
                k = next(images)
                alone = model(torch.full((1, IMAGE_TOKENS), image), pixel_values=px[k:k + 1],
                              output_hidden_states=True).hidden_states[0][0]
                torch.testing.assert_close(embeds[start:end], alone, rtol=0, atol=1e-6)
            else:
                words = model(e.input_ids[i:i + 1, start:end], output_hidden_states=True).hidden_states[0][0]
                torch.testing.assert_close(embeds[start:end], words, rtol=0, atol=0)


def _write(data, rows):
    path = data / "bad.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


IMG = "images/fashion/train/00000.png"
GOOD = {"id": "fine", "segments": [{"image": IMG}, {"text": "A bag."}]}


@pytest.mark.parametrize("bad, message", [
    ({"id": "x", "segments": [{"image": IMG}, {"text": "<image> A bag."}]},
     r"bad.jsonl:2 \(id 'x'\): segment 1: the text holds 1 image placeholder\(s\) '<image>'.*placeholders would not "
     r"match the images"),
    ({"id": "x", "segments": []}, r"bad.jsonl:2 \(id 'x'\): the segment list is empty"),
    ({"id": "x", "segments": [{"image": IMG}, {"video": "clip.mp4"}]},
     r"bad.jsonl:2 \(id 'x'\): segment 1: unknown segment kind 'video'"),
    ({"id": "x", "segments": [{"image": IMG, "text": "A bag."}]},
     r"bad.jsonl:2 \(id 'x'\): segment 0: expected one of"),
    ({"id": "x", "segments": [{"text": 3}]}, r"bad.jsonl:2 \(id 'x'\): segment 0: the text must be a string"),
    ({"id": "x", "segments": [{"text": "A bag."}, {"image": "images/missing.png"}]},
     r"bad.jsonl:2 \(id 'x'\): segment 1: image '.*missing.png' not found"),
    ({"id": "x", "segments": [{"image": "../../etc/passwd"}]},
     r"bad.jsonl:2 \(id 'x'\): segment 0: .*leaves the image"),
    ({"id": "x", "segments": [{"text": "The item is a bag. " * 8}, {"image": IMG}]},
     r"bad.jsonl:2 \(id 'x'\): segment 1: the sample has (at least )?\d+ tokens, more than max_length 40, and truncation would "
     r"cut this image"),
    ({"id": "fine", "segments": [{"text": "A bag."}]}, r"bad.jsonl:2 \(id 'fine'\): the id is already used at line 1"),
    ({"segments": [{"text": "A bag."}]}, r"bad.jsonl:2: needs an 'id'"),
    ('{"id": "x", "segments": [', r"bad.jsonl:2: not a JSON object"),
])
def test_bad_input_is_refused_naming_the_place(data, tok, bad, message):
    path = _write(data, [GOOD, bad])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        encode(path, tok, max_length=40)


def test_text_the_tokenizer_cannot_represent_is_refused(data, tmp_path):
    texts = [seg["text"] for s in lines(data / "train.jsonl") for seg in s["segments"] if "text" in seg]
    plain = train_sentencepiece(texts, tmp_path / "nofallback.model", vocab_size=200, byte_fallback=False,
                                hard_vocab_limit=False)
    path = _write(data, [GOOD, {"id": "odd", "segments": [{"image": IMG}, {"text": "A bag ✓."}]}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2 \(id 'odd'\): segment 1: the tokenizer maps part of the "
                                         r"rendered text to its unknown token"):
        encode(path, plain)


def test_points_are_seeded_and_never_in_an_empty_slice(data, tok):
    # Segment 1 is an empty text; segment 3 is cut away by truncation to max_length 60 (segment 2 in part).
    path = _write(data, [{"id": "e", "segments": [{"image": IMG}, {"text": ""}, {"text": "The item is a bag. " * 10},
                                                  {"text": "A bag."}]}, GOOD])
    e = encode(path, tok, max_length=60)
    (image, empty, long, cut), _ = e.spans
    assert empty[0] == empty[1] and cut[0] == cut[1] == 60 and long == (17, 60)
    drawn = [sample_points(e, 3, seed) for seed in range(30)]
    assert drawn[0] == sample_points(e, 3, torch.Generator().manual_seed(0))  # a seed and a generator agree
    assert all(p[0] == [0, 2] and p[1] == [0, 1] for p in drawn)  # every non-empty slice, none other
    ones = {tuple(sample_points(e, 1, seed)[0]) for seed in range(30)}
    assert ones == {(0,), (2,)}  # k=1 picks either
    for j in (1, 3):
        with pytest.raises(ValueError, match=rf"bad.jsonl:1 \(id 'e'\): segment {j}: a point in an empty slice"):
            check_points(e, [[j], [0]])
    with pytest.raises(ValueError, match=r"sample 0: point at segment 7, but the sample has 4 segments"):
        check_points(e.spans, [[7], [0]])
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        sample_points(e, 0, 0)
    path = _write(data, [{"id": "void", "segments": [{"text": ""}]}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1 \(id 'void'\): no slice with tokens"):
        sample_points(encode(path, tok), 1, 0)


def test_pairs_read_and_render_as_four_samples(data, tok):
    pairs = read_pairs(str(data / "pairs.jsonl"))
    samples = pair_samples(pairs[0])
    assert [s.id for s in samples] == [f"{pairs[0]['id']}-{c}" for c in ("c0i0", "c1i0", "c0i1", "c1i1")]
    e = encode_interleaved(samples, tok, tok.special_tokens["<image>"], IMAGE_TOKENS, 40)
    assert [s.segments[1]["text"] for s in samples] == [pairs[0]["captions"][c] for c in (0, 1, 0, 1)]
    assert e.images[0] == e.images[1] != e.images[2] == e.images[3]
    bad = data / "badpairs.jsonl"
    bad.write_text(json.dumps({"id": "p", "images": ["a.png", "b.png"], "captions": ["A.", "A."]}) + "\n")
    with pytest.raises(ValueError, match=r"badpairs.jsonl:1 \(id 'p'\): the two captions or the two images"):
        read_pairs(str(bad))
    bad.write_text(json.dumps({"id": "p", "images": ["a.png"], "captions": ["A.", "B."]}) + "\n")
    with pytest.raises(ValueError, match=r"badpairs.jsonl:1: expected"):
        read_pairs(str(bad))


def test_single_modality_renderings_take_the_first_sequences_and_cap_at_their_number():
    seqs = [{"id": f"s{i}", "kind": "fashion_sequence",
             "segments": [{"text": f"t{i}"}, {"image": f"i{i}.png"}, {"text": f"u{i}"}, {"image": f"j{i}.png"}]}
            for i in range(3)]
    assert interleaved.single_modality_renderings(seqs, 0) == []
    out = interleaved.single_modality_renderings(seqs, 10)
    assert [s["id"] for s in out] == ["s0-images", "s0-texts", "s1-images", "s1-texts", "s2-images", "s2-texts"]
    assert out[2]["segments"] == [{"image": "i1.png"}, {"image": "j1.png"}]
    assert out[3]["segments"] == [{"text": "t1"}, {"text": "u1"}]
