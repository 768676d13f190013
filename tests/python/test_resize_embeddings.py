"""resize_token_embeddings side by side with transformers on the same weights
(../shared/fixtures/hf): the old rows kept, the new ones where transformers draws them (both near
the old rows' mean: equal to ~1e-5), logits alike, a resized model that transformers loads and
reproduces exactly, generation over the new ids, and refusals by name."""
from __future__ import annotations

import pytest
import torch

import tessera

transformers = pytest.importorskip("transformers")


def _pair(fixture_dir, family="llama", cls="LlamaForCausalLM"):
    d = str(fixture_dir(family))
    return tessera.from_pretrained(d).eval(), getattr(transformers, cls).from_pretrained(d).eval()


@pytest.mark.parametrize("mean_resizing", [True, False])
def test_grows_as_transformers_and_transformers_reproduces_it(fixture_dir, tmp_path, mean_resizing):
    ours, theirs = _pair(fixture_dir)
    v = ours.config.vocab_size
    old = ours.get_input_embeddings().weight.detach().clone()
    assert ours.resize_token_embeddings(v + 5, mean_resizing=mean_resizing) is ours.get_input_embeddings()
    theirs.resize_token_embeddings(v + 5, mean_resizing=mean_resizing)
    ours_e, theirs_e = ours.get_input_embeddings(), theirs.get_input_embeddings()
    assert ours_e.weight.shape == theirs_e.weight.shape == (v + 5, old.size(1))
    assert ours.config.vocab_size == theirs.config.vocab_size == v + 5
    assert ours_e.num_embeddings == ours.lm_head.out_features == v + 5
    assert torch.equal(ours_e.weight[:v], old)
    if mean_resizing:  # both draw within ~1e-5 of the old rows' mean
        torch.testing.assert_close(ours_e.weight[v:], theirs_e.weight[v:], atol=1e-4, rtol=0)
        torch.testing.assert_close(ours.lm_head.weight[v:], theirs.lm_head.weight[v:], atol=1e-4, rtol=0)
    else:  # normal(0, initializer_range), as the model's init
        assert 0.3 * 0.02 < ours_e.weight[v:].std() < 3 * 0.02
    ids = torch.tensor([[1, 5, v + 2, 7, v + 4]])
    with torch.no_grad():
        logits = ours(ids).logits
        assert logits.shape[-1] == v + 5
        ours.save_pretrained(str(tmp_path))
        again = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path)).eval()
        torch.testing.assert_close(again(ids).logits, logits, atol=1e-5, rtol=1e-5)
    out = ours.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 8)
    ours.train()
    ours(ids, labels=ids).loss.backward()  # the new rows train
    assert ours_e.weight.grad.shape == (v + 5, old.size(1)) and ours_e.weight.grad[v + 2].abs().sum() > 0


def test_old_tokens_keep_their_logits(fixture_dir):
    ours, _ = _pair(fixture_dir)
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        before = ours(ids).logits
        ours.resize_token_embeddings(ours.config.vocab_size + 3)
        after = ours(ids).logits
    assert torch.equal(after[..., : before.shape[-1]], before)


def test_pad_to_multiple_of_and_shrinking_as_transformers(fixture_dir):
    ours, theirs = _pair(fixture_dir)
    v = ours.config.vocab_size
    for model in (ours, theirs):
        model.resize_token_embeddings(v + 1, pad_to_multiple_of=64)
    assert ours.config.vocab_size == theirs.config.vocab_size
    for model in (ours, theirs):
        model.resize_token_embeddings(v - 10)
    assert ours.get_input_embeddings().weight.shape == theirs.get_input_embeddings().weight.shape
    torch.testing.assert_close(ours.lm_head.weight, theirs.lm_head.weight)
    with pytest.raises((ValueError, IndexError), match=str(v - 10)):
        ours(torch.tensor([[1, v - 5]]))  # an id past the new end is refused by name


