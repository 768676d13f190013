"""Models built where torch's default device says, as torchtitan and FSDP2 build large ones:
under `with torch.device("meta")` a tessera model holds meta parameters and takes no memory
(a 60B LLaMA here, which the machine could never hold), and after `to_empty` its `init_weights()`
draws exactly what a model built on the CPU with the same seed holds, every parameter included.
Before, the device was ignored without a word: the model was built and initialised on the CPU.
FSDP2's meta flow (shard, `to_empty`, set_model_state_dict from rank 0) equals one process in
test_pytorch_engines."""
from __future__ import annotations

import copy

import pytest
import torch

import tessera

FAMILIES = ["llama", "clip", "mae", "beit", "blip2", "blip2_itr", "llava", "qformer"]


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def _config_and_classes(fixture_dir, family):
    config = tessera.from_pretrained(str(fixture_dir(family))).config
    classes = [tessera.registry.model_class(config)]
    towers = {"clip": [(tessera.CLIPVisionModel, "vision_config"), (tessera.CLIPTextModel, "text_config")],
              "mae": [(tessera.ViTMAEModel, None)], "beit": [(tessera.BeitModel, None)],
              "blip2": [(tessera.Blip2VisionModel, "vision_config")]}
    return config, classes + [(cls, key) for cls, key in towers.get(family, [])]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_meta_built_model_initialises_as_one_built_on_the_cpu(fixture_dir, family):
    config, classes = _config_and_classes(fixture_dir, family)
    for entry in classes:
        cls, key = entry if isinstance(entry, tuple) else (entry, None)
        cfg = config[key] if key else config
        torch.manual_seed(0)
        want = cls(cfg).state_dict()
        with torch.device("meta"):
            model = cls(cfg)
        assert all(p.is_meta for p in model.parameters()), cls.__name__
        model.to_empty(device="cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))  # a parameter init_weights missed would stay NaN
        torch.manual_seed(0)
        model.init_weights()
        got = model.state_dict()
        assert set(got) == set(want)
        for name, value in want.items():
            assert torch.equal(got[name], value), f"{cls.__name__}.{name}"


@pytest.mark.parametrize("projector", ["resampler", "qformer"])
def test_llava_projectors_initialise_on_meta_too(fixture_dir, projector):
    config = {**tessera.from_pretrained(str(fixture_dir("llava"))).config, "projector_type": projector,
              "projector_num_queries": 4}
    torch.manual_seed(0)
    want = tessera.LlavaForConditionalGeneration(config).state_dict()
    with torch.device("meta"):
        model = tessera.LlavaForConditionalGeneration(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    torch.manual_seed(0)
    model.init_weights()
    for name, value in model.state_dict().items():
        assert torch.equal(value, want[name]), name


def test_a_model_past_this_machine_builds_on_meta_without_memory(fixture_dir):
    config = {**tessera.from_pretrained(str(fixture_dir("llama"))).config, "hidden_size": 8192,
              "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
              "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False}
    with pytest.raises(ValueError, match="GiB of memory this machine has"):  # on the CPU: refused, not swapped
        tessera.LlamaForCausalLM(config)
    before = _resident_mib()
    with torch.device("meta"):
        model = tessera.LlamaForCausalLM(config)
        twin = copy.deepcopy(model)  # a copy stays on meta too
    assert _resident_mib() - before < 200
    per_layer = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    assert model.num_parameters() == 80 * per_layer + 2 * 128256 * 8192 + 8192
    assert all(p.is_meta for p in twin.parameters())


def test_init_weights_refuses_what_it_cannot_initialise(fixture_dir):
    config = tessera.from_pretrained(str(fixture_dir("llama"))).config
    with torch.device("meta"):
        model = tessera.LlamaForCausalLM(config)
    with pytest.raises(ValueError, match="on the meta device; materialise the model first"):
        model.init_weights()
    model.to_empty(device="cpu")
    tessera.lora.apply_lora(model, ["q_proj"], r=2)
    with pytest.raises(ValueError, match="initialise before tessera.lora.apply_lora"):
        model.init_weights()


def test_init_weights_on_a_trained_model_starts_it_again(fixture_dir):
    d = str(fixture_dir("clip"))
    model = tessera.from_pretrained(d)
    torch.manual_seed(3)
    model.init_weights()
    torch.manual_seed(3)
    fresh = tessera.CLIPModel(model.config)
    for (name, p), q in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(p, q), name


def test_what_a_meta_model_cannot_do_is_refused_by_name(fixture_dir, tmp_path):
    d = str(fixture_dir("llama"))
    with pytest.raises(ValueError, match="under `with torch.device\\('meta'\\)` would read every weight"):
        with torch.device("meta"):
            tessera.from_pretrained(d)  # transformers refuses it too
    config = tessera.from_pretrained(d).config
    with torch.device("meta"):
        model = tessera.LlamaForCausalLM(config)
    with pytest.raises(ValueError, match="on the meta device and holds no values"):
        model.save_pretrained(str(tmp_path / "meta"))
    assert not (tmp_path / "meta").exists()
    model.lm_head.weight = torch.nn.Parameter(torch.zeros(model.lm_head.weight.shape))  # half materialised
    with pytest.raises(TypeError, match="some parameters are on the meta device and some are not"):
        copy.deepcopy(model)


def test_tensors_without_values_of_their_own_are_refused_before_anything_is_written(fixture_dir, tmp_path):
    """A sharded model's state dict holds DTensors (one rank's shard): save_pretrained and
    save_adapter handed them to the C++ writer, which crashed the process (SIGSEGV) with the
    folder half written. Any tensor subclass is refused by name in Python; the writer itself
    refuses Python-dispatch subclasses and meta tensors (tessera's other callers)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tessera import _C

    class Shard(torch.Tensor):
        pass

    model = tessera.from_pretrained(str(fixture_dir("llama")))
    state = {k: torch.Tensor._make_subclass(Shard, v.detach()) for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"save_pretrained\(\): model\.\S+\.weight is a Shard .*full_state_dict"):
        model.save_pretrained(str(tmp_path / "full"), state_dict=state)
    tessera.lora.apply_lora(model, ["q_proj"], r=2)
    adapters = {k: torch.Tensor._make_subclass(Shard, v.detach()) for k, v in model.state_dict().items() if "lora_" in k}
    with pytest.raises(ValueError, match=r"save_adapter: .*lora_A.* is a Shard"):
        tessera.lora.save_adapter(model, str(tmp_path / "adapter"), state_dict=adapters)
    assert not (tmp_path / "full").exists() and not (tmp_path / "adapter").exists()
    with FakeTensorMode():
        fake = torch.empty(3)
    for t, what in ((fake, "a tensor subclass"), (torch.empty(3, device="meta"), "on the meta device")):
        with pytest.raises(ValueError, match=f"cannot save tensor 'x': it is {what}"):
            _C.core.save_safetensors(str(tmp_path / "x.safetensors"), {"x": t})
    assert not (tmp_path / "x.safetensors").exists()
