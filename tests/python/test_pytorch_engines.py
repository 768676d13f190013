"""PyTorch's own engines drive tessera modules as they drive pure-PyTorch ones: FSDP2
(`fully_shard` per layer and at the root, with and without activation-checkpoint wrappers) on 2
Gloo ranks equals one process, and every trainable parameter changes; hooks fire on layers;
functional_call, parametrizations and swapped parameters reach the C++ forward; misuse that could
never take effect raises.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import tessera
from tessera.models.clip import CLIPAttention, CLIPEncoderLayer
from _clip_reference import pixel_batch, text_batch, tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = tiny_config(text=dict(num_hidden_layers=2), vision=dict(num_hidden_layers=2))


def _run(out, mode, nproc=1):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    worker = os.path.join(HERE, "_fsdp_worker.py")
    if nproc == 1:
        cmd = [sys.executable, worker, out, mode]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", worker, out, mode]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _run(str(tmp_path_factory.mktemp("single") / "r.pt"), "single")


@pytest.mark.parametrize("mode", ["fsdp", "fsdp_ckpt", "fsdp_meta"])
def test_fsdp2_per_layer_and_root_equals_one_process(single, mode, tmp_path):
    got = _run(str(tmp_path / "r.pt"), mode, nproc=2)
    assert all(single["changed"].values()), [k for k, c in single["changed"].items() if not c]
    unchanged = [k for k, c in got["changed"].items() if not c]
    assert not unchanged, f"{len(unchanged)} of {len(got['changed'])} parameters never moved: {unchanged[:5]}"
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(single["losses"]), atol=1e-5, rtol=0)
    assert set(got["state"]) == set(single["state"])
    for k, v in single["state"].items():
        torch.testing.assert_close(got["state"][k], v, atol=1e-5, rtol=0, msg=k)
    if mode == "fsdp":
        message, written = got["refusals"]["save_pretrained"]
        assert "is a DTensor" in message and "full_state_dict=True" in message and not written, got["refusals"]
        assert "accelerate's FSDP2 plugin" in got["refusals"]["fully_shard_leaf"], got["refusals"]


def _inputs(batch=2):
    ids, mask = text_batch(CONFIG["text_config"], batch=batch, seq_len=CONFIG["text_config"]["max_position_embeddings"])
    return ids, mask, pixel_batch(CONFIG["vision_config"], batch=batch)


def test_forward_hooks_on_a_layer_see_its_input_and_output():
    model = tessera.CLIPModel(CONFIG).eval()
    ids, mask, px = _inputs()
    seen = {}
    layers = model.vision_model.encoder.layers
    assert isinstance(layers[0], CLIPEncoderLayer) and isinstance(layers, nn.ModuleList)
    layers[0].register_forward_hook(lambda m, args, out: seen.update(first=(args[0], out)))
    layers[1].register_forward_pre_hook(lambda m, args: seen.update(second_in=args[0]))
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=px, attention_mask=mask, output_hidden_states=True)
    hs = out.vision_model_output.hidden_states
    assert torch.equal(seen["first"][0], hs[0]) and torch.equal(seen["first"][1], hs[1])
    assert torch.equal(seen["second_in"], hs[1])


def test_a_forward_hook_can_change_a_layer_output():
    model = tessera.CLIPVisionModel(CONFIG["vision_config"]).eval()
    px = _inputs()[2]
    with torch.no_grad():
        base = model(px).last_hidden_state
        h = model.encoder.layers[-1].register_forward_hook(lambda m, a, out: out * 0)
        zeroed = model(px).last_hidden_state
        h.remove()
    assert zeroed.abs().max() == 0 and base.abs().max() > 0


def test_functional_call_and_swapped_parameters_reach_cpp():
    model = tessera.CLIPVisionModel(CONFIG["vision_config"]).eval()
    px = _inputs()[2]
    name = "encoder.layers.1.mlp.fc2.bias"
    with torch.no_grad():
        base = model(px).last_hidden_state
        bias = dict(model.named_parameters())[name]
        out = torch.func.functional_call(model, {name: bias + 1.0}, (px,)).last_hidden_state
        torch.testing.assert_close(out, base + 1.0)  # fc2's bias adds straight onto the residual
        assert torch.equal(model(px).last_hidden_state, base)  # the original parameter is back
    # Gradients through functional_call reach the substituted tensor (torch.func style training).
    params = {k: v.detach().requires_grad_() for k, v in model.named_parameters()}
    torch.func.functional_call(model, params, (px,)).pooler_output.sum().backward()
    assert all(p.grad is not None for p in params.values())


def test_parametrization_is_computed_at_each_call():
    model = tessera.CLIPVisionModel(CONFIG["vision_config"]).eval()
    px = _inputs()[2]
    proj = model.encoder.layers[0].self_attn.q_proj

    class Zero(nn.Module):
        def forward(self, w):
            return torch.zeros_like(w)

    with torch.no_grad():
        base = model(px).last_hidden_state
        torch.nn.utils.parametrize.register_parametrization(proj, "weight", Zero())
        zeroed_q = model(px).last_hidden_state
        torch.nn.utils.parametrize.remove_parametrizations(proj, "weight", leave_parametrized=False)
        restored = model(px).last_hidden_state
    assert not torch.allclose(base, zeroed_q)
    assert torch.equal(base, restored)


def test_misuse_that_cannot_work_raises():
    model = tessera.CLIPModel(CONFIG)
    ids, mask, px = _inputs()
    attn = model.vision_model.encoder.layers[0].self_attn
    assert isinstance(attn, CLIPAttention)
    with pytest.raises(RuntimeError, match="never fire"):
        attn.register_forward_hook(lambda *a: None)
    with pytest.raises(RuntimeError, match="never fire"):
        model.vision_model.register_forward_pre_hook(lambda *a: None)
    with pytest.raises(TypeError, match=r"q_proj is run by C\+\+ inside its parent, so the Linear assigned"):
        attn.q_proj = nn.Linear(CONFIG["vision_config"]["hidden_size"], CONFIG["vision_config"]["hidden_size"])
    attn._modules["q_proj"] = nn.Identity()  # past the assignment check: the forward still refuses it
    with pytest.raises(TypeError, match="q_proj was replaced"):
        model(input_ids=ids, pixel_values=px, attention_mask=mask)
    model = tessera.CLIPModel(CONFIG)
    model.text_model.encoder.layers[1] = nn.Identity()
    with pytest.raises(TypeError, match="does not wrap it"):
        model(input_ids=ids, pixel_values=px, attention_mask=mask)


def test_new_user_small_things():
    # Subpackages load lazily; tokenizing needs no open_clip (the merges ship with tessera).
    assert tessera.losses.ClipLoss is not None
    assert tessera.text.default_clip_bpe_path().parent.name == "assets"
    assert tessera.tokenize("a photo of a cat")[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    with pytest.raises(TypeError, match="text 0 must be a str, got int"):
        tessera.tokenize([1, 2])
    # a lone surrogate is cleaned as open_clip's ftfy cleans it (test_hostile_input.py)
    assert torch.equal(tessera.tokenize(["ok", "bad \ud800"]), tessera.tokenize(["ok", "bad \ufffd"]))
    # An empty contrastive batch is an error, not a NaN loss.
    model = tessera.CLIPModel(CONFIG)
    ids, mask, px = _inputs()
    with pytest.raises(ValueError, match="non-empty batch"):
        model(input_ids=ids[:0], pixel_values=px[:0], return_loss=True)
