"""What a researcher coming from transformers, timm or open_clip reaches for, side by side with
those libraries: num_parameters, get_input/output_embeddings, return_dict=False, the `dtype`
of from_pretrained and save_pretrained, gradient_checkpointing_enable (timm's
set_grad_checkpointing), generate's max_length and num_return_sequences, and open_clip's
create_model_and_transforms / get_tokenizer."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tessera
from tessera import registry
from test_contract import EXAMPLES

transformers = pytest.importorskip("transformers")


def _hf_and_ours(arch: str):
    cls = next(c for c in registry.registered_classes() if (c.architecture or c.__name__) == arch)
    config = {k: v for k, v in EXAMPLES[arch][0].items() if k != "model_type"}
    hf = getattr(transformers, arch)(transformers.AutoConfig.for_model(cls.model_type, **config))
    return hf, cls(config)


HF_ARCHS = [a for a in EXAMPLES if hasattr(transformers, a)]


def _answer(call):
    """(module type, weight shape) of get_*_embeddings, None, or the exception raised."""
    try:
        m = call()
    except NotImplementedError:
        return NotImplementedError
    if m is None:
        return None
    return type(m).__name__, tuple(m.weight.shape) if hasattr(m, "weight") else None


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_counts_and_embeddings_answer_as_transformers(arch):
    hf, ours = _hf_and_ours(arch)
    for kw in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
        if kw.get("only_trainable") and arch.startswith("ViTMAE"):
            continue  # transformers' MAE keeps its fixed sin-cos table as a frozen parameter, tessera as a buffer
        assert ours.num_parameters(**kw) == hf.num_parameters(**kw), kw
    assert _answer(ours.get_input_embeddings) == _answer(hf.get_input_embeddings)
    assert _answer(ours.get_output_embeddings) == _answer(hf.get_output_embeddings)


def test_the_embedding_modules_are_called_as_in_transformers(fixture_dir):
    """get_input_embeddings()(ids) builds inputs_embeds and get_output_embeddings()(hidden) gives
    logits in transformers; tessera's nodes refused to be called ("run by C++ inside its parent")."""
    import transformers

    folder = str(fixture_dir("llama"))
    ours, hf = tessera.from_pretrained(folder), transformers.LlamaForCausalLM.from_pretrained(folder)
    ids = torch.tensor([[1, 5, 9, 4]])
    embeds = ours.get_input_embeddings()(ids)
    torch.testing.assert_close(embeds, hf.get_input_embeddings()(ids))
    torch.testing.assert_close(ours(inputs_embeds=embeds).logits, hf(inputs_embeds=embeds).logits, atol=1e-4, rtol=1e-4)
    hidden = torch.randn(1, 4, ours.config["hidden_size"])
    torch.testing.assert_close(ours.get_output_embeddings()(hidden), hf.get_output_embeddings()(hidden),
                               atol=1e-5, rtol=1e-5)
    ours.get_output_embeddings()(hidden).square().sum().backward()  # gradients reach the weight
    hf.get_output_embeddings()(hidden).square().sum().backward()
    torch.testing.assert_close(ours.get_output_embeddings().weight.grad, hf.get_output_embeddings().weight.grad,
                               atol=1e-5, rtol=1e-4)
    with pytest.raises(IndexError, match="outside the embedding table"):
        ours.get_input_embeddings()(torch.tensor([[10 ** 6]]))


