"""tessera.text.BertTokenizer against transformers' BertTokenizerFast (HF tokenizers).

Vocabularies are trained here with ``tokenizers.BertWordPieceTokenizer`` on a real corpus (the
Debian word list /usr/share/dict/words and the fortunes in /usr/share/games/fortunes), uncased
and cased, saved as vocab.txt and loaded by both sides; ids, attention masks and decoded text
must be equal on every fortune line plus hand-written punctuation, digits, accents, CJK,
control characters and special tokens, with truncation and padding. A character-level
vocabulary then checks every Unicode code point through both (cleaning, punctuation,
whitespace, CJK, accent stripping and lower-casing). Nothing is downloaded.
"""

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import tessera.text as tt

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = Path("/usr/share/dict/words")
FORTUNES = Path("/usr/share/games/fortunes")

EXTRA = [
    "Héllo WÖRLD, café naïve façade Ærøskøbing Straße ǅungla İstanbul ΟΔΟΣ σς",
    "Vietnamese: Tiếng Việt có dấu; Polish: Zażółć gęślą jaźń; Czech: Příliš žluťoučký kůň",
    "東京タワーの写真 中文字符测试 한국어 문장 日本語のテキスト 𠀀𠀁 丽",
    "Прывітанне, свет! Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم שלום עולם",
    "numbers 3.14159 1,000,000 2024-01-31 12:30pm $5.99 50% #1 @user x^2 a_b ~tilde~",
    "quotes: “curly” ‘single’ «guillemets» — em dash – en dash … ellipsis ¿qué? ¡sí!",
    "a[SEP]b [sep] [CLS][MASK] [PAD]x [UNK] [SE P] [[SEP]] [DEC] [dec]",
    "controls: a\x00b\x01c\x08d\x7fe\u200bf\u200dg\ufeffh\ufffdi\ue000j and\ttabs\nnewlines\rcr\x0bvt\x0cff",
    "emoji 🐈👍🏽 ❤️ 🇫🇷 👩‍👩‍👧 ½ ² ① ﬁne Ｆｕｌｌｗｉｄｔｈ ｶﾀｶﾅ",
    "combining: e\u0301 a\u0308 o\u0302\u0323 x\u0345y \u0301lead Zalgo: Z\u0351\u0300a\u0336l",
    "don't won't I'm you're it's we've they'll y'all rock'n'roll o'clock",
    "supercalifragilisticexpialidocious " + "a" * 99 + " " + "b" * 100 + " " + "c" * 101,
    "é" * 101 + " " + "ab" * 60,
    "   leading and trailing   ",
    "",
    "\u3000\u00a0\u2003\u2028\u2029\u0085 odd spaces\u180e\u200a",
    "Ünïcödé ÀÉÎÕÜ àéîõü ÇçÑñ ÅåØø ĲĳŒœ ǄǅǆǇǈǉ ſ ẞ ß",
    "mixed CJK中文and English混合text",
]


def fortune_lines():
    lines = []
    for f in sorted(FORTUNES.iterdir()):
        if f.suffix == ".dat" or f.is_symlink() or not f.is_file():
            continue
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip() and line.strip() != "%":
                lines.append(line)
    return lines


@pytest.fixture(scope="module")
def corpus():
    if not FORTUNES.is_dir() or not WORDS.is_file():
        pytest.skip("needs /usr/share/games/fortunes (fortunes) and /usr/share/dict/words (wamerican)")
    files = [str(f) for f in sorted(FORTUNES.iterdir())
             if f.suffix != ".dat" and not f.is_symlink() and f.is_file()]
    return files + [str(WORDS)]


