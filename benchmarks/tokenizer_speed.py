"""Texts per second of tessera.text.tokenize vs open_clip.tokenize and HF CLIPTokenizerFast,
of tessera.text.BertTokenizer vs transformers' BertTokenizerFast (WordPiece), and of
tessera.text.SentencePieceTokenizer vs transformers' LlamaTokenizer on LLaVA-style prompts.

Follows the side-by-side style of tessera's benchmarks: same texts, same vocabulary, each
tokenizer producing a [N, 77] LongTensor, rates and ratios printed.

    python benchmarks/tokenizer_speed.py [--n 20000] [--bpe path/to/bpe_simple_vocab_16e6.txt.gz]
    python benchmarks/tokenizer_speed.py --which wordpiece [--bert folder-with-vocab.txt]
    python benchmarks/tokenizer_speed.py --which sentencepiece [--spm tokenizer.model] [--json]

WordPiece: both tokenizers get the same vocab.txt (by default one trained here with
tokenizers.BertWordPieceTokenizer on the fortunes and /usr/share/dict/words, 8,000 tokens,
uncased) and encode the same batch to padded input_ids + attention_mask tensors
(padding=True, truncation=True, max_length=128); the ids are checked equal first.

Texts are real sentences: the fortunes in /usr/share/games/fortunes split at sentence ends
(falling back to word salad from /usr/share/dict/words). The transformers tokenizer is built
from the same merges file: vocab.json and merges.txt are written to a temporary folder in
open_clip's vocabulary order, so all three produce the same ids (transformers pads with the
end token instead of 0, which does not change the work done).
"""

import os
import sys


import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch

FORTUNES = Path("/usr/share/games/fortunes")
WORDS = Path("/usr/share/dict/words")


