"""The keywords and attributes transformers users write on every model, side by side with
transformers on the same folder: from_pretrained's loader switches (taken: they change nothing for
a local folder, as in transformers), its config keywords (they update the config), save_pretrained's
accelerate idiom, `main_input_name` / `can_generate`; and Python's tracers, which cannot see C++,
refused by name (they failed deep inside, on `.item()` or a symbolic guard)."""
from __future__ import annotations

import shutil

import pytest
import torch

import tessera
from tessera import lora

transformers = pytest.importorskip("transformers")


@pytest.fixture
def llama(fixture_dir):
    return str(fixture_dir("llama"))


def _ids():
    return torch.randint(3, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


def test_loader_switches_are_taken_as_transformers_takes_them(llama, tmp_path):
    want = transformers.LlamaForCausalLM.from_pretrained(llama, local_files_only=True, low_cpu_mem_usage=True,
                                                          attn_implementation="sdpa", device_map="cpu")
    shutil.copytree(llama, tmp_path / "sub" / "llama")
    for load in (tessera.from_pretrained, tessera.LlamaForCausalLM.from_pretrained):
        ours = load(llama, local_files_only=True, low_cpu_mem_usage=True, attn_implementation="sdpa",
                    device_map="cpu", trust_remote_code=False, revision="main", use_safetensors=True)
        nested = load(str(tmp_path / "sub"), subfolder="llama")
        with torch.no_grad():
            torch.testing.assert_close(ours(_ids()).logits, want(_ids()).logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(nested(_ids()).logits, ours(_ids()).logits, atol=0, rtol=0)


def test_a_config_keyword_updates_the_config_as_in_transformers(llama, fixture_dir):
    theirs = transformers.LlamaForCausalLM.from_pretrained(llama, attention_dropout=0.25)
    ours = tessera.from_pretrained(llama, attention_dropout=0.25)
    assert ours.config["attention_dropout"] == theirs.config.attention_dropout == 0.25
    # the class's own constructor arguments still reach it, as transformers' model kwargs do
    beit = str(fixture_dir("beit"))
    for pooling in (False, True):
        ours = tessera.BeitModel.from_pretrained(beit, add_pooling_layer=pooling)
        theirs = transformers.BeitModel.from_pretrained(beit, add_pooling_layer=pooling)
        assert {n for n, _ in ours.named_parameters() if n.startswith("pooler")} == \
            {n for n, _ in theirs.named_parameters() if n.startswith("pooler")}, pooling


def test_what_cannot_apply_is_refused_by_name(llama):
    cases = [(dict(hidden_sizee=3), TypeError, r"from_pretrained\(\) got unexpected keyword argument\(s\) hidden_sizee"),
             (dict(device_map="auto"), ValueError, "places a whole model on one device"),
             (dict(attn_implementation="flash_attention_2"), ValueError, "attn_implementation='flash_attention_2'"),
             (dict(use_safetensors=False), ValueError, "reads model.safetensors only")]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            tessera.from_pretrained(llama, **kwargs)


def test_save_pretrained_takes_accelerates_idiom(llama, tmp_path):
    model = tessera.from_pretrained(llama)
    model.save_pretrained(str(tmp_path / "main"), is_main_process=True, save_function=torch.save,
                          safe_serialization=True)
    model.save_pretrained(str(tmp_path / "other"), is_main_process=False)  # another rank: writes nothing
    assert (tmp_path / "main" / "model.safetensors").is_file() and not (tmp_path / "other").exists()
    with torch.no_grad():
        torch.testing.assert_close(transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "main"))(_ids()).logits,
                                   model(_ids()).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="to a local folder only"):
        model.save_pretrained(str(tmp_path / "bad"), push_to_hub=True)
    # transformers 5 takes transformers 4's safe_serialization=False and writes safetensors anyway
    model.save_pretrained(str(tmp_path / "unsafe"), safe_serialization=False)
    assert (tmp_path / "unsafe" / "model.safetensors").is_file()


