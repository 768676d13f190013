"""Code that finds modules by their type, on a tessera model side by side with transformers on the
same weights (../shared/fixtures/hf). A tessera leaf (Linear, LayerNorm, RMSNorm, Embedding, the
patch Conv2d) is an instance of torch.nn's class: before, `isinstance(m, nn.Linear)` was False, so
an initialiser applied with `model.apply`, transformers' no-decay list and `reset_parameters`
loops passed every inner module over without a word. What would replace one (peft's LoRA layer)
is refused where it is assigned."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import tessera

transformers = pytest.importorskip("transformers")

LEAVES = (nn.Linear, nn.LayerNorm, nn.Embedding, nn.Conv2d)
PX = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
IDS = torch.tensor([[0, 20, 25, 39, 2], [0, 20, 68, 2, 2]])


def _clip(fixture_dir):
    d = str(fixture_dir("clip"))
    return tessera.from_pretrained(d).eval(), transformers.CLIPModel.from_pretrained(d).eval()


def _features(model):
    with torch.no_grad():
        image = model.get_image_features(pixel_values=PX)
        text = model.get_text_features(input_ids=IDS)
    return [t if isinstance(t, torch.Tensor) else t.pooler_output for t in (image, text)]


def test_leaves_are_torchs_classes_with_transformers_reprs(fixture_dir):
    ours, theirs = _clip(fixture_dir)

    def leaves(model):
        return {name: repr(m) for name, m in model.named_modules() if isinstance(m, LEAVES)}

    assert leaves(ours) == leaves(theirs)  # the same modules found, each with its sizes, eps, bias and stride
    assert len(leaves(ours)) > 20


def test_transformers_no_decay_list_is_the_same(fixture_dir):
    """transformers' Trainer decays every parameter but biases and those of LayerNorm modules:
    tessera's norms were decayed."""
    from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS
    from transformers.trainer_pt_utils import get_parameter_names

    ours, theirs = _clip(fixture_dir)
    decayed = [sorted(get_parameter_names(m, ALL_LAYERNORM_LAYERS, ["bias"])) for m in (ours, theirs)]
    assert decayed[0] == decayed[1]
    assert not any("layer_norm" in name for name in decayed[0])


def _rescale(m):
    """An initialiser that finds its modules by type, as timm's and transformers' do."""
    with torch.no_grad():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.mul_(-1.5)
            if m.bias is not None:
                m.bias.add_(0.25)
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(0.5)
            m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.mul_(2.0)


def test_an_initialiser_applied_by_type_reaches_cpp(fixture_dir):
    ours, theirs = _clip(fixture_dir)
    before = _features(ours)
    ours.apply(_rescale)
    theirs.apply(_rescale)
    after = _features(ours)
    for a, b, ref in zip(before, after, _features(theirs)):
        assert not torch.allclose(a, b)
        torch.testing.assert_close(b, ref, atol=1e-5, rtol=1e-5)


def test_reset_parameters_loop_reaches_every_leaf_and_cpp(fixture_dir):
    """`for m in model.modules(): m.reset_parameters()` (torch's own defaults) on a LLaMA: every
    parameter is drawn again, and C++ computes with the new values (transformers given the reset
    weights gives the same logits)."""
    d = str(fixture_dir("llama"))
    ours = tessera.from_pretrained(d).eval()
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    torch.manual_seed(0)
    for m in ours.modules():
        if isinstance(m, (nn.Linear, nn.Embedding, nn.RMSNorm)):
            m.reset_parameters()
    after = ours.state_dict()
    kept = [k for k in before if torch.equal(before[k], after[k])]
    assert all(k.endswith("norm.weight") and torch.equal(after[k], torch.ones_like(after[k])) for k in kept)  # torch's ones
    assert len(kept) < len(before) / 2
    theirs = transformers.LlamaForCausalLM.from_pretrained(d).eval()
    theirs.load_state_dict({k: v.clone() for k, v in after.items()})
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=1e-5, rtol=1e-5)


def test_peft_replacing_a_linear_is_refused_where_it_assigns(fixture_dir):
    peft = pytest.importorskip("peft")
    ours = tessera.from_pretrained(str(fixture_dir("llama")))
    q_proj = ours.model.layers[0].self_attn.q_proj
    with pytest.raises(TypeError, match=r"layers.0.self_attn.q_proj is run by C\+\+ .* tessera.lora.apply_lora"):
        peft.get_peft_model(ours, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert ours.model.layers[0].self_attn.q_proj is q_proj  # nothing half replaced
    ours(torch.tensor([[1, 2, 3]]))


def test_a_linear_without_bias_reads_as_torchs(fixture_dir):
    ours = tessera.from_pretrained(str(fixture_dir("llama")))
    q_proj = ours.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, nn.Linear) and q_proj.bias is None
    assert [name for name, _ in q_proj.named_parameters()] == ["weight"]
    assert "model.layers.0.self_attn.q_proj.bias" not in ours.state_dict()
    with pytest.raises(TypeError, match=r"layers.0.self_attn.q_proj was built without a bias in C\+\+"):
        q_proj.bias = nn.Parameter(torch.zeros(q_proj.out_features))  # C++ would never add it
    assert q_proj.bias is None


@pytest.mark.parametrize("name,value", [("eps", 1e-3), ("padding_idx", 0), ("out_features", 7), ("stride", (2, 2))])
def test_what_cpp_built_a_leaf_with_is_read_only(fixture_dir, name, value):
    """transformers' modules read `eps` / `padding_idx` at call time; C++ fixed them when it built
    the leaf, so a new value read back as set and changed nothing."""
    model = tessera.from_pretrained(str(fixture_dir("clip")))
    leaf = next(m for m in model.modules() if name in getattr(m, "_cpp_attributes", ()))
    before = getattr(leaf, name)
    with pytest.raises(AttributeError, match=rf"\.{name} = .*: C\+\+ built this {type(leaf).__name__} with {name}="):
        setattr(leaf, name, value)
    assert getattr(leaf, name) == before


def _tensor_parallel(_rank, fixture, init_file):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0, world_size=1)  # no fixed port
    try:
        model = tessera.from_pretrained(fixture).eval()
        ids = torch.tensor([[1, 5, 9, 7]])
        with torch.no_grad():
            before = model(ids).logits
        plan = {"model.embed_tokens": RowwiseParallel(input_layouts=Replicate()),  # torchtitan's LLaMA plan
                "model.layers.0.self_attn.q_proj": ColwiseParallel()}
        with pytest.raises(RuntimeError, match="tensor parallelism .* shard it with FSDP2"):
            parallelize_module(model, init_device_mesh("cpu", (1,)), plan)
        assert all(type(p) is torch.nn.Parameter for p in model.parameters())  # no DTensor left behind
        with torch.no_grad():
            assert torch.equal(model(ids).logits, before)
    finally:
        dist.destroy_process_group()


def test_tensor_parallelism_is_refused_and_leaves_the_model_whole(fixture_dir, tmp_path):
    """It matches nn.Linear / nn.Embedding, makes their parameters DTensors, then adds hooks on
    them that C++ would never call: refused there, with the parameters C++ holds put back."""
    from _spawn import spawn_ranks

    spawn_ranks(_tensor_parallel, (str(fixture_dir("llama")), str(tmp_path / "init")), world=1,
                what="tensor parallelism")
