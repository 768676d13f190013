"""Each family's layout of the generic C++ layer has exactly the parameter names and shapes of the
transformers layer it stands for (same config), and the timm feature API equals transformers'."""
from __future__ import annotations

import pytest
import torch

import tessera
from _clip_reference import hf_clip, pixel_batch, tiny_config

transformers = pytest.importorskip("transformers")


def _shapes(module):
    return {k: list(v.shape) for k, v in module.named_parameters()}


def test_clip_layer_layout():
    cfg = transformers.CLIPVisionConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64)
    hf = transformers.models.clip.modeling_clip.CLIPEncoderLayer(cfg)
    assert tessera._C.nn.layer_parameter_shapes("clip", 32, 4, 4, 64) == _shapes(hf)


def test_vit_layer_layout_is_the_checkpoint_layout(tmp_path):
    # transformers 5 renames ViT's modules in memory (attention.q_proj, mlp.fc1) but reads and
    # writes checkpoints in the ViT/BERT tree (attention.attention.query, intermediate.dense):
    # tessera's modules carry the checkpoint names, so files load by key with no conversion.
    cfg = transformers.ViTConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=1,
                                 image_size=16, patch_size=8)
    transformers.ViTModel(cfg).save_pretrained(str(tmp_path))
    tensors, _ = tessera._C.core.load_safetensors(str(tmp_path / "model.safetensors"))
    lead = "encoder.layer.0."
    saved = {k[len(lead):]: list(v.shape) for k, v in tensors.items() if k.startswith(lead)}
    assert "attention.attention.query.weight" in saved
    assert tessera._C.nn.layer_parameter_shapes("vit", 32, 4, 4, 64) == saved


def test_llama_layer_layout():
    cfg = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48)
    hf = transformers.models.llama.modeling_llama.LlamaDecoderLayer(cfg, layer_idx=0)
    assert tessera._C.nn.layer_parameter_shapes("llama", 32, 4, 2, 48) == _shapes(hf)


def test_vision_forward_intermediates_equal_transformers_hidden_states(tmp_path):
    config = tiny_config(vision=dict(num_hidden_layers=3))
    hf = hf_clip(config).vision_model.eval()
    model = tessera.CLIPVisionModel(dict(config["vision_config"]))
    model.load_state_dict({k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")})
    px = pixel_batch(config["vision_config"], batch=2)
    with torch.no_grad():
        want = hf(px, output_hidden_states=True).hidden_states
        calls = []
        model.encoder.layers[-1].register_forward_pre_hook(lambda m, a: calls.append(1))
        (picked,) = model.forward_intermediates(px, indices=[-2], stop_early=True, intermediates_only=True)
        assert not calls  # the last layer never ran
        final, picked_all = model.forward_intermediates(px, indices=2)
    torch.testing.assert_close(picked, want[-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(picked_all[0], want[-2], atol=1e-5, rtol=0)
    # timm's final output is after the final norm (post_layernorm, timm's CLIP `norm`).
    with torch.no_grad():
        normed = hf.post_layernorm(want[-1])
    torch.testing.assert_close(final, normed, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.forward_features(px), normed, atol=1e-5, rtol=0)
