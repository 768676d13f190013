"""Each family's images are normalised as its reference normalises them: the tasks' loaders (MAE
ImageNet's mean and std, BEiT 0.5 with its VQ-KD tokenizer reading its own run's, CLIP's and
BLIP-2's OpenAI's), BLIP-2's evaluation resizing to the square as transformers' BlipImageProcessor
and LAVIS do, a recipe's data.image_mean / image_std over them, and timm's resolve_data_config on
the pretraining models. They all used OpenAI CLIP's, and BLIP-2's evaluation center-cropped."""
import numpy as np
import pytest
import torch
from PIL import Image

import tessera
from tessera.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageTransform, clip_transform
from tessera.train.image_data import ImageData, image_dataset, image_loader, pipeline_settings

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("grey")
    (root / "a").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(root / "a" / "0.png")
    return root


@pytest.mark.parametrize("task, stats", [("mae", IMAGENET), ("beit", ((0.5,) * 3, (0.5,) * 3)),
                                         ("vqkd", (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
                                         ("clip", (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD))])
@pytest.mark.parametrize("train", [True, False])
def test_each_tasks_loader_normalises_as_its_family(grey_folder, task, stats, train):
    from tessera.models.timm_compat import CLIP_DATA
    from tessera.train import tasks

    pipeline = getattr(tasks.task_class(task), "image_pipeline", CLIP_DATA)
    d = ImageData(dataset="image_folder", root=str(grey_folder), image_size=32, batch_size=1, num_workers=0,
                  train_augment=True)
    loader = image_loader(d, image_dataset(d, train), train, 0, pipeline=pipeline)
    pixel = next(iter(loader))["pixel_values"][0, :, 0, 0]
    want = torch.tensor([(128 / 255 - m) / s for m, s in zip(*stats)])
    torch.testing.assert_close(pixel, want, atol=1e-6, rtol=0)
    d.image_mean, d.image_std = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]  # the recipe's own
    loader = image_loader(d, image_dataset(d, train), train, 0, pipeline=pipeline)
    pixel = next(iter(loader))["pixel_values"][0, :, 0, 0]
    torch.testing.assert_close(pixel, torch.tensor([(128 / 255 - m) / s for m, s in zip(d.image_mean, d.image_std)]),
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="image_mean and image_std: three finite values"):
        ImageData(image_mean=[0.5], image_std=[0.5]).validate("data")


def test_beits_tokenizer_reads_the_pixels_its_own_run_normalised(grey_folder):
    """BEiT's loader normalises with 0.5; the VQ-KD tokenizer was trained on CLIP's pixels (its
    task's, or its recipe's): its input is the same image renormalised, exactly."""
    from tessera.train.beit_task import BeitTask
    from tessera.train.image_data import Renormalise

    ours = pipeline_settings(ImageData(), BeitTask.image_pipeline)
    clip = (torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1))
    raw = torch.rand(2, 3, 8, 8)
    beit_px = (raw - 0.5) / 0.5
    to_tokenizer = Renormalise(ours, {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD})
    torch.testing.assert_close(to_tokenizer(beit_px), (raw - clip[0]) / clip[1], atol=1e-6, rtol=0)
    assert Renormalise(ours, ours)(beit_px) is beit_px


def test_blip2_evaluation_resizes_to_the_square_as_its_processor():
    """transformers' BlipImageProcessor (and LAVIS's blip_image_eval) resize the whole image to
    S x S; a 4:3 image lost a quarter of its width to a center crop (edges 0.45 off)."""
    transformers = pytest.importorskip("transformers")
    h, w, S = 480, 640, 224
    yy, xx = np.mgrid[0:h, 0:w]
    image = Image.fromarray(np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], -1).astype(np.uint8))
    ref = transformers.BlipImageProcessor(size={"height": S, "width": S}, image_mean=OPENAI_CLIP_MEAN,
                                          image_std=OPENAI_CLIP_STD)
    want = torch.as_tensor(np.array(ref(image, return_tensors="np")["pixel_values"][0]))
    settings = tessera.models.timm_compat.transform_settings(tessera.models.timm_compat.BLIP2_DATA)
    got = ImageTransform(clip_transform(S, **settings))(image)
    assert settings["resize_mode"] == "squash"
    assert (got - want).abs().max() < 0.05  # bicubic: PIL's and ATen's antialiased kernels, 2-3 levels apart
    cropped = ImageTransform(clip_transform(S))(image)
    assert (cropped - want).abs().max() > 0.3  # the center crop it was
    with pytest.raises(ValueError, match="resize_mode must be 'shortest', 'shortest_floor', 'squash' or 'pad'"):
        ImageTransform(clip_transform(S, resize_mode="longest"))


def test_pretraining_models_tell_timm_their_encoders_pipeline(fixture_dir):
    timm = pytest.importorskip("timm")
    for family, mean in (("mae", IMAGENET[0]), ("beit", (0.5, 0.5, 0.5))):
        model = tessera.from_pretrained(str(fixture_dir(family)))
        encoder = model.vit if family == "mae" else model.beit
        config = timm.data.resolve_data_config({}, model=model)
        assert tuple(config["mean"]) == mean and config["input_size"] == encoder.pretrained_cfg["input_size"]


def test_half_and_bfloat16_images_are_transformed():
    """A float16 CHW tensor raised ATen's "compute_index_ranges_weights not implemented for 'Half'"."""
    image = torch.rand(3, 40, 30)
    want = ImageTransform(clip_transform(16))(image)
    for dtype in (torch.float16, torch.bfloat16):
        torch.testing.assert_close(ImageTransform(clip_transform(16))(image.to(dtype)), want, atol=0.05, rtol=0)


