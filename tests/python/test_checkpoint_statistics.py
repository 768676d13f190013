"""A checkpoint's image statistics reach whatever reads images with it. A Hugging Face folder's
preprocessor_config.json is read as transformers' image processors read it (CLIP's, BLIP's, ViT's);
a model loaded from it reports them to timm; a task whose images a checkpoint's tower reads (a
fine-tuned model, a teacher, BLIP-2's or LLaVA's tower) normalises as that checkpoint did unless
its recipe says otherwise, and a frozen tower reads the recipe's own statistics renormalised as
its own. They were all fed OpenAI CLIP's statistics, whatever the checkpoint was trained with."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import tessera
from tessera.data import ImageTransform, clip_transform
from tessera.models.image_processor import read_image_processor
from tessera.models.timm_compat import transform_settings

transformers = pytest.importorskip("transformers")

CLIP = "/work/shared/fixtures/hf/clip"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FMNIST = "/usr/share/datasets/fashion-mnist"
HALF = [0.5, 0.5, 0.5]
needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")


def clip_folder(path, processor=None):
    """The CLIP fixture, with `processor`'s preprocessor_config.json beside it."""
    if not os.path.isdir(CLIP):
        pytest.skip("the CLIP fixture is not here")
    os.makedirs(path, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(CLIP, name), path)
    if processor is not None:
        processor.save_pretrained(str(path))
    return str(path)


def gradient_image(h=45, w=60):
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], -1).astype(np.uint8))


@pytest.mark.parametrize("name, kwargs", [
    ("CLIPImageProcessor", dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=HALF,
                                image_std=[0.25, 0.5, 0.75])),
    ("BlipImageProcessor", dict(size={"height": 32, "width": 32}, image_mean=[0.1, 0.2, 0.3], image_std=HALF)),
    ("ViTImageProcessor", dict(size={"height": 32, "width": 32}, resample=2)),  # bilinear, ImageNet's 0.5
    ("CLIPImageProcessor", dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                do_normalize=False)),
])
def test_an_image_processor_file_normalises_as_transformers(tmp_path, name, kwargs):
    processor = getattr(transformers, name)(**kwargs)
    processor.save_pretrained(str(tmp_path))
    settings = transform_settings(read_image_processor(str(tmp_path)))
    ours = ImageTransform(clip_transform(32, **settings))
    grey = Image.fromarray(np.full((40, 50, 3), 77, np.uint8))  # statistics alone: exact
    want = torch.as_tensor(np.array(processor(grey, return_tensors="np")["pixel_values"][0]))
    torch.testing.assert_close(ours(grey), want, atol=1e-5, rtol=0)
    image = gradient_image()  # geometry too: crop or squash, PIL's and ATen's kernels 2-3 levels apart
    want = torch.as_tensor(np.array(processor(image, return_tensors="np")["pixel_values"][0]))
    assert (ours(image) - want).abs().max() < 0.05 / min(processor.image_std if processor.do_normalize else [1])


@pytest.mark.parametrize("change, message", [
    ({"rescale_factor": 1.0}, "rescale_factor 1.0"),
    ({"image_mean": [0.5, 0.5]}, "image_mean must be three finite numbers"),
    ({"image_std": [0.5, 0.0, 0.5]}, "image_std must be > 0"),
    ({"image_mean": [0.5, "a", 0.5]}, "image_mean must be three finite numbers"),
])
def test_what_the_pipeline_cannot_do_is_refused_by_key(tmp_path, change, message):
    config = {**transformers.CLIPImageProcessor().to_dict(), **change}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"preprocessor_config.json: {message}"):
        read_image_processor(str(tmp_path))
    (tmp_path / "preprocessor_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="an object of image processor settings"):
        read_image_processor(str(tmp_path))
    assert read_image_processor(str(tmp_path / "elsewhere")) is None


def test_a_processor_file_as_transformers_5_saves_it_and_class_defaults(tmp_path):
    """transformers 5's processors nest the image settings in processor_config.json; a key a file
    leaves out takes its class's default (ViT's: 0.5, bilinear), as transformers reads it."""
    processor = transformers.CLIPProcessor(image_processor=transformers.CLIPImageProcessor(image_mean=HALF,
                                                                                          image_std=HALF),
                                           tokenizer=transformers.CLIPTokenizerFast.from_pretrained(
                                               str(_clip_tokenizer(tmp_path / "tok"))))
    processor.save_pretrained(str(tmp_path / "proc"))
    assert not (tmp_path / "proc" / "preprocessor_config.json").exists()
    assert read_image_processor(str(tmp_path / "proc"))["mean"] == tuple(HALF)
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "ViTImageProcessor"}))
    want = transformers.ViTImageProcessor.from_pretrained(str(tmp_path / "vit"))
    got = read_image_processor(str(tmp_path / "vit"))
    assert got["mean"] == tuple(want.image_mean) and got["interpolation"] == "bilinear" and got["crop_mode"] == "squash"


