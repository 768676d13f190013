"""LoRA in PEFT's names and files: a fresh adapter changes nothing, merged equals unmerged, only
the adapters train, rsLoRA's scale; adapters written by `peft` load onto tessera's LLaMA and LLaVA
(transformers 5's in-memory key layout) with equal outputs, and tessera's adapters load in
`peft` onto transformers' LLaMA with equal outputs; a pattern that matches nothing is an error."""
import json
import shutil

import pytest
import torch

import tessera
from tessera import lora
from _tiny_llama import LLAMA

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _randomize_adapters(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)


def test_fresh_adapter_is_a_no_op_merge_equals_unmerged_and_only_adapters_train():
    torch.manual_seed(0)
    model = tessera.LlamaForCausalLM(LLAMA)
    ids = torch.randint(0, 60, (2, 7))
    base = model(ids).logits
    chosen = lora.apply_lora(model, ["q_proj", "v_proj"], r=4, lora_alpha=8)
    assert len(chosen) == 4 and torch.equal(model(ids).logits, base)
    _randomize_adapters(model)
    adapted = model(ids).logits
    assert not torch.allclose(adapted, base)
    lora.merge_lora(model)
    torch.testing.assert_close(model(ids).logits, adapted, atol=1e-5, rtol=1e-5)
    lora.unmerge_lora(model)
    torch.testing.assert_close(model(ids).logits, adapted, atol=1e-5, rtol=1e-5)
    import copy

    assert torch.equal(copy.deepcopy(model)(ids).logits, model(ids).logits)  # clones keep their adapters
    model(ids, labels=ids).loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained == {n for n, _ in model.named_parameters() if "lora_" in n} and len(trained) == 8


def test_rslora_scales_by_alpha_over_sqrt_r():
    torch.manual_seed(0)
    a, b = tessera.LlamaForCausalLM(LLAMA), tessera.LlamaForCausalLM(LLAMA)
    b.load_state_dict(a.state_dict())
    lora.apply_lora(a, ["o_proj"], r=4, lora_alpha=8, use_rslora=True)   # scale 4
    lora.apply_lora(b, ["o_proj"], r=4, lora_alpha=16)                   # scale 4
    _randomize_adapters(a)
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 60, (1, 5))
    torch.testing.assert_close(a(ids).logits, b(ids).logits)