def test_return_dict_false_gives_transformers_tuples(fixture_dir):
    """Nested outputs are tuples too; every element equals transformers' (CLIP: logits, embeds and
    both towers' outputs; LLaMA: loss and logits before transformers' cache object)."""
    for family, cls in (("clip", transformers.CLIPModel), ("llama", transformers.LlamaForCausalLM)):
        folder = fixture_dir(family)
        io = load_file(str(folder / "io.safetensors"))
        keys = ("input_ids", "attention_mask", "pixel_values") if family == "clip" else ("input_ids",)
        inputs = {k: io[k] for k in keys}
        if family == "llama":
            inputs["labels"] = io["input_ids"]
        ours = tessera.from_pretrained(str(folder))(**inputs, return_dict=False)
        theirs = cls.from_pretrained(str(folder)).eval()(**inputs, return_dict=False)
        if family == "llama":
            theirs = theirs[:2]
        assert isinstance(ours, tuple)

        def same(a, b):
            if isinstance(b, tuple):
                assert isinstance(a, tuple) and len(a) >= len(b)
                for x, y in zip(a, b):
                    same(x, y)
            else:
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

        same(ours[:len(theirs)], theirs)


def test_dtype_round_trips_with_transformers(fixture_dir, tmp_path):
    folder = str(fixture_dir("llama"))
    assert tessera.from_pretrained(folder).dtype == torch.float32             # config.json: float32
    assert tessera.from_pretrained(folder, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert tessera.from_pretrained(folder, torch_dtype="float16").dtype == torch.float16
    # tessera saves bf16: the config says so, and both libraries load it in bf16 by default.
    ours = tessera.from_pretrained(folder, dtype="bfloat16")
    ours.save_pretrained(str(tmp_path / "ours"))
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["dtype"] == "bfloat16"
    assert transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "ours")).dtype == torch.bfloat16
    assert tessera.from_pretrained(str(tmp_path / "ours")).dtype == torch.bfloat16
    # transformers saves bf16 without the key: tessera reads the weights' dtype, as transformers does.
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    hf.save_pretrained(str(tmp_path / "theirs"))
    config = json.loads((tmp_path / "theirs" / "config.json").read_text())
    config.pop("dtype", None)
    (tmp_path / "theirs" / "config.json").write_text(json.dumps(config))
    assert transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "theirs")).dtype == torch.bfloat16
    assert tessera.from_pretrained(str(tmp_path / "theirs")).dtype == torch.bfloat16
    # A given state_dict's dtype is what the config records (an fp32 model saving bf16 tensors).
    fp32 = tessera.from_pretrained(folder)
    fp32.save_pretrained(str(tmp_path / "given"), state_dict={k: v.bfloat16() for k, v in fp32.state_dict().items()})
    assert json.loads((tmp_path / "given" / "config.json").read_text())["dtype"] == "bfloat16"
    for bad, match in (({"dtype": "int8"}, "floating-point"), ({"dtype": "float17"}, "not a dtype"),
                       ({"dtype": torch.float32, "torch_dtype": torch.bfloat16}, "disagree")):
        with pytest.raises(ValueError, match=match):
            tessera.from_pretrained(folder, **bad)


def test_gradient_checkpointing_names(fixture_dir):
    model = tessera.from_pretrained(str(fixture_dir("llama"))).train()
    ids = load_file(str(fixture_dir("llama") / "io.safetensors"))["input_ids"]
    plain = model(input_ids=ids, labels=ids).loss
    assert not model.is_gradient_checkpointing
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_gradient_checkpointing
    torch.testing.assert_close(model(input_ids=ids, labels=ids).loss, plain)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    model.set_grad_checkpointing()  # timm's name
    assert model.is_gradient_checkpointing
    with pytest.raises(ValueError, match="preserve_rng_state"):
        model.gradient_checkpointing_enable({"preserve_rng_state": False})


def _frozen_input_path(family, fixture_dir):
    """A model whose first checkpointed layer gets inputs that need no gradient, and its batch."""
    folder = fixture_dir(family)
    model, io = tessera.from_pretrained(str(folder)).train(), load_file(str(folder / "io.safetensors"))
    if family == "llama":  # LoRA on a frozen base
        tessera.lora.apply_lora(model, ["q_proj", "v_proj"], r=4, lora_alpha=8)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
        return model, lambda m: m(input_ids=io["input_ids"], labels=io["input_ids"]).loss
    for part in (model.vision_model.embeddings, model.vision_model.pre_layrnorm, model.text_model.embeddings):
        part.requires_grad_(False)
    return model, lambda m: m(input_ids=io["input_ids"], attention_mask=io["attention_mask"],
                              pixel_values=io["pixel_values"], return_loss=True).loss


