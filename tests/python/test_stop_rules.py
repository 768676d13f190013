"""generate's `stop_strings` (with `tokenizer=`, tessera's or transformers') and `max_time`, side by
side with transformers: the string rule row by row against transformers' StopStringCriteria (byte
tokens, characters split over them, a byte-level BPE, overhangs on both sides), then generate's
ids, padding and beams, a folder's generation_config.json, and bad values named. Both settings
were refused by name."""
import json
import random
import shutil

import pytest
import torch

import tessera
from tessera.models.stop_rules import _ends_with, token_texts

from _peaked_llama import peaked_llama_pair

transformers = pytest.importorskip("transformers")

TEXT = "The stopper stopped at the stop. Once upon a time, Lily \u2014 caf\u00e9 na\u00efve \u65e5\u672c \n end"
STOPS = ["stop", "op", "st", " the", "\n", "\u00e9", "\u672c", "Lily \u2014", "time,", "a", "end"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory, shared_dir):
    """transformers' LLaMA tokenizer and tessera's, over the same SentencePiece model."""
    folder = tmp_path_factory.mktemp("tokenizer")
    shutil.copy(shared_dir / "assets" / "llama2c_tokenizer.model", folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer", "add_bos_token": true}')
    return (transformers.AutoTokenizer.from_pretrained(str(folder)),
            tessera.SentencePieceTokenizer(str(folder / "tokenizer.model")))


def _byte_level_tokenizer():
    """A small GPT-2-style byte-level BPE (transformers' other byte mode), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT] * 20, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok)


def _rows(ids, seed, vocab):
    rng = random.Random(seed)
    rows = [ids[start:end] for end in range(1, len(ids) + 1) for start in (0, max(0, end - 3))]
    return rows + [[rng.randrange(vocab) for _ in range(rng.randrange(1, 8))] for _ in range(200)]


def _decide(texts, row, stops):
    window = max(len(s.encode()) for s in stops)
    return any(_ends_with(row[-window:], texts, s.encode()) for s in stops)


def test_the_string_rule_equals_transformers_row_by_row(tokenizers):
    hf_tok, our_tok = tokenizers
    assert token_texts(hf_tok) == token_texts(our_tok)  # each id's text, as transformers cleans its vocabulary
    byte_level = _byte_level_tokenizer()
    for tok in (hf_tok, byte_level):
        texts = token_texts(tok)
        ids = tok(TEXT, add_special_tokens=False).input_ids
        hits = 0
        for stops in [[s] for s in STOPS] + [STOPS[:3], STOPS[5:]]:
            theirs = transformers.StopStringCriteria(tok, stops)
            for row in _rows(ids, len(stops), len(texts)):
                want = bool(theirs(torch.tensor([row]), None)[0])
                assert _decide(texts, row, stops) == want, (stops, tok.convert_ids_to_tokens(row))
                hits += want
        assert hits > 100  # the rows reach every kind of match, not only misses


@pytest.mark.parametrize("beams", [1, 2])
def test_generate_with_stop_strings_equals_transformers(tmp_path_factory, tokenizers, beams):
    hf_tok, our_tok = tokenizers
    hf, ours = peaked_llama_pair(tmp_path_factory, 19, vocab_size=32000, eos_token_id=2, pad_token_id=0)
    ids = torch.tensor([hf_tok("The cat").input_ids, hf_tok("A dog").input_ids])
    free = ours.generate(ids, max_new_tokens=12, eos_token_id=[])
    text = hf_tok.decode(free[0, ids.shape[1]:])
    stop = next(text[i:i + 3] for i in range(2, len(text) - 3) if " " not in text[i:i + 3])  # inside a word
    kwargs = dict(max_new_tokens=12, num_beams=beams, stop_strings=[stop])
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, tokenizer=hf_tok, **kwargs)
    if beams == 1:  # the first row ends at the string and is padded
        assert want[0, -1] == 0 != free[0, -1]
    for tok in (hf_tok, our_tok):
        assert torch.equal(ours.generate(ids, tokenizer=tok, **kwargs), want)
    # From the folder's generation_config.json, as transformers reads it there.
    ours.generation_config.stop_strings = stop
    assert torch.equal(ours.generate(ids, tokenizer=our_tok, max_new_tokens=12, num_beams=beams), want)
    # The empty string is in every token's text: each row ends at its first new token, as there.
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, tokenizer=hf_tok,
                       **{**kwargs, "stop_strings": ""})
    assert torch.equal(ours.generate(ids, tokenizer=our_tok, **{**kwargs, "stop_strings": ""}), want)
    assert beams > 1 or want.shape[1] == ids.shape[1] + 1


def test_max_time_ends_every_row_as_transformers(tmp_path_factory, tmp_path):
    hf, ours = peaked_llama_pair(tmp_path_factory, 5, eos_token_id=2, pad_token_id=0)
    ids = torch.randint(3, 97, (2, 4), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, max_time=0.0)
    assert want.shape == (2, 5)  # the first token is always made; the clock ends the rest
    assert torch.equal(ours.generate(ids, max_new_tokens=8, max_time=0.0), want)
    slow = dict(max_new_tokens=8, eos_token_id=[])
    assert torch.equal(ours.generate(ids, max_time=600, **slow), ours.generate(ids, **slow))
    ours.save_pretrained(str(tmp_path))
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "max_time": 0.0}))
    assert tessera.from_pretrained(str(tmp_path)).generate(ids, max_new_tokens=8).shape == (2, 5)


def test_bad_values_are_named(tokenizers):
    _, our_tok = tokenizers
    model = tessera.LlamaForCausalLM(dict(vocab_size=32000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, max_position_embeddings=32))
    ids = torch.tensor([[1, 5]])
    with pytest.raises(ValueError, match=r"stop_strings \['x'\] need the model's tokenizer: pass it as tokenizer="):
        model.generate(ids, stop_strings=["x"])
    for value, message in (([3], r"stop_strings\[0\]: expected a string"), ([], r"stop_strings \[\] names no string")):
        with pytest.raises(ValueError, match=message):  # transformers: a TypeError and an IndexError
            model.generate(ids, stop_strings=value, tokenizer=our_tok)
    for value in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="max_time(: expected a number| must be a number of seconds >= 0)"):
            model.generate(ids, max_time=value)
    with pytest.raises(TypeError, match="tokenizer must be tessera's SentencePieceTokenizer or a transformers"):
        model.generate(ids, stop_strings="x", tokenizer=object())


def test_llava_generate_takes_stop_strings_as_transformers(fixture_dir, tokenizers):
    from safetensors.torch import load_file

    hf_tok, our_tok = tokenizers
    folder = fixture_dir("llava")
    io = load_file(str(folder / "io.safetensors"))
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(folder)).eval()
    ours = tessera.from_pretrained(str(folder))
    ids, px = io["input_ids"], io["pixel_values"]
    free = ours.generate(ids, pixel_values=px, max_new_tokens=10, eos_token_id=[], pad_token_id=0)
    texts = token_texts(our_tok)
    stop = next(_utf8(texts[i]) for i in free[0, ids.shape[1] + 1:-2].tolist() if _utf8(texts[i]))  # a whole token
    kwargs = dict(max_new_tokens=10, stop_strings=[stop], pad_token_id=0)
    want = hf.generate(input_ids=ids, pixel_values=px, do_sample=False, tokenizer=hf_tok, **kwargs)
    assert want.shape[1] < free.shape[1]
    assert torch.equal(ours.generate(ids, pixel_values=px, tokenizer=our_tok, **kwargs), want)


def _utf8(text: bytes) -> str:
    try:
        return text.decode("utf-8").strip()
    except UnicodeDecodeError:  # a byte token, part of a character
        return ""