def _hf_llama(tmp_path):
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    hf.save_pretrained(tmp_path / "base")
    return hf


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_adapter_loads_onto_tessera(tmp_path, rslora):
    hf = _hf_llama(tmp_path)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], use_rslora=rslora)
    peft_model = peft.get_peft_model(hf, cfg)
    _randomize_adapters(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    ours = tessera.from_pretrained(str(tmp_path / "base"))
    lora.load_adapter(ours, str(tmp_path / "adapter"))
    ids = torch.randint(0, 60, (2, 9))
    torch.testing.assert_close(ours(ids).logits, peft_model(input_ids=ids).logits, atol=1e-5, rtol=1e-4)


def test_a_peft_list_with_a_name_the_model_lacks_still_loads(tmp_path):
    """PEFT accepts a target list of which some names match (a generic list on another
    architecture); apply_lora itself now refuses such a name, and loading PEFT's file must not."""
    hf = _hf_llama(tmp_path)
    peft_model = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "c_attn"]))
    _randomize_adapters(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    ours = tessera.from_pretrained(str(tmp_path / "base"))
    assert all(p.endswith("q_proj") for p in lora.load_adapter(ours, str(tmp_path / "adapter")))
    ids = torch.randint(0, 60, (2, 9))
    torch.testing.assert_close(ours(ids).logits, peft_model(input_ids=ids).logits, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="'c_attn' matches no linear layer"):
        lora.apply_lora(tessera.from_pretrained(str(tmp_path / "base")), ["q_proj", "c_attn"], r=2)


def test_an_adapter_on_the_lm_head_counts_in_forward_training_and_decoding(tmp_path):
    """The LM head was read by weight, so an adapter on `lm_head` (PEFT allows it) was left out of
    the logits and never trained, without a word. Now it matches peft in forward, generation with
    the cache, and its adapter receives gradients."""
    hf = _hf_llama(tmp_path)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"])
    peft_model = peft.get_peft_model(hf, cfg)
    _randomize_adapters(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    ours = tessera.from_pretrained(str(tmp_path / "base"))
    lora.load_adapter(ours, str(tmp_path / "adapter"))
    ids = torch.randint(0, 60, (2, 9), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours(ids).logits, peft_model(input_ids=ids).logits, atol=1e-5, rtol=1e-4)
    want = peft_model.generate(input_ids=ids[:1], attention_mask=torch.ones_like(ids[:1]), max_new_tokens=6,
                               do_sample=False, eos_token_id=None,
                               pad_token_id=0)
    assert torch.equal(ours.generate(ids[:1], max_new_tokens=6, eos_token_id=[]), want)
    ours(ids, labels=ids).loss.backward()
    head = {n: p.grad for n, p in ours.named_parameters() if n.startswith("lm_head.lora_")}
    assert len(head) == 2 and all(g is not None and g.abs().sum() > 0 for g in head.values())


def test_tessera_adapter_loads_in_peft(tmp_path):
    hf = _hf_llama(tmp_path)
    ours = tessera.from_pretrained(str(tmp_path / "base"))
    lora.apply_lora(ours, ["k_proj", "gate_proj"], r=2, lora_alpha=4)
    _randomize_adapters(ours)
    lora.save_adapter(ours, str(tmp_path / "ours"))
    theirs = peft.PeftModel.from_pretrained(hf, str(tmp_path / "ours")).eval()
    ids = torch.randint(0, 60, (2, 9))
    torch.testing.assert_close(theirs(input_ids=ids).logits, ours(ids).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("regex", [r".*language_model.*\.(q_proj|v_proj)",
                                   # transformers 5's in-memory names, which name none of ours
                                   r"model\.language_model\.layers\.\d+\.self_attn\.(q_proj|v_proj)"])
def test_peft_adapter_on_transformers_llava_loads_onto_tessera(fixture_dir, tmp_path, regex):
    d = fixture_dir("llava")
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(d)).eval()
    # The language model's projections only (transformers 5's in-memory path).
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=regex)
    peft_model = peft.get_peft_model(hf, cfg)
    _randomize_adapters(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    ours = tessera.from_pretrained(str(d))
    # Our paths name the LM `language_model.model.*`; the adapter's keys are aliased on load.
    lora.load_adapter(ours, str(tmp_path / "adapter"))
    from safetensors.torch import load_file
    io = load_file(str(d / "io.safetensors"))
    want = peft_model(input_ids=io["input_ids"], pixel_values=io["pixel_values"]).logits
    torch.testing.assert_close(ours(io["input_ids"], pixel_values=io["pixel_values"]).logits, want, atol=1e-4, rtol=0)


def test_tessera_llava_adapter_loads_in_peft_and_back_in_both_layouts(fixture_dir, tmp_path):
    from safetensors.torch import load_file

    d = fixture_dir("llava")
    io = load_file(str(d / "io.safetensors"))
    ours = tessera.from_pretrained(str(d))
    lora.apply_lora(ours, r"language_model\..*\.(q_proj|down_proj)", r=4, lora_alpha=8,
                    modules_to_save=["multi_modal_projector"])
    _randomize_adapters(ours)
    with torch.no_grad():  # the projector trained whole (LLaVA's LoRA stage): saved with the adapter
        for n, p in ours.named_parameters():
            if n.startswith("multi_modal_projector."):
                assert p.requires_grad
                p.add_(torch.randn_like(p) * 0.05)
    want = ours(io["input_ids"], pixel_values=io["pixel_values"]).logits
    for layout, prefix in (("in_memory", "base_model.model.model.language_model."),
                           ("checkpoint", "base_model.model.language_model.model.")):
        lora.save_adapter(ours, str(tmp_path / layout), layout=layout)
        keys = load_file(str(tmp_path / layout / "adapter_model.safetensors"))
        assert any(k.startswith(prefix) for k in keys), sorted(keys)[:2]
        back = tessera.from_pretrained(str(d))
        lora.load_adapter(back, str(tmp_path / layout))
        torch.testing.assert_close(back(io["input_ids"], pixel_values=io["pixel_values"]).logits, want, atol=0, rtol=0)
    # transformers 5's LLaVA under PEFT reads the in-memory layout, the saved projector included.
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(d)).eval()
    theirs = peft.PeftModel.from_pretrained(hf, str(tmp_path / "in_memory")).eval()
    got = theirs(input_ids=io["input_ids"], pixel_values=io["pixel_values"]).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    plain = transformers.LlavaForConditionalGeneration.from_pretrained(str(d)).eval()
    base = plain(input_ids=io["input_ids"], pixel_values=io["pixel_values"]).logits
    assert (got - base).abs().max() > 1e-3  # the adapters were applied, not silently skipped


def test_peft_llava_adapter_with_modules_to_save_loads_onto_tessera(fixture_dir, tmp_path):
    from safetensors.torch import load_file

    d = fixture_dir("llava")
    io = load_file(str(d / "io.safetensors"))
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(d)).eval()
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(v_proj|up_proj)",
                          modules_to_save=["multi_modal_projector"])
    peft_model = peft.get_peft_model(hf, cfg)
    _randomize_adapters(peft_model)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "multi_modal_projector" in n and p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    ours = tessera.from_pretrained(str(d))
    lora.load_adapter(ours, str(tmp_path / "adapter"))
    want = peft_model(input_ids=io["input_ids"], pixel_values=io["pixel_values"]).logits
    torch.testing.assert_close(ours(io["input_ids"], pixel_values=io["pixel_values"]).logits, want, atol=1e-4, rtol=0)
    assert ours.lora_config["modules_to_save"] == ["multi_modal_projector"]
    assert all(p.requires_grad for n, p in ours.named_parameters() if n.startswith("multi_modal_projector."))