@pytest.mark.parametrize("family", ["llama", "clip"])
def test_checkpointing_trains_every_parameter_when_the_inputs_need_no_gradient(fixture_dir, family):
    """The C++ checkpoint is reentrant: it joined the graph only through its inputs, so with frozen
    embeddings every layer's gradient was silently None, and LoRA failed in backward."""
    grads = []
    for checkpointing in (False, True):
        model, loss = _frozen_input_path(family, fixture_dir)
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(0)  # LoRA's dropout draws the same masks in both runs
        loss(model).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    plain, checkpointed = grads
    assert all(g is not None for g in plain.values())
    for name, g in plain.items():
        assert checkpointed[name] is not None, name
        torch.testing.assert_close(checkpointed[name], g, atol=1e-6, rtol=1e-5, msg=name)


def test_generate_max_length_counts_the_prompt_as_transformers(fixture_dir):
    folder = str(fixture_dir("llama"))
    ids = load_file(str(fixture_dir("llama") / "io.safetensors"))["input_ids"][:1]
    ours = tessera.from_pretrained(folder)
    theirs = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    for kw in ({"max_length": ids.shape[1] + 5}, {"max_length": 40, "max_new_tokens": 4}):
        expected = theirs.generate(ids, do_sample=False, **kw)
        assert torch.equal(ours.generate(ids, do_sample=False, **kw), expected), kw
    for lib in (theirs, ours):  # a max_length the prompt already fills: both refuse
        with pytest.raises(ValueError, match="max_length"):
            lib.generate(ids, do_sample=False, max_length=ids.shape[1])


def test_num_return_sequences_repeats_each_prompt_and_its_images():
    """n samples per prompt equal sampling from the prompts repeated by hand (the same generator
    draws); LLaVA's images follow their prompts; greedy decoding and fewer beams refuse it."""
    llava = tessera.LlavaForConditionalGeneration(EXAMPLES["LlavaForConditionalGeneration"][0]).eval()
    tokens = llava.config["image_seq_length"]
    ids = torch.cat([torch.full((2, tokens), 40), torch.arange(6).view(2, 3) + 1], 1)
    pixels = torch.randn(2, 3, 16, 16)
    sample = dict(do_sample=True, max_new_tokens=4, eos_token_id=None, top_k=0)
    got = llava.generate(ids, pixel_values=pixels, num_return_sequences=3, generator=torch.Generator().manual_seed(1),
                         **sample)
    by_hand = llava.generate(ids.repeat_interleave(3, 0), pixel_values=pixels.repeat_interleave(3, 0),
                             generator=torch.Generator().manual_seed(1), **sample)
    assert got.shape[0] == 6 and torch.equal(got, by_hand)
    lm = tessera.LlamaForCausalLM(EXAMPLES["LlamaForCausalLM"][0]).eval()
    with pytest.raises(ValueError, match="do_sample=True"):
        lm.generate(ids[:, tokens:], num_return_sequences=2)
    with pytest.raises(ValueError, match="num_return_sequences 3 must be <= num_beams 2"):
        lm.generate(ids[:, tokens:], num_return_sequences=3, num_beams=2)