def test_open_clips_preprocessing_keywords_are_taken_or_refused_by_name():
    """`image_interpolation` and `image_resize_mode` were refused as unknown config keys."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    small = dict(vision_config=dict(image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=32,
                                    intermediate_size=64, num_attention_heads=2))
    _, _, val = tessera.create_model_and_transforms("ViT-B-32", config_overrides=small, image_resize_mode="squash",
                                                    image_interpolation="bilinear")
    want = ImageTransform(clip_transform(32, resize_mode="squash", interpolation="bilinear"))(image)
    torch.testing.assert_close(val(image), want)
    for kwargs, message in ((dict(image_resize_mode="longest"), "'longest' pads"),
                            (dict(aug_cfg={"color_jitter": 0.4}), "open_clip's training augmentations")):
        with pytest.raises(ValueError, match=message):
            tessera.create_model_and_transforms("ViT-B-32", config_overrides=small, **kwargs)


def test_llavas_pad_aspect_ratio_is_llavas_expand2square_then_clips_processor():
    """LLaVA-1.5's `image_aspect_ratio: pad`: the image centered on a square of the processor's mean
    colour (int(mean * 255)), then CLIPImageProcessor. It center-cropped, losing the sides."""
    transformers = pytest.importorskip("transformers")
    from tessera.train.conversation_data import ConversationData

    S = 32
    ref = transformers.CLIPImageProcessor(size={"shortest_edge": S}, crop_size={"height": S, "width": S})
    rng = np.random.default_rng(0)
    for h, w in ((40, 70), (70, 40), (33, 33)):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        side = max(h, w)
        square = Image.new("RGB", (side, side), tuple(int(m * 255) for m in ref.image_mean))
        square.paste(image, ((side - w) // 2, (side - h) // 2))  # LLaVA's expand2square
        want = torch.as_tensor(np.array(ref(square, return_tensors="np")["pixel_values"][0]))
        data = ConversationData(train="x", tokenizer="y", image_size=S, image_aspect_ratio="pad")
        got = data.transform()(image)
        assert (got - want).abs().max() < 0.05, (h, w)  # bicubic, PIL's and ATen's kernels
    # a grey image: LLaVA pads its RGB conversion with the mean colour, not grey
    grey = Image.fromarray(rng.integers(0, 256, (20, 33), dtype=np.uint8))
    square = Image.new("RGB", (33, 33), tuple(int(m * 255) for m in ref.image_mean))
    square.paste(grey.convert("RGB"), (0, (33 - 20) // 2))
    want = torch.as_tensor(np.array(ref(square, return_tensors="np")["pixel_values"][0]))
    got = ImageTransform(clip_transform(S, resize_mode="pad"))(torch.from_numpy(np.array(grey))[..., None])
    assert (got - want).abs().max() < 0.05
    with pytest.raises(ValueError, match="image_aspect_ratio must be 'square' or 'pad'"):
        ConversationData(train="x", tokenizer="y", image_aspect_ratio="anyres").validate("data")


def test_a_trained_run_is_read_with_its_tasks_statistics(fixture_dir, tmp_path):
    """A feature-target MIM run is a BEiT trained on its CLIP teacher's pixels: the probe read it
    with BEiT's 0.5 (the model's family) instead of the statistics it was trained with."""
    import json
    import shutil

    from tessera.train.image_data import checkpoint_pipeline

    run = tmp_path / "mim"
    shutil.copytree(fixture_dir("beit"), run)
    model = tessera.from_pretrained(str(run))
    assert checkpoint_pipeline(str(run), model)["mean"] == (0.5, 0.5, 0.5)  # no recipe: the family's
    (run / "recipe.json").write_text(json.dumps({"task": "mim_features", "data": {}}))
    assert checkpoint_pipeline(str(run), model)["mean"] == tuple(OPENAI_CLIP_MEAN)
    (run / "recipe.json").write_text(json.dumps({"task": "beit", "data": {"image_mean": [0.1] * 3,
                                                                          "image_std": [0.2] * 3}}))
    assert checkpoint_pipeline(str(run), model)["std"] == (0.2, 0.2, 0.2)
    (run / "recipe.json").write_text(json.dumps({"task": "no_such_task"}))
    assert checkpoint_pipeline(str(run), model)["mean"] == (0.5, 0.5, 0.5)


def test_blip2_stage_two_resizes_as_its_processor_and_eval_says_other_pixels(tmp_path):
    """LLaVA's task with the Q-Former projector (BLIP-2's stages 2) center-cropped where BLIP-2
    resizes whole (`image_aspect_ratio: squash`); `tessera eval RUN --recipe R` with a recipe whose
    pixel settings differ from the run's said nothing."""
    from tessera.cli import _say_pixel_changes
    from tessera.train import recipe_from_dict
    from tessera.train.conversation_data import ConversationData, aspect_transform

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 56, 3), dtype=np.uint8))
    squash = ImageTransform(clip_transform(28, resize_mode="squash"))(image)
    torch.testing.assert_close(aspect_transform(28, "squash")(image), squash)
    ConversationData(train="x", tokenizer="y", image_aspect_ratio="squash").validate("data")
    (tmp_path / "recipe.json").write_text(__import__("json").dumps(
        {"task": "clip", "data": {"image_mean": [0.2, 0.3, 0.4], "image_std": [0.5, 0.6, 0.7]}}))
    with pytest.warns(UserWarning, match=r"other pixels than it was trained on \(data.image_mean"):
        _say_pixel_changes(str(tmp_path), recipe_from_dict({"task": "clip"}))