def test_a_pattern_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match="match no linear layer"):
        lora.apply_lora(tessera.LlamaForCausalLM(LLAMA), ["query_key_value"])


@pytest.mark.parametrize("alpha", [float("inf"), float("-inf")])
def test_an_infinite_alpha_is_refused(alpha):
    """alpha = inf made every merged weight inf, with finite meaningless logits, and was written
    back to adapter_config.json as the non-standard `Infinity`."""
    with pytest.raises(ValueError, match="lora_alpha must be a finite number"):
        lora.apply_lora(tessera.LlamaForCausalLM(LLAMA), ["q_proj"], r=4, lora_alpha=alpha)


def test_a_bad_pattern_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="not a valid regular expression"):
        lora.apply_lora(tessera.LlamaForCausalLM(LLAMA), "(q_proj")
    model = tessera.LlamaForCausalLM(LLAMA)
    lora.apply_lora(model, ["q_proj"], r=4)
    lora.save_adapter(model, str(tmp_path))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "target_modules": "("}))
    with pytest.raises(ValueError, match="adapter_config.json: target_modules '\\(' is not a valid"):
        lora.load_adapter(tessera.LlamaForCausalLM(LLAMA), str(tmp_path))


def test_modules_to_save_as_one_name():
    model = tessera.LlamaForCausalLM(LLAMA)
    lora.apply_lora(model, ["q_proj"], r=4, modules_to_save="lm_head")
    assert model.lora_config["modules_to_save"] == ["lm_head"] and model.lm_head.weight.requires_grad


def test_a_refused_adapter_leaves_the_model_as_it_was(tmp_path):
    """load_adapter applied LoRA before it checked the weights file: a refused adapter left the
    model carrying zero adapters, and loading a good one next failed ("already has a LoRA adapter")."""
    torch.manual_seed(0)
    source = tessera.LlamaForCausalLM(LLAMA)
    lora.apply_lora(source, ["q_proj", "v_proj"], r=4)
    _randomize_adapters(source)
    good = tmp_path / "good"
    lora.save_adapter(source, str(good))
    wrong_r, no_weights = tmp_path / "r8", tmp_path / "none"
    shutil.copytree(good, wrong_r)
    config = json.loads((good / "adapter_config.json").read_text())
    (wrong_r / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    shutil.copytree(good, no_weights)
    (no_weights / "adapter_model.safetensors").unlink()
    model = tessera.LlamaForCausalLM(LLAMA)
    model.load_state_dict({k: v for k, v in source.state_dict().items() if ".lora_" not in k})
    names = [n for n, _ in model.named_parameters()]
    for bad, error in ((wrong_r, ValueError), (no_weights, FileNotFoundError)):
        with pytest.raises(error):
            lora.load_adapter(model, str(bad))
        assert [n for n, _ in model.named_parameters()] == names and not getattr(model, "lora_config", None)
    lora.load_adapter(model, str(good))
    ids = torch.randint(0, 60, (2, 7))
    torch.testing.assert_close(model(ids).logits, source(ids).logits, rtol=0, atol=0)


def test_a_second_adapter_config_is_refused_before_the_model_changes(tmp_path):
    """A second apply_lora kept its r and alpha as the model's for every layer: the first call's
    layers were saved and merged at the second's scale (logits off by 0.2, no error), or at an r
    their tensors lack (a folder neither tessera nor peft loads). A refused call added adapters
    to the layers it reached first, which no parameter list showed, and a load onto an adapted
    model did the same."""
    torch.manual_seed(0)
    model = tessera.LlamaForCausalLM(LLAMA)
    lora.apply_lora(model, ["q_proj"], r=4, lora_alpha=4)
    _randomize_adapters(model)
    lora.save_adapter(model, str(tmp_path / "q"))
    names, ids = [n for n, _ in model.named_parameters()], torch.randint(0, 60, (2, 7))
    logits, config = model(ids).logits, dict(model.lora_config)
    for second in (lambda: lora.apply_lora(model, ["v_proj"], r=4, lora_alpha=32),
                   lambda: lora.apply_lora(model, ["k_proj", "q_proj"], r=2),
                   lambda: lora.load_adapter(model, str(tmp_path / "q"))):
        with pytest.raises(ValueError, match=r"the model has LoRA adapters already \(model\.layers\.0\.self_attn\."
                                             r"q_proj.*r=4, lora_alpha=4"):
            second()
        assert [n for n, _ in model.named_parameters()] == names and model.lora_config == config
    torch.testing.assert_close(model(ids).logits, logits, rtol=0, atol=0)
    merged = tessera.LlamaForCausalLM(LLAMA)  # what the run saves merges at the adapter's own scale
    merged.load_state_dict(lora.merged_state_dict(model, model.state_dict()))
    torch.testing.assert_close(merged(ids).logits, logits, rtol=1e-5, atol=1e-5)
    fresh = tessera.LlamaForCausalLM(LLAMA)  # no adapter hides in the C++ layers: a model without one takes it
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if ".lora_" not in k})
    lora.load_adapter(fresh, str(tmp_path / "q"))
    torch.testing.assert_close(fresh(ids).logits, logits, rtol=0, atol=0)