def _clip_tokenizer(path):
    """A tiny CLIP BPE tokenizer folder (a processor needs one to save)."""
    path.mkdir(parents=True)
    (path / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    return path


def test_a_filter_the_pipeline_lacks_is_said_and_the_weights_load(tmp_path):
    folder = clip_folder(tmp_path / "lanczos", transformers.CLIPImageProcessor(resample=1))
    with pytest.warns(UserWarning, match="resample 1 \\(lanczos\\).*it resizes bicubic"):
        tessera.from_pretrained(folder)
    (tmp_path / "lanczos" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5]}))
    with pytest.warns(UserWarning, match="image_mean must be three finite numbers.*family's statistics stand in"):
        model = tessera.from_pretrained(folder)
    assert model.vision_model.pretrained_cfg["mean"] == tessera.data.OPENAI_CLIP_MEAN


def test_a_loaded_model_reports_its_folders_statistics_to_timm(tmp_path):
    timm_data = pytest.importorskip("timm.data")
    folder = clip_folder(tmp_path / "siglip_like", transformers.CLIPImageProcessor(image_mean=HALF, image_std=HALF))
    model = tessera.from_pretrained(folder)
    config = timm_data.resolve_data_config({}, model=model.vision_model)
    assert tuple(config["mean"]) == tuple(HALF) and tuple(config["std"]) == tuple(HALF)
    plain = tessera.from_pretrained(clip_folder(tmp_path / "plain"))
    assert tuple(timm_data.resolve_data_config({}, model=plain.vision_model)["mean"]) == tessera.data.OPENAI_CLIP_MEAN


def _vqkd_recipe(teacher, **data):
    r = yaml.safe_load(open(os.path.join(ROOT, "recipes", "fashion_mnist_vqkd.yaml")))
    r["teacher"] = {"checkpoint": teacher, "layer": -1, "target": "hidden"}
    r["model"]["config"]["encoder_config"].update(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=64)
    r["data"].update(image_size=32, batch_size=4, num_workers=0, **data)
    r["train"].update(steps=1, threads=1)
    return r