def test_open_clip_entry_points_match_open_clip():
    open_clip = pytest.importorskip("open_clip")
    from PIL import Image

    model, train, val = tessera.create_model_and_transforms("ViT-B-32")
    _, their_train, their_val = open_clip.create_model_and_transforms("ViT-B-32")
    assert isinstance(model, tessera.CLIPModel)
    rng = np.random.default_rng(0)
    for h, w in ((300, 240), (224, 224), (97, 131)):
        smooth = np.kron(rng.random((h // 8 + 1, w // 8 + 1, 3)), np.ones((8, 8, 1)))[:h, :w]
        image = Image.fromarray((smooth * 255).astype("uint8"))
        # PIL's resize against ours: within two uint8 levels after Normalize (as tests/python/test_data.py).
        assert (val(image) - their_val(image)).abs().max() <= 2.0 / 255 / 0.26130258 + 1e-6
        assert train(image).shape == their_train(image).shape == (3, 224, 224)
    texts = ["a photo of a cat", "a diagram", ""]
    assert torch.equal(tessera.get_tokenizer("ViT-B-32")(texts), open_clip.get_tokenizer("ViT-B-32")(texts))
    lowp, preprocess = tessera.create_model_from_pretrained("ViT-B-32", precision="bf16")
    assert lowp.dtype == torch.bfloat16 and callable(preprocess)
    with pytest.raises(ValueError, match="CLIP models"):
        tessera.create_model_and_transforms("llama-50m")
    with pytest.raises(ValueError, match="precision"):
        tessera.create_model_and_transforms("ViT-B-32", precision="fp8")


def test_tied_head_and_copies_keep_what_they_say():
    """A tied LM head is the input embedding's matrix (transformers answers its tied lm_head);
    a deep copy of a checkpointing model checkpoints too (C++'s clone did not, the flag said so)."""
    from _autograd_saved import saved_bytes

    config = dict(EXAMPLES["LlamaForCausalLM"][0], tie_word_embeddings=True)
    ours = tessera.LlamaForCausalLM(config)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    assert ours.get_output_embeddings().weight.shape == theirs.get_output_embeddings().weight.shape
    assert ours.get_output_embeddings().weight is ours.get_input_embeddings().weight
    ours.train().gradient_checkpointing_enable()
    copy = __import__("copy").deepcopy(ours)
    assert copy.is_gradient_checkpointing
    ids = torch.arange(30).view(3, 10) % 50
    assert saved_bytes(copy, lambda: copy(input_ids=ids, labels=ids), False) == \
        saved_bytes(ours, lambda: ours(input_ids=ids, labels=ids), False)


def test_loading_in_bf16_does_not_go_through_fp32(tmp_path):
    """The peak of from_pretrained(dtype=bf16) of a bf16 folder stays near the file's size (the
    fp32 model that was built, converted and then cast peaked at 3x)."""
    import subprocess
    import sys

    config = dict(EXAMPLES["LlamaForCausalLM"][0], vocab_size=4000, hidden_size=512, intermediate_size=1024)
    tessera.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(str(tmp_path))
    size = (tmp_path / "model.safetensors").stat().st_size
    probe = ("import sys, tessera\n"
             "status = lambda k: int(open('/proc/self/status').read().split(k + ':')[1].split()[0]) * 1024\n"
             "open('/proc/self/clear_refs', 'w').write('5'); base = status('VmRSS')\n"
             "tessera.from_pretrained(sys.argv[1])\n"
             "print(status('VmHWM') - base)")
    run = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "MALLOC_MMAP_THRESHOLD_": "262144"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.split()[-1]) < 1.6 * size


def test_from_pretrained_takes_config_overrides_as_transformers_config_keywords(fixture_dir):
    """A recipe's `model.config` beside `model.pretrained` was silently dropped by the trainer."""
    folder = str(fixture_dir("clip"))
    ours = tessera.CLIPModel.from_pretrained(folder, config_overrides={"vision_config": {"attention_dropout": 0.25}})
    assert ours.config["vision_config"]["attention_dropout"] == 0.25
    plain = tessera.CLIPModel.from_pretrained(folder)
    for (name, a), b in zip(ours.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="config_overrides.vision_config: unknown key 'atention_dropout'"):
        tessera.CLIPModel.from_pretrained(folder, config_overrides={"vision_config": {"atention_dropout": 0.25}})
    with pytest.raises(ValueError, match="tensors do not fit"):
        tessera.CLIPModel.from_pretrained(folder, config_overrides={"projection_dim": 7})