def _peft_adapter(tmp_path, fixture, name, convert=False, **config):
    """An adapter trained (B moved off its start) and saved by peft on transformers' LLaMA."""
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], **config)
    model = peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(fixture).eval(), cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path / name
    if convert:  # peft's way to share a PiSSA adapter as a plain one
        torch.manual_seed(0)
        start = peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(fixture).eval(), cfg)
        start.save_pretrained(str(tmp_path / f"{name}-start"))
        model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(tmp_path / f"{name}-start"))
    else:
        model.save_pretrained(str(folder))
    return str(folder)


@pytest.mark.parametrize("name,config,key", [("pissa", {"init_lora_weights": "pissa"}, "init_lora_weights"),
                                             ("olora", {"init_lora_weights": "olora"}, "init_lora_weights"),
                                             ("alora", {"alora_invocation_tokens": [5]}, "alora_invocation_tokens")])
def test_adapters_that_change_the_base_or_the_computation_are_refused(fixture_dir, tmp_path, name, config, key):
    """PiSSA and OLoRA start from W - A0 B0 and aLoRA acts from its invocation tokens on: loaded onto
    the plain weights they gave other logits than peft (0.26-0.53 here), without a word."""
    fixture = str(fixture_dir("llama"))
    folder = _peft_adapter(tmp_path, fixture, name, **config)
    with pytest.raises(ValueError, match=f"adapter_config.json: {key}=.* is not supported by tessera's LoRA"):
        lora.load_adapter(tessera.from_pretrained(fixture), folder)


@pytest.mark.parametrize("name,convert,init", [("pissa", True, "pissa"), ("eva", False, "eva"),
                                               ("orthogonal", False, "orthogonal")])
def test_plain_adapters_of_other_inits_load_as_peft_loads_them(fixture_dir, tmp_path, name, convert, init):
    """A PiSSA adapter peft converted to a plain one; EVA and orthogonal set only A and B at the
    start (the base untouched), so saved they are plain LoRA."""
    fixture = str(fixture_dir("llama"))
    folder = _peft_adapter(tmp_path, fixture, name, convert=convert, init_lora_weights=init)
    ids = torch.randint(3, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    ours = tessera.from_pretrained(fixture)
    lora.load_adapter(ours, folder)
    theirs = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(fixture).eval(), folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_lora_on_a_meta_model_is_refused(fixture_dir):
    config = tessera.from_pretrained(str(fixture_dir("llama"))).config
    with torch.device("meta"):
        model = tessera.LlamaForCausalLM(config)
    with pytest.raises(ValueError, match="is on the meta device; materialise the model"):
        lora.apply_lora(model, ["q_proj"], r=2)