def real_texts(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    texts = []
    if FORTUNES.is_dir():
        for f in sorted(FORTUNES.iterdir()):
            if f.suffix == ".dat" or f.is_symlink() or not f.is_file():
                continue
            for fortune in re.split(r"\n%\n", f.read_text(encoding="utf-8", errors="replace")):
                for s in re.split(r"(?<=[.!?])\s+", fortune):
                    s = " ".join(s.split())
                    if 3 <= len(s) <= 300:
                        texts.append(s)
    if not texts:
        words = WORDS.read_text(encoding="utf-8").split()
        texts = [" ".join(rng.choices(words, k=rng.randint(4, 20))) for _ in range(n)]
    rng.shuffle(texts)
    while len(texts) < n:
        texts = texts + texts
    return texts[:n]


def rate(fn, texts, repeats: int) -> float:
    """Best texts/s over `repeats` runs (the first run also warms caches)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def hf_clip_tokenizer(bpe_path: Path, tmp: Path):
    """CLIPTokenizerFast from the same merges file, in open_clip's vocabulary order."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizerFast

    ref = SimpleTokenizer(bpe_path=str(bpe_path))
    vocab = dict(ref.encoder)
    # HF's CLIP names the special tokens differently; the ids stay 49406 / 49407.
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    merges = [" ".join(pair) for pair, _ in sorted(ref.bpe_ranks.items(), key=lambda kv: kv[1])]
    (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                    encoding="utf-8")
    # from_pretrained reads vocab.json + merges.txt in transformers 4 and 5 alike (5 ignores
    # the vocab_file/merges_file constructor arguments).
    return CLIPTokenizerFast.from_pretrained(str(tmp))


def trained_bert_vocab(folder: Path) -> Path:
    """An uncased 8,000-token WordPiece vocab.txt trained on the same real corpus."""
    from tokenizers import BertWordPieceTokenizer

    files = [str(f) for f in sorted(FORTUNES.iterdir())
             if f.suffix != ".dat" and not f.is_symlink() and f.is_file()] if FORTUNES.is_dir() else []
    files += [str(WORDS)] if WORDS.is_file() else []
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train(files, vocab_size=8000, min_frequency=2, show_progress=False)
    trainer.save_model(str(folder))
    return folder


def bench_wordpiece(args):
    """tessera.text.BertTokenizer vs BertTokenizerFast on one padded batch."""
    import tessera.text as tt
    from transformers import BertTokenizerFast

    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    texts = real_texts(args.wordpiece_n)
    kw = dict(padding=True, truncation=True, max_length=128)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.bert or trained_bert_vocab(Path(tmp))
        ours = tt.BertTokenizer.from_pretrained(folder)
        hf = BertTokenizerFast.from_pretrained(str(folder))
    print(f"\nWordPiece: {len(texts)} texts, mean {sum(map(len, texts)) / len(texts):.0f} chars; "
          f"{torch.get_num_threads()} threads; vocab {ours.vocab_size} tokens "
          f"({'uncased' if ours.do_lower_case else 'cased'})")
    a, b = ours(texts, **kw), hf(texts, return_tensors="pt", **kw)
    same = torch.equal(a.input_ids, b["input_ids"]) and torch.equal(a.attention_mask, b["attention_mask"])
    print(f"tessera BertTokenizer vs BertTokenizerFast: ids and masks equal: {same} "
          f"(shape {tuple(a.input_ids.shape)})")
    rates = {"tessera BertTokenizer": rate(lambda t: ours(t, **kw), texts, args.repeats),
             "transformers BertTokenizerFast": rate(lambda t: hf(t, return_tensors="pt", **kw), texts,
                                                    max(1, args.repeats // 2))}
    for name, r in rates.items():
        print(f"{name:32s} {r:12,.0f} texts/s")
    ratio = rates["tessera BertTokenizer"] / rates["transformers BertTokenizerFast"]
    print(f"tessera / transformers BertTokenizerFast: {ratio:.1f}x (goal >= 20x)")


def bench_sentencepiece(args):
    """SentencePieceTokenizer (with LLaVA's "<image>") vs transformers' tokenizer of the same
    folder (tokenizer.model and a LLaVA-1.5 tokenizer_config.json): LLaVA-style prompts, a third
    with "<image>\n" first and a third ending in "</s>"; ids checked equal, then each encodes the
    list (tessera text by text, transformers as one batch call, its fastest)."""
    import shutil

    import tessera.text as tt
    from transformers import AutoTokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    base = real_texts(args.wordpiece_n)
    texts = [("<image>\n" + t if i % 3 == 0 else t + "</s>" if i % 3 == 1 else t) for i, t in enumerate(base)]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(args.spm, Path(tmp) / "tokenizer.model")
        added = {"content": "<image>", "special": True, "normalized": False, "lstrip": False, "rstrip": False,
                 "single_word": False}
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": True, "add_eos_token": False,
            "added_tokens_decoder": {"32000": added}}))
        ours = tt.SentencePieceTokenizer(Path(tmp) / "tokenizer.model", special_tokens=["<image>"])
        hf = AutoTokenizer.from_pretrained(tmp)
        if args.json:  # transformers 5's save of that folder: tokenizer.json alone, read as transformers reads it
            hf.save_pretrained(Path(tmp) / "saved")
            start = time.perf_counter()
            hf = AutoTokenizer.from_pretrained(Path(tmp) / "saved")
            loads = {"transformers": time.perf_counter() - start}
            start = time.perf_counter()
            ours = tt.SentencePieceTokenizer(Path(tmp) / "saved" / "tokenizer.json", special_tokens=["<image>"])
            loads["tessera"] = time.perf_counter() - start
            print("tokenizer.json loaded in " + ", ".join(f"{k} {v:.2f} s" for k, v in loads.items()))
    mine, theirs = [ours.encode(t) for t in texts], hf(texts)["input_ids"]
    print(f"\nSentencePiece: {len(texts)} prompts, mean {sum(map(len, texts)) / len(texts):.0f} chars; "
          f"{torch.get_num_threads()} threads; {args.spm}")
    print(f"ids equal on {sum(a == b for a, b in zip(mine, theirs))} of {len(texts)} prompts" + (
        "" if args.json else " (a space right after a special token is where transformers 5's converted tokenizer "
        "and SentencePiece differ)"))
    rates = {"tessera SentencePieceTokenizer": rate(lambda t: [ours.encode(x) for x in t], texts, args.repeats),
             "transformers LlamaTokenizer": rate(lambda t: hf(t)["input_ids"], texts, max(1, args.repeats // 2))}
    for name, r in rates.items():
        print(f"{name:32s} {r:12,.0f} texts/s")
    print(f"tessera / transformers: {rates['tessera SentencePieceTokenizer'] / rates['transformers LlamaTokenizer']:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="number of texts")
    parser.add_argument("--bpe", type=Path, default=None, help="CLIP merges file")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--which", choices=["all", "clip", "wordpiece", "sentencepiece"], default="all")
    parser.add_argument("--spm", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "assets" /
                        "llama2c_tokenizer.model", help="a LLaMA SentencePiece model")
    parser.add_argument("--json", action="store_true",
                        help="SentencePiece: the folder as transformers 5 saves it (tokenizer.json, no tokenizer.model)")
    parser.add_argument("--wordpiece-n", type=int, default=10000, help="texts of the WordPiece batch")
    parser.add_argument("--bert", type=Path, default=None,
                        help="folder with a BERT vocab.txt (default: train one on the corpus)")
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count())
    if args.which in ("all", "sentencepiece"):
        bench_sentencepiece(args)
    if args.which in ("all", "wordpiece"):
        bench_wordpiece(args)
    if args.which in ("wordpiece", "sentencepiece"):
        return
    import open_clip
    import tessera.text as tt

    # open_clip's tokenizer module turns HF tokenizers' threads off on import; turn them back
    # on so CLIPTokenizerFast gets the same cores as tessera.
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    bpe = args.bpe or tt.default_clip_bpe_path()
    texts = real_texts(args.n)
    print(f"{len(texts)} texts, mean {sum(map(len, texts)) / len(texts):.0f} chars; "
          f"{torch.get_num_threads()} threads; merges {bpe}")

    ours = tt.ClipTokenizer(bpe)
    ref = open_clip.tokenizer.SimpleTokenizer(bpe_path=str(bpe))
    differ = (ours(texts) != ref(texts)).any(dim=1).nonzero().flatten().tolist()
    # The only expected differences: texts that ftfy's mojibake repair rewrites.
    import ftfy

    moji = sum(ftfy.fix_text(texts[i]) != ftfy.fix_text(texts[i], fix_encoding=False)
               for i in differ)
    print(f"tessera vs open_clip: {len(differ)} of {len(texts)} rows differ "
          f"({moji} of them mojibake that ftfy repairs)")

    cold = tt.ClipTokenizer(bpe)
    start = time.perf_counter()
    cold(texts)
    cold_rate = len(texts) / (time.perf_counter() - start)
    rates = {"tessera (cold cache)": cold_rate, "tessera": rate(ours, texts, args.repeats)}
    rates["open_clip"] = rate(ref, texts, max(1, args.repeats // 2))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            hf = hf_clip_tokenizer(Path(bpe), Path(tmp))
            hf_ids = hf(texts[:100], padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
            ok = torch.equal(hf_ids[:, :3], ref(texts[:100])[:, :3])
            print(f"CLIPTokenizerFast agrees with open_clip on the first ids: {ok}")
            rates["transformers CLIPTokenizerFast"] = rate(
                lambda t: hf(t, padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt"), texts, args.repeats)
        except ImportError as e:
            print(f"transformers unavailable: {e}")

    for name, r in rates.items():
        print(f"{name:32s} {r:12,.0f} texts/s")
    for name in ("open_clip", "transformers CLIPTokenizerFast"):
        if name in rates:
            print(f"tessera / {name}: {rates['tessera'] / rates[name]:.1f}x "
                  f"(cold cache {rates['tessera (cold cache)'] / rates[name]:.1f}x)")


if __name__ == "__main__":
    main()
