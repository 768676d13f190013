"""A text far longer than what truncation keeps (a 40 MB line in a corpus, a conversation turn or
an interleaved segment) is encoded only as far as it is kept: the tokenizer takes ~100 bytes per
character, so such a line took gigabytes before it was cut to max_length. Each reader gives the
ids that encoding the whole text and then truncating gives, with the tokenizer never handed more
than a bounded prefix."""
import json

import pytest

from tessera import chat
from tessera.bounded_encoding import encode_at_most
from tessera.text import SentencePieceTokenizer

MAX_LENGTH = 48
BOUND = 8 * (MAX_LENGTH + 1 + 32)  # encode_at_most's first prefix for this room


class Recording:
    """The tokenizer, recording the longest text it was asked to encode."""

    def __init__(self, tok):
        self.tok, self.longest = tok, 0

    def encode(self, text, *args, **kwargs):
        self.longest = max(self.longest, len(text))
        return self.tok.encode(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


@pytest.fixture(scope="module")
def tok(shared_dir):
    return SentencePieceTokenizer(str(shared_dir / "assets" / "llama2c_tokenizer.model"), special_tokens=["<image>"])


LONG = "The quick brown fox jumps over the lazy dog, again and again. " * 4000  # 252,000 characters


@pytest.fixture(scope="module")
def models(tok, tmp_path_factory):
    """LLaMA's BPE, and Unigram models (which segment a run by its whole length) with the default
    options, with LLaMA's whitespace options, and with pieces that may span spaces."""
    import random

    from tessera.text import train_sentencepiece

    rng = random.Random(0)
    texts = [" ".join(rng.choice(["a" * rng.randint(1, 40), "ab" * rng.randint(1, 10), "the cat", "=" * rng.randint(1, 30),
                                  "日本語の文章です", "abc", " " * rng.randint(1, 9), "\n\n\n "]) for _ in range(8))
             for _ in range(3000)]
    folder = tmp_path_factory.mktemp("unigram")
    options = {"unigram": {}, "unigram_ws": {"allow_whitespace_only_pieces": True, "remove_extra_whitespaces": False},
               "unigram_nosplit": {"split_by_whitespace": False}}
    out = {"bpe": tok}
    for name, extra in options.items():
        out[name] = train_sentencepiece(texts, str(folder / f"{name}.model"), vocab_size=300, model_type="unigram",
                                        **extra)
    # Pieces of spaces alone (LLaMA's options) make a run of spaces one layout: no cut is safe.
    assert [out[n].prefix_rule for n in out] == ["anywhere", "space", None, None]
    return out


TEXTS = [LONG, "A short caption.", " " * 50_000 + "words after many spaces", "x" * 30_000,
         "=" * 20_013 + " the end", " ".join("a" * (2000 + n) for n in range(40)), "ab " * 3000 + "a" * 5001,
         "日本語の文章です " * 4000,
         *("a" * n for n in range(2000, 2012, 3)), *("=" * (18000 + n) + " the end" for n in range(2000, 2012, 3)),
         *("w" + " " * n + "end " * 900 for n in (3000, 3001, 3007)), "\n\n\n " * 1500 + "end",
         "the cat " * 400 + " " * 3001 + "abc " * 300,
         *("w" + " " * n + "\u2581 end" * 300 for n in (1200, 1203)), "a\u200b end " * 400]


@pytest.mark.parametrize("model", ["bpe", "unigram", "unigram_ws", "unigram_nosplit"])
@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("k", [0, 1, 7, MAX_LENGTH])
def test_encode_at_most_is_the_whole_encoding_cut(models, model, text, k):
    sp = models[model]
    full = sp.encode(text, add_bos=False)
    ids, left_out = encode_at_most(sp, text, k)
    assert ids == full[:k] and left_out == (len(full) > k)


@pytest.mark.parametrize("model, text", [("bpe", "日本語の文章です" * 200_000), ("bpe", "QUJD" * 300_000),
                                         ("unigram", LONG)])
def test_what_is_cut_is_never_encoded(models, model, text):
    """Where the tokenizer allows a cut (BPE anywhere, a word-splitting Unigram model without
    pieces of spaces at a space between words), it never sees more than a bounded prefix."""
    recording = Recording(models[model])
    ids, left_out = encode_at_most(recording, text, MAX_LENGTH)
    assert left_out and len(ids) == MAX_LENGTH and recording.longest <= BOUND + 64


def test_a_long_line_of_a_corpus(tok, tmp_path):
    from tessera.train.causal_lm_task import encode_lines

    path = tmp_path / "corpus.txt"
    path.write_text(f"A short line.\n{LONG}\n")
    recording = Recording(tok)
    got = encode_lines(str(path), recording, MAX_LENGTH)
    for row, line in zip(got["input_ids"], ["A short line.", LONG]):
        want = tok.encode(line, add_bos=True, add_eos=True)[:MAX_LENGTH]
        assert row[:len(want)].tolist() == want and not row[len(want):].any()
    assert recording.longest <= BOUND


def test_a_long_conversation_turn(tok, tmp_path):
    from tessera.train.conversation_data import prepare_sample

    sample = {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nDescribe it."},
                                                  {"from": "gpt", "value": LONG}]}
    template, image = chat.load_template("v1"), tok.special_tokens["<image>"]
    ids, labels = chat.render(template, sample["conversations"], tok, image, 4, images=1)
    recording = Recording(tok)
    length = 160  # v1's system prompt takes ~60 tokens
    got = prepare_sample(sample, "s", template, recording, image, 4, length, str(tmp_path), False)
    assert got[:2] == (ids[:length], labels[:length]) and got[1][-1] != -100
    assert recording.longest <= 8 * (length + 1 + 32)


