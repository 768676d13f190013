"""transformers' `streamer=` (TextStreamer, TextIteratorStreamer: any BaseStreamer) in generate:
the streamer receives what transformers' generate hands it, call for call (the prompt, then each
step's new ids, then end()), and generate returns the ids it returns without one. It was refused
as an unknown argument, so a notebook's TextStreamer needed tessera's own `stream`."""
import pytest
import torch

import tessera

from _peaked_llama import peaked_llama_pair

transformers = pytest.importorskip("transformers")


class Recorder(transformers.generation.streamers.BaseStreamer):
    def __init__(self):
        self.calls = []

    def put(self, value):
        self.calls.append(value.tolist())

    def end(self):
        self.calls.append("end")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return peaked_llama_pair(tmp_path_factory, 5, eos_token_id=3)


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=8), dict(max_new_tokens=12, repetition_penalty=1.4),
                                    dict(max_new_tokens=8, min_new_tokens=3, eos_token_id=[3, 7, 11, 19])])
def test_a_streamer_receives_what_transformers_hands_it(llama, kwargs):
    hf, ours = llama
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    theirs, mine = Recorder(), Recorder()
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, streamer=theirs, **kwargs)
    got = ours.generate(ids, streamer=mine, **kwargs)
    assert torch.equal(got, want) and mine.calls == theirs.calls and mine.calls[-1] == "end"
    assert torch.equal(got, ours.generate(ids, **kwargs))


def test_a_streamer_over_inputs_embeds_gets_the_empty_prompt_as_transformers(llama):
    hf, ours = llama
    embeds = hf.get_input_embeddings()(torch.tensor([[1, 5, 6, 7]])).detach()
    theirs, mine = Recorder(), Recorder()
    want = hf.generate(inputs_embeds=embeds, do_sample=False, max_new_tokens=5, streamer=theirs)
    got = ours.generate(inputs_embeds=embeds, max_new_tokens=5, streamer=mine)
    assert torch.equal(got, want) and mine.calls == theirs.calls


def test_llava_streams_as_transformers(fixture_dir):
    from safetensors.torch import load_file

    d = fixture_dir("llava")
    io = load_file(str(d / "io.safetensors"))
    ids, px = io["input_ids"], io["pixel_values"]
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(d)).eval()
    ours = tessera.from_pretrained(str(d))
    theirs, mine = Recorder(), Recorder()
    want = hf.generate(input_ids=ids, pixel_values=px, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=6, streamer=theirs)
    got = ours.generate(ids, pixel_values=px, max_new_tokens=6, streamer=mine)
    assert torch.equal(got, want) and mine.calls == theirs.calls


def test_text_streamer_prints_the_answer(llama, capsys):
    class Words:  # the few methods TextStreamer calls
        def decode(self, ids, **kwargs):
            return " ".join(f"w{i}" for i in ids)

    _, ours = llama
    ours.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=4,
                  streamer=transformers.TextStreamer(Words(), skip_prompt=True))
    printed = capsys.readouterr().out
    assert printed.strip() and "w1 w5 w6" not in printed  # the answer, not the prompt


def test_a_streamer_with_beam_search_is_refused_as_transformers_refuses_it(llama):
    _, ours = llama
    with pytest.raises(ValueError, match="streamer cannot be used with beam search"):
        ours.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=4, num_beams=2, streamer=Recorder())


def test_blip2_streams_as_transformers(fixture_dir):
    from safetensors.torch import load_file

    d = fixture_dir("blip2")
    io = load_file(str(d / "io.safetensors"))
    hf = transformers.Blip2ForConditionalGeneration.from_pretrained(str(d)).eval()
    ours = tessera.from_pretrained(str(d))
    theirs, mine = Recorder(), Recorder()
    want = hf.generate(pixel_values=io["pixel_values"], input_ids=io["input_ids"], do_sample=False, max_new_tokens=5,
                       streamer=theirs)
    got = ours.generate(io["pixel_values"], io["input_ids"], max_new_tokens=5, streamer=mine)
    assert torch.equal(got, want) and mine.calls == theirs.calls