@needs_fmnist
def test_a_teacher_reads_its_own_statistics(tmp_path):
    """VQ-KD's batches take the teacher's statistics (its preprocessor file); a recipe's own are
    renormalised for it: its features equal the teacher's on pixels normalised as its own."""
    from tessera.train import build_task, recipe_from_dict
    from tessera.train.teacher import teacher_features

    folder = clip_folder(tmp_path / "teacher", transformers.CLIPImageProcessor(image_mean=HALF, image_std=HALF))
    task = build_task(recipe_from_dict(_vqkd_recipe(folder)))
    assert task.recipe.data.image_mean == HALF and task.recipe.data.image_std == HALF  # recipe.json keeps them
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    task = build_task(recipe_from_dict(_vqkd_recipe(folder, image_mean=imagenet[0], image_std=imagenet[1])))
    raw = torch.rand(2, 3, 32, 32)
    ours = (raw - torch.tensor(imagenet[0]).view(1, 3, 1, 1)) / torch.tensor(imagenet[1]).view(1, 3, 1, 1)
    tower = tessera.models.clip.CLIPVisionModel.from_pretrained(folder)
    (want,) = tower.forward_intermediates((raw - 0.5) / 0.5, indices=[-1], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(teacher_features(task.teacher, ours), want[:, 1:], atol=1e-5, rtol=1e-5)


@needs_fmnist
def test_a_fine_tuned_clip_starts_from_its_checkpoints_statistics(tmp_path):
    from tessera.train import build_task, recipe_from_dict

    folder = clip_folder(tmp_path / "pretrained", transformers.CLIPImageProcessor(image_mean=HALF, image_std=HALF))
    r = yaml.safe_load(open(os.path.join(ROOT, "recipes", "fashion_mnist_clip.yaml")))
    r["model"] = {"pretrained": folder}
    r["data"].update(image_size=32, num_workers=0, batch_size=4)
    task = build_task(recipe_from_dict(r))
    assert task.recipe.data.image_mean == HALF
    pixels = next(iter(task.train_loader(0, 1)))["pixel_values"]
    assert pixels.min() >= -1 - 1e-6 and pixels.min() < -0.99  # (0 - 0.5) / 0.5 at black pixels
    r["data"]["image_mean"], r["data"]["image_std"] = [0.1] * 3, [0.2] * 3  # the recipe's own win
    assert build_task(recipe_from_dict(r)).recipe.data.image_mean == [0.1] * 3


@needs_fmnist
def test_llava_takes_its_towers_statistics_and_chat_reads_them(tmp_path, png_codec):
    from tessera.data import instruct
    from tessera.train import build_task, recipe_from_dict
    from tessera.train.conversation_data import run_transform

    data = tmp_path / "set"
    instruct.generate(str(data), fashion=8, scenes=4, heldout_fashion=2, heldout_scenes=2, vocab_size=600)
    folder = clip_folder(tmp_path / "tower", transformers.CLIPImageProcessor(image_mean=HALF, image_std=HALF))
    text = dict(vocab_size=1024, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    r = {"task": "llava", "model": {"config": {"text_config": text, "vision_feature_layer": -1}},
         "init": {"vision_tower": folder},
         "data": {"train": str(data / "instruct.json"), "tokenizer": str(data / "tokenizer.model"),
                  "max_length": 200, "batch_size": 2, "image_size": 32},
         "train": {"plots": False, "steps": 1, "threads": 1}}
    task = build_task(recipe_from_dict(r))
    assert task.recipe.data.image_mean == HALF
    black = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
    assert float(task.transform(black).min()) == pytest.approx(-1.0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.json").write_text(json.dumps({"task": "llava", "data": {"image_aspect_ratio": "pad",
                                                                            "image_mean": HALF, "image_std": HALF}}))
    assert float(run_transform(str(run), 32)(black).min()) == pytest.approx(-1.0)
    (run / "recipe.json").write_text(json.dumps({"task": "llava", "data": {"image_mean": [0.5], "image_std": HALF}}))
    with pytest.raises(ValueError, match="recipe.json: data.image_mean and image_std: three finite values"):
        run_transform(str(run), 32)
    (run / "recipe.json").write_text(json.dumps({"task": "llava", "data": {"image_aspect_ratio": ["pad"]}}))
    with pytest.raises(ValueError, match="recipe.json: data.image_aspect_ratio \\['pad'\\] is not one of"):
        run_transform(str(run), 32)


@needs_fmnist
def test_the_models_own_checkpoint_comes_before_its_teacher(tmp_path):
    """A student continued from its own checkpoint keeps that run's statistics, the family's too:
    an empty data.image_mean meant both "not decided" and "the family's", so the teacher's won."""
    from tessera.data import OPENAI_CLIP_MEAN
    from tessera.train import build_task, recipe_from_dict

    teacher = clip_folder(tmp_path / "teacher", transformers.CLIPImageProcessor(image_mean=HALF, image_std=HALF))
    first = build_task(recipe_from_dict({**_vqkd_recipe(teacher), "data": {
        **_vqkd_recipe(teacher)["data"], "image_mean": list(OPENAI_CLIP_MEAN), "image_std": HALF}}))
    student = tmp_path / "student"
    first.build_model().save_pretrained(str(student))
    (student / "recipe.json").write_text(json.dumps({"task": "vqkd", "data": {
        "image_mean": list(OPENAI_CLIP_MEAN), "image_std": HALF}}))
    r = _vqkd_recipe(teacher)
    r["model"]["pretrained"] = str(student)
    assert build_task(recipe_from_dict(r)).recipe.data.image_mean == list(OPENAI_CLIP_MEAN)


@needs_fmnist
def test_an_older_runs_own_recipe_evaluates_on_what_it_trained_on(tmp_path):
    """A recipe.json written before data.image_mean existed trained on its family's statistics:
    evaluation does not take its teacher's in their place, and says no pixels changed."""
    from tessera.cli import _say_pixel_changes
    from tessera.data import OPENAI_CLIP_MEAN
    from tessera.train import build_task, recipe_from_dict
    from tessera.train.config import fill_older_keys

    teacher = clip_folder(tmp_path / "teacher", transformers.CLIPImageProcessor(image_mean=HALF, image_std=HALF))
    saved = _vqkd_recipe(teacher)
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.json").write_text(json.dumps(saved))  # no image_mean: an older tessera's
    recipe = recipe_from_dict(saved)
    fill_older_keys(recipe, saved)
    task = build_task(recipe)
    assert task.recipe.data.image_mean == list(OPENAI_CLIP_MEAN)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _say_pixel_changes(str(run), task.recipe)