def test_a_long_interleaved_segment(tok, tmp_path):
    from tessera.train.interleaved_data import encode_interleaved, read_interleaved

    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"id": 0, "segments": [{"image": "a.png"}, {"text": LONG}, {"text": "more"}]}) + "\n")
    image = tok.special_tokens["<image>"]
    recording = Recording(tok)
    got = encode_interleaved(read_interleaved(str(path)), recording, image, 4, MAX_LENGTH)
    want = [tok.bos_id] + [image] * 4 + tok.encode(LONG, add_bos=False)
    assert got.input_ids[0].tolist() == want[:MAX_LENGTH]
    assert got.spans[0] == [(1, 5), (5, MAX_LENGTH), (MAX_LENGTH, MAX_LENGTH)]
    assert recording.longest <= BOUND
    # An image after the cut is still found, and the count said as what it is: a lower bound.
    path.write_text(json.dumps({"id": 0, "segments": [{"text": LONG}, {"image": "a.png"}]}) + "\n")
    with pytest.raises(ValueError, match=r"segment 1: the sample has at least \d+ tokens, more than max_length 48, "
                                         r"and truncation would cut this image; raise data.max_length"):
        encode_interleaved(read_interleaved(str(path)), tok, image, 4, MAX_LENGTH)


def test_a_lone_surrogate_in_a_segment_names_its_place(tok, tmp_path):
    from tessera.train.interleaved_data import encode_interleaved, read_interleaved

    path = tmp_path / "data.jsonl"
    path.write_text('{"id": "a", "segments": [{"text": "A bag."}]}\n{"id": "b", "segments": [{"text": "A \\ud800 bag."}]}\n')
    with pytest.raises(ValueError, match=r"data.jsonl:2 \(id 'b'\): segment 0: text is not valid UTF-8"):
        encode_interleaved(read_interleaved(str(path)), tok, tok.special_tokens["<image>"], 4, MAX_LENGTH)


def test_a_refusal_after_a_long_turn_says_its_count_is_a_lower_bound(tok, tmp_path):
    """The text past max_length is not encoded, so the sample's length is not known: the refusal
    said "161 tokens" of a 24,000-token prompt."""
    from tessera.train.conversation_data import SampleProblem, prepare_sample

    sample = {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\n" + LONG},
                                                  {"from": "gpt", "value": "A bag."}]}
    with pytest.raises(SampleProblem, match=r"s: the prompt has at least 16\d tokens, more than max_length 160"):
        prepare_sample(sample, "s", chat.load_template("v1"), tok, tok.special_tokens["<image>"], 4, 160,
                       str(tmp_path), False, supervise=False)


def test_prefix_rule_reads_the_model_as_protobuf_merges_it(tmp_path, shared_dir):
    """A TrainerSpec written as two records is merged (the later split_by_whitespace wins); a file
    whose fields do not parse as a TrainerSpec gets no rule (the whole text is encoded), never an
    error; U+2581 in the text is SentencePiece's own space, so no cut lands beside it."""
    from tessera.bounded_encoding import _WORD_GAP, prefix_rule

    def varint(n):
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out

    def field(number, payload):
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    unigram = varint(3 << 3) + varint(1)
    no_split = varint(22 << 3) + varint(0)
    path = tmp_path / "two_records.model"
    path.write_bytes(field(2, unigram) + field(2, no_split))
    assert prefix_rule(path) is None
    path.write_bytes(field(2, unigram))
    assert prefix_rule(path) == "space"
    path.write_bytes(field(2, unigram) + varint(2 << 3) + varint(5))  # field 2 again as a varint
    assert prefix_rule(path) is None
    path.write_bytes(b"\xff" * 9)
    assert prefix_rule(path) is None
    assert prefix_rule(shared_dir / "assets" / "llama2c_tokenizer.model") == "anywhere"
    assert _WORD_GAP.search("a \u2581b") is None and _WORD_GAP.search("a\u2581 b") is None
    assert _WORD_GAP.search("a b").start() == 1
