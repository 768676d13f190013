"""LLaVA's own checkpoints (`llava_llama`, what haotian-liu/LLaVA's training writes) converted into
a Hugging Face LLaVA folder: built here from the LLaVA fixture in LLaVA's layout (keys, config,
a vocabulary without <image>, the tower in its own CLIP folder), converted, and loaded by tessera
and by transformers, both equal to the fixture's outputs; what cannot be converted is named."""
import json
import os

import pytest
import torch

import tessera
from tessera.models.llava_original import convert_llava_original

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def original(fixture_dir, tmp_path_factory):
    """(LLaVA-layout folder, its CLIP tower folder, the fixture's folder)."""
    d = fixture_dir("llava")
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(d)).eval()
    root = tmp_path_factory.mktemp("llava-original")
    tower = root / "clip-tower"
    hf.model.vision_tower.save_pretrained(str(tower))  # transformers 5 keeps the parts under .model
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                    image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(str(tower))
    vocab = hf.config.image_token_index  # LLaVA's vocabulary has no <image>: tessera adds it there
    state = {}
    for key, value in hf.state_dict().items():
        if ".vision_tower." in f".{key}":
            continue
        key = key.replace("model.language_model.", "model.").replace("language_model.model.", "model.")
        key = key.replace("language_model.lm_head.", "lm_head.")
        key = key.replace("model.multi_modal_projector.linear_1.", "model.mm_projector.0.")
        key = key.replace("model.multi_modal_projector.linear_2.", "model.mm_projector.2.")
        key = key.replace("multi_modal_projector.linear_1.", "model.mm_projector.0.")
        key = key.replace("multi_modal_projector.linear_2.", "model.mm_projector.2.")
        state[key] = value[:vocab].clone() if key in ("model.embed_tokens.weight", "lm_head.weight") else value.clone()
    src = root / "llava-v1.5"
    src.mkdir()
    torch.save(state, src / "pytorch_model.bin")
    text = hf.config.text_config.to_dict()
    config = {k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "hidden_act",
                                   "bos_token_id", "eos_token_id", "tie_word_embeddings")}
    config.update(model_type="llava_llama", architectures=["LlavaLlamaForCausalLM"], vocab_size=vocab,
                  rope_theta=10000.0, mm_vision_tower=str(tower), mm_projector_type="mlp2x_gelu",
                  mm_vision_select_layer=hf.config.vision_feature_layer, mm_vision_select_feature="patch",
                  image_aspect_ratio="pad")
    (src / "config.json").write_text(json.dumps(config))
    return src, tower, d


def test_the_converted_folder_equals_the_model_in_tessera_and_transformers(original, tmp_path):
    from safetensors.torch import load_file

    src, tower, fixture = original
    out = convert_llava_original(str(src), str(tmp_path / "converted"))
    io = load_file(str(fixture / "io.safetensors"))
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    ours = tessera.from_pretrained(out)
    assert ours.config["image_token_index"] == vocab and ours.config["text_config"]["vocab_size"] % 64 == 0
    got = ours(io["input_ids"], pixel_values=io["pixel_values"]).logits[..., :vocab]
    torch.testing.assert_close(got, io["logits"][..., :vocab], atol=1e-4, rtol=1e-4)
    theirs = transformers.LlavaForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        want = theirs(input_ids=io["input_ids"], pixel_values=io["pixel_values"]).logits[..., :vocab]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert ours.vision_tower.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)  # the tower's processor travels
    recipe = json.loads(open(os.path.join(out, "recipe.json")).read())
    assert recipe["data"]["image_aspect_ratio"] == "pad" and recipe["data"]["template"] == "v1"


def variant(src, tmp_path, change):
    """The original folder's weights with its config changed by `change`."""
    bad = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
    bad.mkdir()
    os.symlink(src / "pytorch_model.bin", bad / "pytorch_model.bin")
    (bad / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()), **change}))
    return bad


def test_the_command_line_and_what_cannot_be_converted(original, tmp_path, capsys):
    from tessera.cli import main

    src, tower, _ = original
    assert main(["import-llava", str(src), str(tmp_path / "a"), "--vision-tower", str(tower)]) == 0
    for change, message in [({"mm_vision_tower": "openai/clip-vit-large-patch14-336"}, "is not a local folder"),
                            ({"mm_projector_type": "mlp3x_gelu"}, "mm_projector_type 'mlp3x_gelu'"),
                            ({"model_type": "llava"}, "LLaVA's own checkpoints say llava_llama")]:
        assert main(["import-llava", str(variant(src, tmp_path, change)), str(tmp_path / "b")]) == 2
        assert message in capsys.readouterr().err


def test_what_changes_the_models_input_or_needs_a_merge_is_refused_by_name(original, tmp_path):
    """LLaVA settings tessera's LLaVA does not feed (start/end tokens, anyres tiles, merged patch
    features) and LoRA output (merge first) were converted without a word or failed unnamed."""
    src, tower, _ = original
    for change, message in [({"mm_use_im_start_end": True}, "mm_use_im_start_end True"),
                            ({"image_aspect_ratio": "anyres"}, "image_aspect_ratio 'anyres'"),
                            ({"mm_patch_merge_type": "spatial_unpad"}, "mm_patch_merge_type 'spatial_unpad'")]:
        bad = variant(src, tmp_path, change)
        with pytest.raises(ValueError, match=f"{message}: tessera's LLaVA feeds one image"):
            convert_llava_original(str(bad), str(tmp_path / "out"))
    bad = variant(src, tmp_path, {})
    (bad / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LLaVA's LoRA output .* merge it into its base first"):
        convert_llava_original(str(bad), str(tmp_path / "out"))


def test_a_tied_language_model_converts(original, tmp_path):
    src, tower, _ = original
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    del state["lm_head.weight"]
    tied = tmp_path / "tied"
    tied.mkdir()
    torch.save(state, tied / "pytorch_model.bin")
    (tied / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()),
                                                  "tie_word_embeddings": True}))
    out = convert_llava_original(str(tied), str(tmp_path / "out"))
    model = tessera.from_pretrained(out)
    torch.testing.assert_close(model.get_output_embeddings().weight, model.get_input_embeddings().weight)