def _train(corpus, folder: Path, lowercase: bool, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    trainer = tokenizers.BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase)
    trainer.train(corpus, vocab_size=8000, min_frequency=2, show_progress=False)
    trainer.save_model(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def uncased_folder(corpus, tmp_path_factory):
    return _train(corpus, tmp_path_factory.mktemp("bert-uncased"), True,
                  {"do_lower_case": True, "model_max_length": 512})


@pytest.fixture(scope="module")
def cased_folder(corpus, tmp_path_factory):
    return _train(corpus, tmp_path_factory.mktemp("bert-cased"), False,
                  {"do_lower_case": False, "model_max_length": 512})


def hf_bert(folder, **kwargs):
    # from_pretrained reads vocab.txt in transformers 4 and 5 alike (5 ignores vocab_file=...).
    hf = transformers.BertTokenizerFast.from_pretrained(str(folder), **kwargs)
    lines = (Path(folder) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert hf.vocab_size == len(lines), "transformers did not load the vocabulary"
    return hf


@pytest.fixture(scope="module")
def texts():
    lines = fortune_lines()
    random.Random(0).shuffle(lines)
    return EXTRA + lines


def _ids(encoding):
    return encoding["input_ids"], encoding["attention_mask"]


def hf_rows(hf, texts, **kw):
    """transformers' padded ids and mask as tensors, made here from its lists: its own
    return_tensors="pt" checks every row in Python, most of this file's time."""
    enc = hf(texts, **kw)
    return {k: torch.tensor(enc[k]) for k in ("input_ids", "attention_mask")}


def assert_same_rows(ours, ref, texts, what):
    ours_ids, ours_mask = _ids(ours)
    ref_ids, ref_mask = _ids(ref)
    if isinstance(ours_ids, torch.Tensor):
        assert ours_ids.dtype == torch.long and ours_ids.shape == ref_ids.shape, (what, ours_ids.shape, ref_ids.shape)
        bad = (ours_ids != ref_ids).any(1) | (ours_mask != ref_mask).any(1)
        rows = bad.nonzero().flatten().tolist()
    else:
        rows = [i for i in range(len(ref_ids)) if ours_ids[i] != ref_ids[i] or ours_mask[i] != ref_mask[i]]
    assert not rows, f"{what}: {len(rows)} rows differ, first {texts[rows[0]]!r}"


# ---- ids and masks on real text ----------------------------------------------------------
@pytest.mark.parametrize("variant", ["uncased", "cased"])
def test_ids_and_masks_equal_transformers(variant, uncased_folder, cased_folder, texts):
    folder = uncased_folder if variant == "uncased" else cased_folder
    hf, ours = hf_bert(folder), tt.BertTokenizer.from_pretrained(folder)
    assert len(texts) > 50000
    assert ours.vocab_size == hf.vocab_size and len(ours) == len(hf)
    assert ours.do_lower_case == (variant == "uncased")
    # Every line once; the other settings on a sample (transformers takes seconds per pass).
    kw = dict(padding=True, truncation=True, max_length=64)
    assert_same_rows(ours(texts, **kw), hf_rows(hf, texts, **kw), texts, f"{variant} {kw}")
    sample = texts[:6000]
    for kw in (dict(padding="max_length", truncation=True, max_length=48),
               dict(padding=True),
               dict(padding="longest", truncation=True, max_length=32, pad_to_multiple_of=8),
               dict(padding=True, truncation=True)):  # model_max_length (512) from the config
        assert_same_rows(ours(sample, **kw), hf_rows(hf, sample, **kw), sample, f"{variant} {kw}")
    # Unpadded lists, and the one-text forms.
    ref = hf(sample)
    got = ours(sample, return_tensors=None)
    assert got["input_ids"] == ref["input_ids"] and got["attention_mask"] == ref["attention_mask"]
    assert got["token_type_ids"] == ref["token_type_ids"]
    for text in texts[:300]:
        assert ours.encode(text) == hf.encode(text), text
        assert ours.tokenize(text) == hf.tokenize(text), text
        assert ours(text, return_tensors=None)["input_ids"] == hf(text)["input_ids"]
    one = ours(texts[1])
    assert one.input_ids.shape[0] == 1 and one.token_type_ids.abs().sum() == 0


def test_truncation_and_padding_sides(uncased_folder, texts):
    sample = texts[:4000]
    for side in ("left", "right"):
        hf = hf_bert(uncased_folder, truncation_side=side, padding_side=side)
        ours = tt.BertTokenizer.from_pretrained(uncased_folder, truncation_side=side, padding_side=side)
        for kw in (dict(padding=True, truncation=True, max_length=12),
                   dict(padding="max_length", truncation=True, max_length=2),
                   dict(padding=True, add_special_tokens=False, truncation=True, max_length=7)):
            assert_same_rows(ours(sample, **kw), hf_rows(hf, sample, **kw), sample, f"{side} {kw}")
        # max_length alone truncates (transformers' rule), without padding: lists.
        assert_same_rows(ours(sample, max_length=5, return_tensors=None), hf(sample, max_length=5), sample,
                         f"{side} max_length=5")
        assert ours.encode(sample[5], max_length=6) == hf.encode(sample[5], max_length=6, truncation=True)


def test_accent_and_chinese_switches_equal_transformers(uncased_folder, cased_folder, texts):
    sample = EXTRA + texts[:2000]
    for folder, kw in ((uncased_folder, dict(strip_accents=False)),
                       (cased_folder, dict(strip_accents=True)),
                       (uncased_folder, dict(tokenize_chinese_chars=False)),
                       (cased_folder, dict(do_lower_case=True))):
        hf, ours = hf_bert(folder, **kw), tt.BertTokenizer.from_pretrained(folder, **kw)
        assert_same_rows(ours(sample, padding=True), hf_rows(hf, sample, padding=True), sample, str(kw))


# ---- every code point ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def char_folder(tmp_path_factory):
    """A vocabulary of every non-space code point, alone and as a ## continuation, so ids show
    exactly what normalization made of each character."""
    chars = [chr(c) for c in range(0x110000)
             if not 0xD800 <= c < 0xE000 and not chr(c).isspace() and c not in (0x1C, 0x1D, 0x1E, 0x1F)]
    folder = tmp_path_factory.mktemp("bert-chars")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def hf_chars(char_folder):
    return hf_bert(char_folder)


@pytest.mark.long  # ~40 s: 1.1M code points through both tokenizers, four ways
@pytest.mark.parametrize("kw", [dict(), dict(strip_accents=False), dict(do_lower_case=False),
                                dict(do_lower_case=False, strip_accents=True, tokenize_chinese_chars=False)],
                         ids=["uncased", "lower-keep-accents", "cased", "cased-strip-no-cjk"])
def test_every_code_point_equals_transformers(kw, char_folder, hf_chars):
    points = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    texts = [" ".join(f"a{chr(c)}b" for c in points[i:i + 512]) for i in range(0, len(points), 512)]
    # The 2.2M-token vocabulary is loaded once; the normalizer is set as BertTokenizer.__init__
    # sets it from these flags.
    lower = kw.get("do_lower_case", True)
    hf_chars.backend_tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=kw.get("tokenize_chinese_chars", True),
        strip_accents=kw.get("strip_accents"), lowercase=lower)
    ours = tt.BertTokenizer.from_pretrained(char_folder, **kw)
    ref = [e.ids for e in hf_chars.backend_tokenizer.encode_batch(texts)]
    got = ours(texts, return_tensors=None)["input_ids"]
    bad = [i for i in range(len(texts)) if got[i] != ref[i]]
    if bad:
        words = texts[bad[0]].split(" ")
        diff = [w for w in words if ours.encode(w) != hf_chars.backend_tokenizer.encode(w).ids]
        pytest.fail(f"{len(bad)} chunks differ; code points {[hex(ord(w[1])) for w in diff[:20] if len(w) > 1]}")


# ---- decode -------------------------------------------------------------------------------
def test_decode_equals_transformers(uncased_folder, cased_folder, texts):
    for folder in (uncased_folder, cased_folder):
        hf, ours = hf_bert(folder), tt.BertTokenizer.from_pretrained(folder)
        rows = hf(texts[:5000], padding=True)["input_ids"]
        for skip in (False, True):
            for clean in (True, False):
                want = hf.batch_decode(rows, skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
                assert ours.batch_decode(rows, skip_special_tokens=skip, clean_up_tokenization_spaces=clean) == want
        # Without the flag, each side's default (transformers 5: no clean-up; 4's was clean-up).
        for row in rows[:200]:
            assert ours.decode(row, skip_special_tokens=True) == hf.decode(row, skip_special_tokens=True)
        assert ours.decode(torch.tensor(rows[0])) == hf.decode(rows[0])
        assert ours.decode(np.int64(rows[0][1])) == hf.decode(np.int64(rows[0][1]))
        # Random ids: "##" pieces first, specials anywhere, punctuation next to anything.
        rng = random.Random(1)
        noise = [[rng.randrange(hf.vocab_size) for _ in range(rng.randrange(40))] for _ in range(3000)]
        for skip in (False, True):
            assert ours.batch_decode(noise, skip_special_tokens=skip) == hf.batch_decode(noise, skip_special_tokens=skip)
            assert ours.batch_decode(noise, skip_special_tokens=skip, clean_up_tokenization_spaces=True) == \
                hf.batch_decode(noise, skip_special_tokens=skip, clean_up_tokenization_spaces=True)


def test_list_padding_and_special_order_as_transformers(uncased_folder, texts):
    """Lists padded to max_length keep a longer row as it is (it was an error); the special
    tokens come in transformers' order."""
    hf, ours = hf_bert(uncased_folder), tt.BertTokenizer.from_pretrained(uncased_folder)
    batch = [t for t in texts[:400] if t] + ["a"]
    for kw in (dict(padding="max_length", max_length=12), dict(padding="max_length", max_length=12,
                                                            pad_to_multiple_of=8, padding_side="left"),
               dict(padding=True, pad_to_multiple_of=8)):
        want = hf(batch, **kw)
        got = ours(batch, return_tensors=None, **kw)
        assert got["input_ids"] == want["input_ids"] and got["attention_mask"] == want["attention_mask"], kw
    assert ours.all_special_tokens == hf.all_special_tokens and ours.all_special_ids == hf.all_special_ids


@pytest.mark.parametrize("kw", [
    {}, dict(truncation=True, max_length=24), dict(truncation="longest_first", max_length=9),
    dict(truncation="only_first", max_length=40, padding="max_length"), dict(truncation="only_second", max_length=40),
    dict(truncation=True, max_length=17, padding=True, padding_side="left"), dict(add_special_tokens=False),
    dict(truncation=True, max_length=5), dict(truncation=True, max_length=3),
])
@pytest.mark.parametrize("side", ["right", "left"])
def test_pairs_equal_transformers(uncased_folder, texts, kw, side):
    """[CLS] a [SEP] b [SEP], token types 0 then 1, and the truncation strategies of `tokenizers`
    (how many ids of each text survive), on 300 real pairs of every length relation."""
    hf = hf_bert(uncased_folder, truncation_side=side)
    ours = tt.BertTokenizer.from_pretrained(uncased_folder)
    ours.truncation_side = side
    lines = [t for t in texts if t][:600]
    firsts, seconds = lines[:300], lines[300:]
    if kw.get("truncation", "") in ("only_first", "only_second"):  # keep pairs the strategy can cut
        which = 0 if kw["truncation"] == "only_first" else 1
        keep = [i for i in range(300) if len(hf((firsts[i], seconds[i])[which], add_special_tokens=False)["input_ids"])
                > len(hf(firsts[i], seconds[i])["input_ids"]) - kw["max_length"]]
        firsts, seconds = [firsts[i] for i in keep], [seconds[i] for i in keep]
    want = hf(firsts, seconds, **kw)
    for got in (ours(firsts, seconds, return_tensors=None, **kw),
                ours(list(zip(firsts, seconds)), return_tensors=None, **kw)):
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert got[key] == want[key], (key, kw)
    if "padding" not in kw:  # encode gives the row unpadded
        enc_kw = {k: v for k, v in kw.items() if k in ("truncation", "max_length", "add_special_tokens")}
        assert ours.encode(firsts[7], seconds[7], **enc_kw) == want["input_ids"][7]
    one = ours(firsts[0], seconds[0], **{k: v for k, v in kw.items() if k != "padding_side"})
    assert one["input_ids"].shape[0] == 1 and one["token_type_ids"].dtype == torch.long


def test_bad_pairs_are_refused_by_name(uncased_folder):
    ours = tt.BertTokenizer.from_pretrained(uncased_folder)
    hf = hf_bert(uncased_folder)
    with pytest.raises(ValueError, match="text_pair must match text"):
        ours(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="text_pair must match text"):
        ours("a", ["c"])
    with pytest.raises(ValueError, match="only_first.*too few to cut"):
        ours("a", "the quick brown fox jumps over the lazy dog " * 3, truncation="only_first", max_length=8)
    for strategy, max_length in (("only_first", 5), ("only_second", 4)):  # the cut text would vanish
        with pytest.raises(Exception, match="Sequence to truncate too short"):  # where transformers refuses
            hf.encode("cat", "a dog", truncation=strategy, max_length=max_length)
        with pytest.raises(ValueError, match=f"{strategy}.*too few to cut"):
            ours.encode("cat", "a dog", truncation=strategy, max_length=max_length)
    # transformers encodes (text, "") as the text alone, and a batch's empty second text as a pair
    for kw in ({}, dict(truncation=True, max_length=5)):
        assert ours.encode("a b c d e f", "", **kw) == hf.encode("a b c d e f", "", **kw)
        assert ours("a b c d e f", "", return_tensors=None, **kw)["input_ids"] == \
            hf("a b c d e f", "", **kw)["input_ids"]
        assert ours(["a b c d e f"], [""], return_tensors=None, **kw)["input_ids"] == \
            hf(["a b c d e f"], [""], **kw)["input_ids"]
    # only_second without a second text: tokenizers encodes a text that fits, refuses one to cut
    for first in ("a cat", ""):
        for second in ((), ("",)):
            assert ours.encode(first, *second, truncation="only_second", max_length=8) == \
                hf.encode(first, *second, truncation="only_second", max_length=8)
    with pytest.raises(ValueError, match="needs a text pair: text 0 has 11 tokens, more than max_length 8"):
        ours("a b c d e f g h i", truncation="only_second", max_length=8)
    with pytest.raises(Exception, match="Second sequence not provided"):
        hf("a b c d e f g h i", truncation="only_second", max_length=8)
    with pytest.raises(ValueError, match="make no tensor: pass padding=True"):
        ours(["a", "a b c d"], ["c", "d"])
    with pytest.raises(ValueError, match="shorter than a pair's 3 special tokens"):
        ours("a", "b", truncation=True, max_length=2)


# ---- special tokens -------------------------------------------------------------------------
def test_dec_token_as_lavis_adds_it(uncased_folder, texts):
    hf, ours = hf_bert(uncased_folder), tt.BertTokenizer.from_pretrained(uncased_folder)
    assert hf.add_special_tokens({"bos_token": "[DEC]"}) == ours.add_special_tokens({"bos_token": "[DEC]"}) == 1
    assert ours.bos_token_id == hf.bos_token_id == ours.vocab_size
    assert len(ours) == len(hf) == ours.vocab_size + 1
    sample = ["[DEC] " + t for t in texts[:500]] + ["a[DEC]b[SEP]", "[DEC][DEC]", "[dec]"]
    assert_same_rows(ours(sample, padding=True), hf_rows(hf, sample, padding=True), sample, "[DEC]")
    rows = hf(sample[:50])["input_ids"]
    assert ours.batch_decode(rows, skip_special_tokens=True) == hf.batch_decode(rows, skip_special_tokens=True)
    # Replacing [CLS] by [DEC] is how BLIP-2's Q-Former builds decoder input.
    ids = ours(["a photo of a cat"]).input_ids
    ids[:, 0] = ours.bos_token_id
    assert ours.decode(ids[0]).startswith("[DEC] ")
    # A token of the vocabulary keeps its id when made special.
    word = hf.convert_ids_to_tokens(2000)
    assert ours.add_special_tokens([word]) == hf.add_special_tokens({"additional_special_tokens": [word]}) == 1
    assert ours.add_special_tokens([word]) == 0
    assert ours.convert_tokens_to_ids(word) == 2000
    assert ours(f"x{word}y", return_tensors=None)["input_ids"] == hf(f"x{word}y")["input_ids"]


def test_folder_with_added_tokens_as_transformers_4_saves_it(uncased_folder, tmp_path):
    folder = tmp_path / "blip2-qformer-tokenizer"
    folder.mkdir()
    vocab = (uncased_folder / "vocab.txt").read_text(encoding="utf-8")
    (folder / "vocab.txt").write_text(vocab, encoding="utf-8")
    n = len(vocab.splitlines())
    specials = {i: t for i, t in enumerate(vocab.splitlines()) if t.startswith("[") and t.endswith("]")}
    decoder = {str(i): {"content": t, "special": True, "normalized": False, "lstrip": False,
                        "rstrip": False, "single_word": False} for i, t in specials.items()}
    decoder[str(n)] = {**decoder[str(next(iter(specials)))], "content": "[DEC]"}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "bos_token": "[DEC]", "model_max_length": 512, "truncation_side": "right",
         "added_tokens_decoder": decoder, "tokenizer_class": "BertTokenizer"}))
    ours = tt.BertTokenizer.from_pretrained(folder)
    assert ours.bos_token == "[DEC]" and ours.bos_token_id == n and len(ours) == n + 1
    assert ours.model_max_length == 512
    ref = hf_bert(uncased_folder)
    ref.add_special_tokens({"bos_token": "[DEC]"})
    text = ["[DEC] a man riding a horse", "no dec here"]
    assert ours(text, return_tensors=None)["input_ids"] == ref(text)["input_ids"]
    again = pickle.loads(pickle.dumps(ours))
    assert again.bos_token_id == n and again(text, return_tensors=None)["input_ids"] == ref(text)["input_ids"]
    assert "BertTokenizer(" in repr(ours)
    # A file that numbers [DEC] where it cannot go is refused.
    decoder[str(n + 3)] = decoder.pop(str(n))
    (folder / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder}))
    with pytest.raises(ValueError, match=r"'\[DEC\]' id .* takes id"):
        tt.BertTokenizer.from_pretrained(folder)


