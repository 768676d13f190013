"""open_clip's checkpoint files load into tessera's CLIP through `create_model(name, pretrained=FILE)`,
as open_clip's own `create_model` takes them: a training checkpoint (`epoch_N.pt`: its
`state_dict`, with DDP's `module.` prefix) and safetensors weights. Side by side with open_clip
on the same weights: image and text features and logits equal; files that are not such a
checkpoint are refused by name, a pickle with code in it without running the code."""
import os
import pickle

import pytest
import torch

import tessera

open_clip = pytest.importorskip("open_clip")

VISION = dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32)
TEXT = dict(context_length=16, vocab_size=100, width=48, heads=2, layers=2)


def _reference(quick_gelu: bool):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(**VISION), text_cfg=CLIPTextCfg(**TEXT), quick_gelu=quick_gelu)
    with torch.no_grad():  # open_clip starts some tensors at zero or one: every weight differs here
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def _variant(quick_gelu: bool):
    """open_clip's ViT-B-32 (or its -quickgelu) at the reference's tiny sizes, through
    config_overrides (a variant added with add_model_config would stay registered for other tests)."""
    tower = dict(num_hidden_layers=2)
    overrides = {"projection_dim": 32,
                 "text_config": dict(tower, hidden_size=48, intermediate_size=192, num_attention_heads=2,
                                     max_position_embeddings=16, vocab_size=100, eos_token_id=99, bos_token_id=98,
                                     pad_token_id=0),
                 "vision_config": dict(tower, hidden_size=64, intermediate_size=256, num_attention_heads=2,
                                       image_size=32, patch_size=8)}
    return "ViT-B-32-quickgelu" if quick_gelu else "ViT-B-32", overrides


@pytest.mark.parametrize("quick_gelu", [True, False])
@pytest.mark.parametrize("layout", ["training_checkpoint", "safetensors"])
def test_open_clip_files_load_with_open_clips_outputs(tmp_path, quick_gelu, layout):
    ref = _reference(quick_gelu)
    name, small = _variant(quick_gelu)
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    else:
        path = tmp_path / "epoch_3.pt"
        torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()},
                    "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}}, str(path))
    model = tessera.create_model(name, pretrained=str(path), config_overrides=small).eval()
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    text = torch.randint(1, 98, (4, 16))
    text[:, 9:] = 0
    text[:, 8] = 99  # the end of text: open_clip pools at the largest id, transformers at eos
    with torch.no_grad():
        want_image, want_text, want_scale = ref(images, text)
        got = model(pixel_values=images, input_ids=text)
    torch.testing.assert_close(torch.nn.functional.normalize(got.image_embeds, dim=-1), want_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.nn.functional.normalize(got.text_embeds, dim=-1), want_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.logits_per_image, want_scale * want_image @ want_text.t(), atol=1e-4, rtol=0)


def test_what_is_not_an_open_clip_clip_checkpoint_is_refused_by_name(tmp_path):
    ref = _reference(True)
    name, small = _variant(True)
    state = dict(ref.state_dict())
    state["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(64)  # open_clip's layer scale
    torch.save(state, str(tmp_path / "scaled.pt"))
    with pytest.raises(ValueError, match=r"scaled.pt \(an open_clip checkpoint\): 'visual.transformer.resblocks.0.ls_1"
                                         r".gamma' has no place in transformers' CLIP"):
        tessera.create_model(name, pretrained=str(tmp_path / "scaled.pt"), config_overrides=small)

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(ValueError, match=r"evil.pt: not a checkpoint of tensors that can be read without running code"):
        tessera.create_model(name, pretrained=str(tmp_path / "evil.pt"), config_overrides=small)
    assert not (tmp_path / "ran").exists()
    torch.save(dict(ref.state_dict()), str(tmp_path / "whole.pt"))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:5000])
    (tmp_path / "empty.pt").write_bytes(b"")  # an IndexError from the message's own formatting before
    for bad in ("cut.pt", "empty.pt"):
        with pytest.raises(ValueError, match=rf"{bad}: cannot be read as a checkpoint .*cut short or damaged"):
            tessera.create_model(name, pretrained=str(tmp_path / bad), config_overrides=small)

    other = dict(ref.state_dict())
    other["token_embedding.weight"] = torch.zeros(50, 48)  # another vocabulary: the variant does not fit
    torch.save(other, str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match=r"other.pt \(an open_clip checkpoint\).*token_embedding"):
        tessera.create_model(name, pretrained=str(tmp_path / "other.pt"), config_overrides=small)
    with pytest.raises(ValueError, match="a checkpoint file is read as open_clip's CLIP; LlamaForCausalLM"):
        tessera.create_model("llama-50m", pretrained=str(tmp_path / "other.pt"))


def test_siglip_bias_loads_and_a_transformers_file_is_sent_to_its_folder(tmp_path):
    """open_clip_train --siglip adds logit_bias to a plain CLIP: it was refused as having no place
    in transformers' CLIP, which holds it; a transformers-layout file got that same message."""
    ref = _reference(True)
    name, small = _variant(True)
    state = dict(ref.state_dict(), logit_bias=torch.tensor([-10.0]))
    torch.save(state, str(tmp_path / "siglip.pt"))
    model = tessera.create_model(name, pretrained=str(tmp_path / "siglip.pt"), config_overrides=small,
                                 logit_bias_init_value=-1.0)
    assert model.logit_bias.item() == -10.0
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="transformers' CLIP names, not open_clip's: give the folder"):
        tessera.create_model(name, pretrained=str(tmp_path / "model.safetensors"), config_overrides=small)


def test_another_image_size_and_context_length_resample_positions_as_open_clip(tmp_path):
    """open_clip's `force_image_size` / `force_context_length` with a checkpoint of other sizes:
    its `load_checkpoint` resamples the position embeddings (image grid bicubic with antialiasing,
    text linear); tessera's create_model takes the same keywords and gives the same model."""
    from open_clip.factory import load_checkpoint
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from safetensors.torch import save_file

    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in _reference(False).state_dict().items()}, str(path))
    torch.manual_seed(2)
    ref = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(**{**VISION, "image_size": 48}),
               text_cfg=CLIPTextCfg(**{**TEXT, "context_length": 20}))
    load_checkpoint(ref, str(path))
    name, small = _variant(False)
    model = tessera.create_model(name, pretrained=str(path), config_overrides=small, force_image_size=(48, 48),
                                 force_context_length=20).eval()
    assert model.config["vision_config"]["image_size"] == 48
    assert model.config["text_config"]["max_position_embeddings"] == 20
    images, text = torch.randn(3, 3, 48, 48), torch.randint(1, 98, (4, 20))
    text[:, 12:], text[:, 11] = 0, 99
    with torch.no_grad():
        want_image, want_text, _ = ref.eval()(images, text)
        got = model(pixel_values=images, input_ids=text)
    torch.testing.assert_close(torch.nn.functional.normalize(got.image_embeds, dim=-1), want_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.nn.functional.normalize(got.text_embeds, dim=-1), want_text, atol=1e-5, rtol=0)
    # open_clip's own defaults (its training passes args.force_* through): nothing forced
    assert tessera.create_model(name, config_overrides=small, force_image_size=None, force_context_length=None,
                                force_quick_gelu=False).config["vision_config"]["image_size"] == 32
    with pytest.raises(ValueError, match="square images"):
        tessera.create_model(name, config_overrides=small, force_image_size=(48, 32))
    with pytest.raises(TypeError, match="force_image_size: open_clip's keywords for CLIP variants"):
        tessera.create_model("llama-50m", force_image_size=48)
