"""Checkpoint files from the original research repositories: a training checkpoint's tensors under
`model` (MAE's, BEiT's, LAVIS's release files) or `state_dict` are read where they are; `tessera
convert` checks the tensors against its --config model before it writes, and a file in an original
layout (a timm-style ViT, LAVIS's BLIP-2, LLaVA's own) is named with what converts it. `convert`
said "holds no tensors" of a wrapped file and wrote an unloadable folder of an unconverted one."""
import json
import os

import pytest
import torch

import tessera
from tessera.cli import main


def test_convert_reads_a_wrapped_file_and_checks_it_against_the_config(fixture_dir, tmp_path, capsys):
    clip = fixture_dir("clip")
    state = tessera.from_pretrained(str(clip)).state_dict()
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pth")
    assert main(["convert", str(tmp_path / "wrapped.pth"), str(tmp_path / "out"), "--config",
                 str(clip / "config.json")]) == 0
    assert tessera.from_pretrained(str(tmp_path / "out")) is not None
    timm_like = {"cls_token": torch.zeros(1, 1, 64), "blocks.0.attn.qkv.weight": torch.zeros(192, 64)}
    torch.save({"model": timm_like}, tmp_path / "mae.pth")
    assert main(["convert", str(tmp_path / "mae.pth"), str(tmp_path / "bad"), "--config",
                 str(clip / "config.json")]) == 2
    err = capsys.readouterr().err
    assert "its tensors do not fit CLIPModel" in err and "convert_vit_mae_to_pytorch.py" in err, err
    assert not os.path.exists(tmp_path / "bad")
    torch.save({"args": "a Namespace stands here", "epoch": 1}, tmp_path / "empty.pth")
    assert main(["convert", str(tmp_path / "empty.pth"), str(tmp_path / "bad"), "--config",
                 str(clip / "config.json")]) == 2
    assert "holds no tensors (its keys: args, epoch)" in capsys.readouterr().err


def test_a_non_clip_model_given_an_original_file_names_its_layout(tmp_path):
    torch.save({"model": {"blocks.0.attn.qkv.weight": torch.zeros(6, 2), "cls_token": torch.zeros(1, 1, 2)}},
               tmp_path / "mae_pretrain.pth")
    with pytest.raises(ValueError, match="this file's layout is a timm-style ViT .*convert_vit_mae_to_pytorch.py"):
        tessera.create_model("mae-vit-base-patch16", pretrained=str(tmp_path / "mae_pretrain.pth"))


def test_openai_torchscript_metadata_is_dropped_as_open_clip_drops_it(tmp_path):
    """OpenAI's JIT state dict keeps input_resolution, context_length and vocab_size beside the
    tensors; they were refused as parts CLIP cannot hold."""
    open_clip = pytest.importorskip("open_clip")
    ref = open_clip.create_model("ViT-B-32", pretrained=None)
    state = dict(ref.state_dict())
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    torch.save(state, tmp_path / "openai.pt")
    model = tessera.create_model("ViT-B-32", pretrained=str(tmp_path / "openai.pt"))
    assert json.dumps(model.config["vision_config"]["image_size"]) == "224"


def test_from_pretrained_given_a_file_says_it_takes_a_folder(tmp_path):
    torch.save({"model": {"blocks.0.attn.qkv.weight": torch.zeros(6, 2)}}, tmp_path / "mae.pth")
    for load in (tessera.from_pretrained, tessera.ViTMAEForPreTraining.from_pretrained):
        with pytest.raises(ValueError, match="mae.pth is a file; from_pretrained loads a checkpoint folder.*"
                                             "this file is a timm-style ViT"):
            load(str(tmp_path / "mae.pth"))