# ---- errors -------------------------------------------------------------------------------
def test_bad_vocabularies_are_refused_naming_the_file(tmp_path):
    missing = tmp_path / "nope" / "vocab.txt"
    with pytest.raises(ValueError, match=f"cannot open vocabulary file '{missing}'"):
        tt.BertTokenizer(missing)
    with pytest.raises(ValueError, match="nope holds neither vocab.txt nor tokenizer.json"):
        tt.BertTokenizer.from_pretrained(tmp_path / "nope")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"'{empty}' is empty"):
        tt.BertTokenizer(empty)
    for token in ("[UNK]", "[CLS]", "[SEP]", "[PAD]"):
        partial = tmp_path / f"no{token[1:-1]}.txt"
        partial.write_text("\n".join(t for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"] if t != token) + "\n")
        with pytest.raises(ValueError, match=rf"'{partial}' has no .*'\{token[:-1]}\]'"):
            tt.BertTokenizer(partial)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\xfe\n")
    with pytest.raises(ValueError, match="line 5 is not valid UTF-8"):
        tt.BertTokenizer(bad)


def test_bad_input_is_refused(uncased_folder):
    tok = tt.BertTokenizer.from_pretrained(uncased_folder)
    broken = b"what is \xff this?".decode("utf-8", "surrogateescape")
    for call in (lambda: tok(broken), lambda: tok(["fine", broken]), lambda: tok.encode(broken),
                 lambda: tok.tokenize(broken), lambda: tok(["fine", broken], return_tensors=None)):
        with pytest.raises(ValueError, match="not valid UTF-8"):
            call()
    with pytest.raises(TypeError, match="text 1 must be a str"):
        tok(["fine", 5])
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        tok(["a b c"], truncation=True, max_length=1)
    with pytest.raises(ValueError, match="Unable to create tensor"):
        tok(["a", "a b c d"])  # ragged without padding
    with pytest.raises(ValueError, match="not a multiple of pad_to_multiple_of"):
        tok(["a"], padding=True, truncation=True, max_length=10, pad_to_multiple_of=8)
    with pytest.raises(IndexError, match="outside the vocabulary"):
        tok.decode([len(tok)])
    with pytest.raises(ValueError, match="non-blank"):
        tok.add_special_tokens([" "])
    assert tok([]).input_ids.shape == (0, 0)


def test_a_padded_width_past_any_model_is_refused_not_allocated_or_wrapped(uncased_folder):
    """Padding widths come from the caller: 10^12 columns would ask for 16 TB, and rounding up to a
    multiple of 2^63 - 1 overflowed to 0 columns (every token dropped, no error)."""
    from tessera.bert_tokenizer import BertTokenizer

    tok = tt.BertTokenizer.from_pretrained(uncased_folder)
    for kw, key in (({"padding": True, "pad_to_multiple_of": 2 ** 63 - 1}, "pad_to_multiple_of"),
                    ({"padding": True, "pad_to_multiple_of": 10 ** 12}, "pad_to_multiple_of"),
                    ({"padding": "max_length", "max_length": 10 ** 12}, "max_length")):
        with pytest.raises(ValueError, match=key):
            tok(["hello world", "a"], **kw)
    assert tok(["hello world", "a"], padding=True, pad_to_multiple_of=64)["input_ids"].shape == (2, 64)


def test_a_folder_given_as_the_vocabulary_file_is_named_as_a_folder(uncased_folder):
    from tessera.bert_tokenizer import BertTokenizer

    with pytest.raises(ValueError, match="is a folder; give its vocab.txt"):
        BertTokenizer(str(uncased_folder))


@pytest.mark.parametrize("config, message", [
    ({"do_lower_case": "false"}, "do_lower_case must be true/false, got 'false'"),  # read as True before
    ({"strip_accents": "no"}, "strip_accents must be true/false or null"),
    ({"added_tokens_decoder": [1, 2]}, "added_tokens_decoder must be an object"),
    ({"added_tokens_decoder": {"abc": {"content": "[X]", "special": True}}}, "added_tokens_decoder keys are token ids, got 'abc'"),
    ({"unk_token": {"content": 5}}, r"unk_token: expected a token string"),
])
def test_a_tokenizer_config_of_the_wrong_types_is_named(uncased_folder, tmp_path, config, message):
    import shutil

    folder = tmp_path / "tok"
    shutil.copytree(uncased_folder, folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tokenizer_config.json: " + message):
        tt.BertTokenizer.from_pretrained(folder)


def test_a_bare_special_token_string_and_a_negative_max_length_are_refused(uncased_folder):
    with pytest.raises(TypeError, match="not one string"):
        tt.BertTokenizer.from_pretrained(uncased_folder, additional_special_tokens="[DEC]")
    tok = tt.BertTokenizer.from_pretrained(uncased_folder)
    with pytest.raises(TypeError, match="not one string"):
        tok.add_special_tokens("[DEC]")
    for kwargs in (dict(max_length=-1, truncation=True), dict(max_length=-5, padding="max_length")):
        with pytest.raises(ValueError, match="max_length must be in"):
            tok(["a b c"], **kwargs)
