"""Chat and evaluation pass their own stop ids (the template's), which replace the model's: the
ids generate stops at by itself must be among them. `answer_stops` read them from
generation_config.json alone, so a folder without one (stop ids in config.json, which
transformers derives its generation config from) answered past the stop transformers ends at."""
import json
from types import SimpleNamespace

import pytest
import torch

import tessera
from tessera.chat import answer_stops

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
TOKENIZER = SimpleNamespace(eos_id=2)  # answer_stops reads eos alone without a template
IDS = torch.tensor([[5, 11, 9, 40]])


def _folder(tmp_path, eos, in_file):
    """A LLaMA folder whose stop ids `eos` are in generation_config.json or, without one, config.json."""
    torch.manual_seed(3)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    hf.save_pretrained(tmp_path)
    edited = tmp_path / ("generation_config.json" if in_file else "config.json")
    edited.write_text(json.dumps({**json.loads(edited.read_text()), "eos_token_id": eos}))
    if not in_file:
        (tmp_path / "generation_config.json").unlink()
    return transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval(), tessera.from_pretrained(str(tmp_path))


def _reached(tmp_path):
    """A token the greedy path reaches after its first new one: a stop id that ends it early."""
    _, ours = _folder(tmp_path / "free", None, in_file=True)
    path = ours.generate(IDS, max_new_tokens=12)[0, 4:].tolist()
    return next(t for t in path[2:] if t not in (2, *path[:2]))


@pytest.mark.parametrize("in_file", [False, True], ids=["config.json", "generation_config.json"])
def test_chat_stops_where_generate_stops_by_itself(tmp_path, in_file):
    stop = _reached(tmp_path)
    hf, ours = _folder(tmp_path / "run", [2, stop], in_file)
    stops, cut = answer_stops(None, TOKENIZER, ours)
    assert set(stops) == set(cut) == {2, *hf.generation_config.eos_token_id}
    want = hf.generate(IDS, attention_mask=torch.ones_like(IDS), max_new_tokens=12, do_sample=False)
    assert want.shape[1] < 4 + 12 and torch.equal(ours.generate(IDS, max_new_tokens=12, eos_token_id=stops), want)


def test_a_file_without_stop_ids_leaves_the_tokenizers_eos(tmp_path):
    _, ours = _folder(tmp_path, None, in_file=True)
    assert answer_stops(None, TOKENIZER, ours) == ([2], {2})