def test_attributes_equal_transformers(fixture_dir):
    for family in ("clip", "llama", "llava", "mae", "beit", "blip2", "blip2_itr", "qformer"):
        ours = tessera.from_pretrained(str(fixture_dir(family)))
        theirs = getattr(transformers, type(ours).__name__)
        assert ours.main_input_name == theirs.main_input_name, family
        assert ours.can_generate() == theirs.can_generate(), family
        assert ours.supports_gradient_checkpointing, family
    tower = tessera.CLIPVisionModel.from_pretrained(str(fixture_dir("clip")))
    assert tower.main_input_name == transformers.CLIPVisionModel.main_input_name


def test_adapters_get_gradients_through_checkpointing_without_input_grads(llama):
    """peft's prepare_model_for_kbit_training calls enable_input_require_grads; tessera's C++
    checkpointing passes gradients to adapters over frozen embeddings either way."""
    model = tessera.from_pretrained(llama).train()
    model.requires_grad_(False)
    lora.apply_lora(model, ["q_proj", "v_proj"], r=4)
    model.enable_input_require_grads()
    model.gradient_checkpointing_enable()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # the second step: B moved off zero, so A gets a gradient too
        opt.zero_grad()
        model(_ids(), labels=_ids()).loss.backward()
        opt.step()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tracers_that_cannot_see_cpp_are_refused_by_name(llama):
    model = tessera.from_pretrained(llama)
    ids = _ids()
    with pytest.raises(RuntimeError, match="torch.jit.trace cannot record a tessera model"):
        torch.jit.trace(model, (ids,), strict=False)
    with pytest.raises(RuntimeError, match="torch.jit.script cannot compile a tessera model"):
        torch.jit.script(model)
    with pytest.raises(RuntimeError, match="torch.export cannot capture a tessera model"):
        torch.export.export(model, (ids,))
    with pytest.raises(RuntimeError, match="torch.func.vmap cannot batch"):
        torch.func.vmap(lambda x: model(x[None]).logits[0])(ids)
    params = {k: v.detach() for k, v in model.named_parameters()}
    with pytest.raises(RuntimeError, match="torch.func.vmap cannot batch"):  # per-sample gradients: grad on top
        torch.func.vmap(torch.func.grad(lambda p, x: torch.func.functional_call(model, p, (x[None],)).logits.sum()),
                        in_dims=(None, 0))(params, ids)
    # torch.func.grad is not a tracer over C++: it still works, equal to autograd
    params = {k: v.detach() for k, v in model.named_parameters()}
    grads = torch.func.grad(lambda p: torch.func.functional_call(model, p, (ids,), {"labels": ids}).loss)(params)
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-5)


def test_a_folder_transformers_would_compute_otherwise_is_said_when_saved(tmp_path):
    """A CLIP with SigLIP's logit_bias and a LLaVA with a tessera projector were saved under
    transformers' architectures without a word; transformers dropped the bias (softmax logits) or
    re-initialised the projector. Saving says so; the folder still loads in tessera."""
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    siglip = tessera.CLIPModel({"logit_bias_init_value": -10.0, "projection_dim": 16,
                                "text_config": {**tower, "max_position_embeddings": 12, "vocab_size": 99},
                                "vision_config": {**tower, "image_size": 16, "patch_size": 8}})
    with pytest.warns(UserWarning, match="CLIPModel has no logit_bias"):
        siglip.save_pretrained(str(tmp_path / "siglip"))
    assert tessera.from_pretrained(str(tmp_path / "siglip")).logit_bias is not None
    llava = tessera.LlavaForConditionalGeneration({
        "projector_type": "linear", "image_token_index": 40, "vision_feature_layer": -1,
        "text_config": dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32),
        "vision_config": {**tower, "image_size": 16, "patch_size": 8}})
    with pytest.warns(UserWarning, match="projector_type 'linear' is tessera's"):
        llava.save_pretrained(str(tmp_path / "llava"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain CLIP says nothing
        tessera.CLIPModel({"projection_dim": 16, "text_config": {**tower, "max_position_embeddings": 12},
                           "vision_config": {**tower, "image_size": 16, "patch_size": 8}}).save_pretrained(
            str(tmp_path / "clip"))