def test_a_tied_head_stays_tied(fixture_dir):
    config = tessera.from_pretrained(str(fixture_dir("llama"))).config.to_dict()
    model = tessera.LlamaForCausalLM(dict(config, tie_word_embeddings=True))
    v = config["vocab_size"]
    model.resize_token_embeddings(v + 4)
    assert model.get_output_embeddings() is model.get_input_embeddings()
    with torch.no_grad():
        hidden = model(torch.tensor([[1, 2]]), output_hidden_states=True).hidden_states[-1]
        logits = model(torch.tensor([[1, 2]])).logits
    torch.testing.assert_close(logits, hidden @ model.get_input_embeddings().weight.T, atol=1e-5, rtol=1e-5)


def test_llava_resizes_its_language_model(fixture_dir):
    ours, theirs = _pair(fixture_dir, "llava", "LlavaForConditionalGeneration")
    v = ours.config.text_config.vocab_size
    for model in (ours, theirs):
        model.resize_token_embeddings(v + 8)
    assert ours.config.text_config.vocab_size == theirs.config.text_config.vocab_size == v + 8
    assert ours.language_model.lm_head.out_features == v + 8
    torch.testing.assert_close(ours.get_output_embeddings().weight, theirs.get_output_embeddings().weight,
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("family,cls", [("llama", "LlamaForCausalLM"), ("llava", "LlavaForConditionalGeneration"),
                                        ("blip2", "Blip2ForConditionalGeneration")])
def test_a_copy_of_a_resized_model_is_resized(fixture_dir, family, cls):
    """LLaVA's and BLIP-2's copy built its language model from the parent's own options, still at
    the old size: the copy held the new rows but refused the new ids (EMA / AveragedModel copies)."""
    import copy

    from safetensors.torch import load_file

    ours, _ = _pair(fixture_dir, family, cls)
    v = ours.config.get("text_config", ours.config)["vocab_size"]
    ours.resize_token_embeddings(v + 8)
    twin = copy.deepcopy(ours)
    inputs = {k: t for k, t in load_file(str(fixture_dir(family) / "io.safetensors")).items()
              if k in ("input_ids", "pixel_values", "attention_mask")}
    inputs["input_ids"] = inputs["input_ids"].clone()
    inputs["input_ids"][:, -1] = v + 3  # a new token
    with torch.no_grad():
        torch.testing.assert_close(twin(**inputs).logits, ours(**inputs).logits)
        out = twin.generate(**inputs, max_new_tokens=2, num_beams=2, do_sample=False)
    assert out.shape[0] == inputs["input_ids"].shape[0]


def test_bad_requests_are_refused_by_name(fixture_dir):
    ours, _ = _pair(fixture_dir)
    v = ours.config.vocab_size
    for bad in (0, -3, "12", 2.0, True):
        with pytest.raises(ValueError, match="new_num_tokens must be a positive int"):
            ours.resize_token_embeddings(bad)
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive int"):
        ours.resize_token_embeddings(v + 1, pad_to_multiple_of=0)
    tessera.lora.apply_lora(ours, ["lm_head"], r=2)
    with pytest.raises(ValueError, match="lm_head holds a LoRA adapter .* resize the vocabulary before adding"):
        ours.resize_token_embeddings(v + 2)
    assert ours.config.vocab_size == v and ours.get_input_embeddings().weight.shape[0] == v  # untouched
    padded = tessera.LlamaForCausalLM(dict(ours.config.to_dict(), pad_token_id=v - 5))
    with pytest.raises(ValueError, match=rf"pad_token_id {v - 5} would be past the end of a vocabulary of {v - 10}"):
        padded.resize_token_embeddings(v - 10)
    llava = tessera.from_pretrained(str(fixture_dir("llava")))
    image = llava.config.image_token_index
    with pytest.raises(ValueError, match=rf"image_token_index {image} would be past the end"):
        llava.resize_token_embeddings(image)
    clip = tessera.from_pretrained(str(fixture_dir("clip")))
    with pytest.raises(NotImplementedError, match="only models whose language model is tessera's LLaMA"):
        clip.resize_token_embeddings(10)
