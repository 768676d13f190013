"""What travels from one training stage to the next, and to chat and evaluation: a run folder a
recipe names is pinned to the checkpoint it resolved to (evaluation rebuilt a frozen tower from the
run's newest checkpoint of the day), a run's generation_config.json goes on with its weights and
its stop ids end chat's answers, BLIP-2 stage 1 refuses a tower target it would ignore, and a
recipe.json written before a key existed reads as that key's default."""
import argparse
import json
import os
import shutil

import pytest
import yaml

import tessera
from tessera.train import build_task, recipe_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FMNIST = "/usr/share/datasets/fashion-mnist"
needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")


def clip_run(root, steps=(1, 2)):
    """A run folder of the CLIP fixture's checkpoints."""
    src = "/work/shared/fixtures/hf/clip"
    if not os.path.isdir(src):
        pytest.skip("the CLIP fixture is not here")
    for step in steps:
        ckpt = root / "checkpoints" / f"step-{step:08d}"
        ckpt.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(src, name), ckpt)
    return root


def vqkd_recipe(teacher):
    r = yaml.safe_load(open(os.path.join(ROOT, "recipes", "fashion_mnist_vqkd.yaml")))
    r["teacher"] = {"checkpoint": str(teacher), "layer": -1, "target": "hidden"}
    r["model"]["config"]["encoder_config"].update(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=64)
    r["data"].update(image_size=32, batch_size=4, num_workers=0)
    return r


@needs_fmnist
def test_a_run_folder_a_recipe_names_is_pinned_to_its_checkpoint(tmp_path):
    run = clip_run(tmp_path / "clip")
    task = build_task(recipe_from_dict(vqkd_recipe(run)))
    pinned = task.recipe.teacher.checkpoint
    assert pinned == str(run / "checkpoints" / "step-00000002")
    clip_run(run, steps=(3,))  # the CLIP run trains on: the recipe.json above still names step 2
    again = build_task(recipe_from_dict({**vqkd_recipe(run), "teacher": {"checkpoint": pinned}}))
    assert again.recipe.teacher.checkpoint == pinned


def test_a_key_an_older_recipe_json_lacks_reads_as_its_default(tmp_path):
    from tessera.train.checkpoint import recipe_changes
    from tessera.train.config import recipe_defaults, recipe_to_dict

    recipe = recipe_from_dict(yaml.safe_load(open(os.path.join(ROOT, "recipes", "fashion_mnist_clip.yaml"))))
    saved = recipe_to_dict(recipe)
    del saved["data"]["image_mean"], saved["data"]["image_std"]  # written before they existed
    (tmp_path / "recipe.json").write_text(json.dumps(saved))
    assert recipe_changes(str(tmp_path), recipe_to_dict(recipe), recipe_defaults(recipe)) == []
    recipe.data.image_mean, recipe.data.image_std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258,
                                                                                         0.27577711]
    assert recipe_changes(str(tmp_path), recipe_to_dict(recipe), recipe_defaults(recipe)) == []  # the family's
    recipe.data.image_mean, recipe.data.image_std = [0.5] * 3, [0.5] * 3
    assert recipe_changes(str(tmp_path), recipe_to_dict(recipe), recipe_defaults(recipe)) == [
        "data.image_mean: [0.48145466, 0.4578275, 0.40821073] -> [0.5, 0.5, 0.5]",
        "data.image_std: [0.26862954, 0.26130258, 0.27577711] -> [0.5, 0.5, 0.5]"]


@needs_fmnist
def test_blip2_stage1_refuses_a_tower_target_it_would_ignore(tmp_path):
    r = yaml.safe_load(open(os.path.join(ROOT, "recipes", "fashion_mnist_blip2_stage1.yaml")))
    r["tower"] = {"checkpoint": str(clip_run(tmp_path / "clip")), "target": "projected"}
    with pytest.raises(ValueError, match="tower.target 'projected': BLIP-2's Q-Former reads the tower's post-normed"):
        build_task(recipe_from_dict(r))


@pytest.fixture
def llava_with_settings(tmp_path, png_codec):
    """A LLaVA folder whose generation_config.json stops at 2 or 13 and makes 7 tokens, with a
    generated set's tokenizer."""
    from tessera.data import instruct
    from tessera.text import SentencePieceTokenizer

    data = tmp_path / "set"
    instruct.generate(str(data), fashion=8, scenes=4, heldout_fashion=2, heldout_scenes=2, vocab_size=500)
    tok = SentencePieceTokenizer(data / "tokenizer.model", special_tokens=["<image>"])
    config = dict(text_config=dict(vocab_size=512, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=2, max_position_embeddings=160, bos_token_id=1,
                                   eos_token_id=2),
                  vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=28, patch_size=7),
                  image_token_index=tok.special_tokens["<image>"], vision_feature_layer=-1)
    folder = tmp_path / "llava"
    tessera.LlavaForConditionalGeneration(config).save_pretrained(str(folder))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, 13],
                                                               "max_new_tokens": 7}))
    return folder, data


@needs_fmnist
def test_a_stage_keeps_the_generation_config_of_the_run_it_starts_from(llava_with_settings, tmp_path):
    folder, data = llava_with_settings
    r = {"task": "llava", "init": {"checkpoint": str(folder)},
         "data": {"train": str(data / "instruct.json"), "tokenizer": str(data / "tokenizer.model"),
                  "max_length": 140, "batch_size": 2, "max_samples": 4, "index_cache": str(tmp_path / "idx")},
         "train": {"plots": False, "steps": 1, "threads": 1}}
    model = build_task(recipe_from_dict(r)).build_model()
    model.save_pretrained(str(tmp_path / "next"))
    again = tessera.from_pretrained(str(tmp_path / "next"))
    assert again.generation_config.eos_token_id == [2, 13] and again.generation_config.max_new_tokens == 7


@needs_fmnist
def test_chat_ends_answers_at_the_runs_stop_ids_and_takes_its_length(llava_with_settings, monkeypatch):
    from tessera.chat_cli import run_chat
    from tessera.models.llava import LlavaForConditionalGeneration

    folder, data = llava_with_settings
    seen = {}
    stream = LlavaForConditionalGeneration.stream

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return stream(self, *args, **kwargs)

    monkeypatch.setattr(LlavaForConditionalGeneration, "stream", spy)
    image = str(data / "images" / "fashion" / "test" / "00000.png")
    args = argparse.Namespace(checkpoint=str(folder), image=[image], question="What is this item?",
                              tokenizer=str(data / "tokenizer.model"), template="v1", max_new_tokens=None,
                              temperature=0.0, seed=0)
    assert run_chat(args) == 0
    assert seen["eos_token_id"] == [2, 13] and seen["max_new_tokens"] == 7
