"""tessera's datasets and transforms pickle as their arguments, so torch.utils.data.DataLoader
workers can be spawned processes (macOS's and Windows' default start method): the batches equal
those of the main process."""
import os
import pickle

import pytest
import torch

import tessera.data as td

FMNIST = "/usr/share/datasets/fashion-mnist"
needs_data = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")


class Transformed(torch.utils.data.Dataset):
    """A user's dataset: a tessera dataset and a tessera transform with a per-sample generator."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return 64

    def __getitem__(self, i):
        image, label = self.base[i]
        return self.transform(image, torch.Generator().manual_seed(i)), label


def test_transform_options_round_trip_every_field():
    o = td.clip_transform(32, train=True, scale=(0.5, 1.0), ratio=(0.5, 2.0), hflip_prob=0.25,
                          interpolation="bilinear", resize_size=40, mean=(0.1, 0.2, 0.3), std=(1, 2, 3),
                          expand_grayscale=False)
    back = pickle.loads(pickle.dumps(o))
    for field in ("image_size", "resize_size", "mean", "std", "train", "scale", "ratio", "hflip_prob",
                  "expand_grayscale", "interpolation"):
        assert getattr(back, field) == getattr(o, field), field


@needs_data
def test_spawned_workers_give_the_main_process_batches(tmp_path):
    data = Transformed(td.FashionMNIST(FMNIST, "test"), td.ImageTransform(td.clip_transform(32, train=True)))
    for ds in (data.base, data.transform):
        assert type(pickle.loads(pickle.dumps(ds))) is type(ds)
    here = list(torch.utils.data.DataLoader(data, batch_size=16))
    spawned = list(torch.utils.data.DataLoader(data, batch_size=16, num_workers=2, multiprocessing_context="spawn"))
    assert len(here) == len(spawned) == 4
    for (x, y), (sx, sy) in zip(here, spawned):
        assert torch.equal(x, sx) and torch.equal(y, sy)


def test_folder_and_caption_datasets_round_trip(tmp_path, png_codec):
    from PIL import Image

    for i, cls in enumerate(["cat", "dog", "dog"]):
        (tmp_path / "f" / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8 + i, 9), (i * 40, 10, 20)).save(tmp_path / "f" / cls / f"{i}.png")
    (tmp_path / "c.jsonl").write_text('{"img": "f/cat/0.png", "text": "a cat"}\n{"img": "f/dog/1.png", "text": "a dog"}\n')
    for ds in (td.ImageFolder(tmp_path / "f", ".png"), td.CaptionDataset(tmp_path / "c.jsonl", "img", "text")):
        back = pickle.loads(pickle.dumps(ds))
        assert len(back) == len(ds) and back.classes == ds.classes
        for i in range(len(ds)):
            assert torch.equal(back[i][0], ds[i][0]) and back[i][1] == ds[i][1]


class WithTransform(td.FashionMNIST):
    """torchvision's style: a subclass with its own constructor and attributes."""

    def __init__(self, transform, split="test"):
        super().__init__(FMNIST, split)
        self.transform = transform


class Sevens(td.ImageTransform):
    def __call__(self, image, generator=None):
        return super().__call__(image, generator) * 0 + 7


@needs_data
def test_subclasses_and_their_attributes_survive_pickling():
    ds = WithTransform(Sevens(td.clip_transform(16)))
    ds.note = "kept"
    for back in (pickle.loads(pickle.dumps(ds)), __import__("copy").copy(ds)):
        assert type(back) is WithTransform and back.note == "kept" and back.split == "test"
        assert type(back.transform) is Sevens and bool((back.transform(back[0][0]) == 7).all())
        assert torch.equal(back[3][0], ds[3][0])
