"""tessera.data against torchvision + PIL, and the loader's guarantees.

Measured on real JPEG/PNG files written from Fashion-MNIST (upscaled, gray and RGB) and from
random RGB images (noise and smooth), sizes 97x131 to 500x333, 224 px CLIP eval transform:

* decoding: equal to PIL's ``Image.open(f).convert("RGB")``, max abs diff 0 for PNG and for
  JPEG (libjpeg-turbo both; other JPEG builds may differ by a level, allowed below);
* eval transform vs torchvision v2 on the same uint8 tensor (Resize bicubic antialias,
  CenterCrop, ``x.float().div(255)``, Normalize): max abs diff 0.0 (bitwise); with
  ``v2.ToDtype(scale=True)`` (multiplies by 1/255) 4.8e-7;
* eval transform vs the PIL pipeline (``Resize`` on the PIL image, ``ToTensor``,
  ``Normalize``), a different resize implementation: at most 2 uint8 levels, i.e. max abs diff
  0.030 after normalisation;
* RandomResizedCrop boxes and flips: the same draws as torchvision for the same seed, so the
  whole training transform equals torchvision v2's bitwise, and is within the same 2 levels
  of the PIL pipeline on natural-like images (not on pixel noise cropped to shrink one side
  and enlarge the other: PIL and torchvision's tensor path order their two resize passes
  differently there, and differ from each other by up to ~25 levels).
"""
from __future__ import annotations

import gzip
import io
import time

import numpy as np
import pytest
import torch

import tessera

if not hasattr(tessera._C, "data"):
    pytest.skip("tessera._C.data is not built", allow_module_level=True)

import tessera.data as td  # noqa: E402

PIL = pytest.importorskip("PIL.Image")
T = pytest.importorskip("torchvision.transforms")
T2 = pytest.importorskip("torchvision.transforms.v2")
from torch.utils.data import DistributedSampler  # noqa: E402

FMNIST = td.FASHION_MNIST_ROOT
MEAN, STD = td.OPENAI_CLIP_MEAN, td.OPENAI_CLIP_STD
BICUBIC = T.InterpolationMode.BICUBIC
# Two uint8 levels after Normalize, divided by the smallest std.
PIL_TOL = 2.0 / 255 / min(STD) + 1e-6

needs_decoder = pytest.mark.skipif(not td.image_decode_available(), reason="built without OpenCV")


def _fmnist_images(n: int) -> np.ndarray:
    with gzip.open(f"{FMNIST}/t10k-images-idx3-ubyte.gz") as f:
        return np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)[:n]


@pytest.fixture(scope="session")
def images():
    """(name, PIL image): Fashion-MNIST upscaled (gray and RGB), RGB noise, smooth RGB."""
    rng = np.random.default_rng(0)
    fm = _fmnist_images(6)
    sizes = [(256, 256), (300, 200), (131, 97), (320, 240), (224, 224), (500, 333)]
    out = []
    for k, size in enumerate(sizes):
        up = PIL.fromarray(fm[k]).resize(size, PIL.BICUBIC)
        out.append((f"fmnist{k}", up.convert("RGB") if k % 2 else up))
        out.append((f"noise{k}", PIL.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))))
        small = PIL.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
        out.append((f"smooth{k}", small.resize(size, PIL.BICUBIC)))
    return out


def _encode(img, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, quality=90)
    return buf.getvalue()


def _pil_rgb(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(PIL.open(io.BytesIO(data)).convert("RGB")))


def _div255(x):
    return x.float().div(255)  # ToTensor's conversion


# ---- decoding ------------------------------------------------------------------------------

@needs_decoder
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decode_matches_pil(images, fmt):
    worst = 0
    for name, img in images:
        data = _encode(img, fmt)
        ours = td.decode_image(data, name)
        ref = _pil_rgb(data)
        assert ours.shape == ref.shape and ours.dtype == torch.uint8
        worst = max(worst, (ours.int() - ref.int()).abs().max().item())
    assert worst <= (0 if fmt == "PNG" else 2), f"{fmt} max abs diff {worst}"


@needs_decoder
def test_cmyk_jpeg_decodes_as_pil_converts_it(images):
    """CMYK JPEG went to OpenCV, whose CMYK->RGB rounding is not PIL's: +1 level on 99.5 % of
    values (past the eval transform's 2-level tolerance against open_clip). Now read as PIL reads
    it (Adobe polarity, its cmyk2rgb): exact."""
    import PIL.Image as PIL

    for name, img in images[:4]:
        buf = io.BytesIO()
        img.convert("CMYK").save(buf, "JPEG", quality=95)
        data = buf.getvalue()
        assert PIL.open(io.BytesIO(data)).mode == "CMYK"
        assert torch.equal(td.decode_image(data, name), _pil_rgb(data)), name


@needs_decoder
@pytest.mark.parametrize("lossless", [True, False], ids=["lossless", "lossy"])
def test_webp_decodes_as_pil_decodes_it(images, lossless):
    """img2dataset writes WebP (--encode_format webp): its samples were skipped as "not a JPEG or
    PNG". Sizes come from the header (VP8, VP8L, and VP8X when there is alpha); an alpha channel
    is dropped as PIL's convert("RGB") drops it."""
    worst = 0
    for name, img in images[:9] + [("alpha", images[1][1].convert("RGBA"))]:
        if name == "alpha":
            img.putalpha(PIL.fromarray(np.tile(np.arange(img.width, dtype=np.uint8), (img.height, 1))))
        buf = io.BytesIO()
        img.save(buf, "WEBP", lossless=lossless, quality=90)
        data = buf.getvalue()
        kind, height, width, complete = tessera._C.data.image_info(data)
        assert (kind, height, width, complete) == ("webp", img.height, img.width, True), name
        ours, ref = td.decode_image(data, name), _pil_rgb(data)
        assert ours.shape == ref.shape and ours.dtype == torch.uint8
        worst = max(worst, (ours.int() - ref.int()).abs().max().item())
        with pytest.raises(ValueError, match=f"{name}\\): truncated or corrupt webp"):
            td.decode_image(data[: len(data) // 2], name)
    assert worst == 0, f"max abs diff {worst}"


def test_decode_errors_name_the_source(tmp_path):
    with pytest.raises(ValueError, match=r"x\.gif\): not a JPEG, PNG or WebP .*first bytes: 47 49 46 38"):
        td.decode_image(b"GIF89a\x01\x00\x01\x00", "x.gif")
    bomb = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + (50000).to_bytes(4, "big") * 2 + b"\x08\x02\0\0\0" + bytes(8) + b"IEND"
    with pytest.raises(ValueError, match="exceeds the limit"):
        td.decode_image(bomb, "bomb.png")
    with pytest.raises(FileNotFoundError):
        td.read_image(tmp_path / "missing.png")
    if not td.image_decode_available():  # a build without OpenCV says so, naming the file
        with pytest.raises(RuntimeError, match=r"a\.png\): tessera was built without OpenCV"):
            td.decode_image(_encode(PIL.new("RGB", (4, 3)), "PNG"), "a.png")


@needs_decoder
def test_truncated_and_corrupt_files_raise(images):
    data = _encode(images[0][1], "JPEG")
    with pytest.raises(ValueError, match=r"cut\.jpg\): truncated"):
        td.decode_image(data[: len(data) // 2], "cut.jpg")
    png = bytearray(_encode(images[2][1], "PNG"))
    png[60:90] = bytes(30)
    with pytest.raises(ValueError, match=r"zeroed\.png"):
        td.decode_image(bytes(png), "zeroed.png")


# ---- evaluation transform ------------------------------------------------------------------

def _v2_eval(size: int, to_float):
    return T2.Compose([T2.Resize(size, BICUBIC, antialias=True), T2.CenterCrop(size), to_float, T2.Normalize(MEAN, STD)])


@needs_decoder
def test_eval_transform_matches_torchvision_tensor_path_bitwise(images):
    ours = td.ImageTransform(td.clip_transform(224))
    exact = _v2_eval(224, T2.Lambda(_div255))
    todtype = _v2_eval(224, T2.ToDtype(torch.float32, scale=True))
    for name, img in images:
        for fmt in ("PNG", "JPEG"):
            x = td.decode_image(_encode(img, fmt), name)
            got = ours(x)
            assert got.shape == (3, 224, 224)
            chw = x.permute(2, 0, 1)
            assert torch.equal(got, exact(chw)), name
            assert (got - todtype(chw)).abs().max().item() <= 1e-6, name


@needs_decoder
def test_eval_transform_close_to_pil_pipeline(images):
    ours = td.ImageTransform(td.clip_transform(224))
    pil_pipe = T.Compose([T.Resize(224, BICUBIC), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])
    worst, mean_diff = 0.0, []
    for name, img in images:
        data = _encode(img, "PNG")
        diff = (ours(td.decode_image(data, name)) - pil_pipe(PIL.open(io.BytesIO(data)).convert("RGB"))).abs()
        worst = max(worst, diff.max().item())
        mean_diff.append(diff.mean().item())
    assert worst <= PIL_TOL, f"max abs diff vs PIL {worst:.4f} (tolerance {PIL_TOL:.4f})"
    assert np.mean(mean_diff) < 0.005


def test_transform_functions_follow_torchvision_geometry():
    d = tessera._C.data
    img = torch.randint(0, 256, (37, 53, 3), dtype=torch.uint8)
    chw = img.permute(2, 0, 1)
    assert torch.equal(d.resize_shortest(img, 20).permute(2, 0, 1), T2.functional.resize(chw, 20, BICUBIC, antialias=True))
    for h, w in [(10, 10), (36, 53), (11, 20), (40, 60)]:  # includes padding past the border
        assert torch.equal(d.center_crop(img, h, w).permute(2, 0, 1), T2.functional.center_crop(chw, [h, w])), (h, w)
    assert torch.equal(d.horizontal_flip(img), img.flip(1))


# ---- training transform --------------------------------------------------------------------

def test_random_resized_crop_boxes_equal_torchvision():
    d = tessera._C.data
    for h, w in [(256, 256), (97, 131), (500, 120), (28, 28)]:
        for seed in range(100):
            for scale, ratio in [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.9, 1.0), (0.5, 2.0))]:
                torch.manual_seed(seed)
                ref = T.RandomResizedCrop.get_params(torch.empty(3, h, w), list(scale), list(ratio))
                got = d.random_resized_crop_box(h, w, scale, ratio, torch.Generator().manual_seed(seed))
                assert tuple(got) == tuple(ref), (h, w, seed)


@needs_decoder
def test_train_transform_equals_torchvision_for_the_same_seed(images):
    opts = td.clip_transform(224, train=True, scale=(0.25, 1.0))
    ours = td.ImageTransform(opts)
    ref = T2.Compose([
        T2.RandomResizedCrop(224, scale=(0.25, 1.0), interpolation=BICUBIC, antialias=True),
        T2.RandomHorizontalFlip(0.5), T2.Lambda(_div255), T2.Normalize(MEAN, STD),
    ])
    pil_ref = T.Compose([
        T.RandomResizedCrop(224, scale=(0.25, 1.0), interpolation=BICUBIC),
        T.RandomHorizontalFlip(0.5), T.ToTensor(), T.Normalize(MEAN, STD),
    ])
    for seed, (name, img) in enumerate(images):
        data = _encode(img, "PNG")
        x = td.decode_image(data, name)
        got = ours(x, torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        assert torch.equal(got, ref(x.permute(2, 0, 1))), name
        if name.startswith("noise"):
            # A crop shrunk in one direction and enlarged in the other is resized by PIL
            # shrinking first, by ATen (so torchvision's tensor path) horizontally first; both
            # round to uint8 in between, which on pixel noise differs by up to ~25 levels.
            continue
        torch.manual_seed(seed)  # same boxes and flips on PIL; resize differs by <= 2 levels
        pil = pil_ref(PIL.open(io.BytesIO(data)).convert("RGB"))
        assert (got - pil).abs().max().item() <= PIL_TOL, name


def test_flip_probability_and_determinism():
    d = tessera._C.data
    flips = [d.draw_horizontal_flip(0.5, torch.Generator().manual_seed(s)) for s in range(4000)]
    assert abs(np.mean(flips) - 0.5) < 0.03
    t = td.ImageTransform(td.clip_transform(32, train=True))
    img = torch.randint(0, 256, (40, 50, 3), dtype=torch.uint8)
    a = t(img, torch.Generator().manual_seed(1))
    assert torch.equal(a, t(img, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, t(img, torch.Generator().manual_seed(2)))


# ---- datasets ------------------------------------------------------------------------------

def test_fashion_mnist_counts_and_pixels():
    train, test = td.FashionMNIST(split="train"), td.FashionMNIST(FMNIST, split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.equal(torch.bincount(train.targets), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.targets), torch.full((10,), 1000))
    assert train.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                             "Sneaker", "Bag", "Ankle boot"]
    image, label = test[0]
    assert image.shape == (28, 28, 1) and label == 9
    assert torch.equal(image[..., 0], torch.from_numpy(_fmnist_images(1)[0].copy()))
    with pytest.raises(ValueError, match="split"):
        td.FashionMNIST(split="val")


def test_bad_idx_file_names_it(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes((2049).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"x")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes((2049).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\0")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte' has magic number 2049, expected 2051"):
        td.FashionMNIST(tmp_path, "train")


@pytest.fixture(scope="session")
def folder(tmp_path_factory, images):
    """ImageFolder layout: 3 classes of JPEG/PNG files, one corrupt and one truncated file."""
    root = tmp_path_factory.mktemp("folder")
    for i, (name, img) in enumerate(images):
        cls = root / ["bag", "coat", "sneaker"][i % 3]
        cls.mkdir(exist_ok=True)
        img.save(cls / f"{name}.{'png' if i % 2 else 'jpg'}", quality=90)
    (root / "coat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    data = _encode(images[0][1], "JPEG")
    (root / "sneaker" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return root


@needs_decoder
def test_image_folder_order_equals_torchvision(folder):
    from torchvision.datasets import ImageFolder as TVImageFolder

    ours, ref = td.ImageFolder(folder), TVImageFolder(str(folder))
    assert ours.classes == ref.classes
    assert ours.samples == [(p, c) for p, c in ref.samples]


# ---- loader --------------------------------------------------------------------------------

def _indices(loader) -> list:
    return [i for b in loader for i in b["indices"].tolist()]


def test_loader_is_deterministic_for_a_seed():
    ds = td.FashionMNIST(split="test")
    opts = td.clip_transform(32, train=True)
    runs = []
    for workers in (0, 1, 3):
        loader = td.DataLoader(ds, batch_size=50, seed=7, num_workers=workers, transform=opts)
        loader.set_epoch(2)
        batches = [b for _, b in zip(range(5), loader)]
        runs.append(batches)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a["indices"], b["indices"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.equal(runs[0][0]["labels"], ds.targets[runs[0][0]["indices"]])
    other_seed = td.DataLoader(ds, batch_size=50, seed=8, transform=opts)
    other_seed.set_epoch(2)
    assert not torch.equal(next(iter(other_seed))["indices"], runs[0][0]["indices"])


def test_loader_shards_like_distributed_sampler():
    ds = td.FashionMNIST(split="test")
    n, world = len(ds), 3
    covered = set()
    for rank in range(world):
        loader = td.DataLoader(ds, batch_size=128, seed=5, rank=rank, world_size=world, drop_last=False,
                               transform=td.clip_transform(28))
        loader.set_epoch(4)
        got = _indices(loader)
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(4)
        assert got == list(sampler)  # same order, same padding
        covered.update(got)
    assert covered == set(range(n))
    # world size dividing n: the shards are disjoint.
    shards = [set(_indices(td.DataLoader(ds, batch_size=100, rank=r, world_size=4, transform=td.clip_transform(28))))
              for r in range(4)]
    assert sum(len(s) for s in shards) == n and len(set.union(*shards)) == n


@needs_decoder
def test_corrupt_files_skipped_counted_reported(folder):
    ds = td.ImageFolder(folder)
    loader = td.DataLoader(ds, batch_size=4, shuffle=False, drop_last=False, transform=td.clip_transform(64))
    batches = list(loader)
    assert [len(b["indices"]) for b in batches] == [4] * (len(ds) // 4) + ([len(ds) % 4] if len(ds) % 4 else [])
    seen = {i for b in batches for i in b["indices"].tolist()}
    bad = {i for i, (p, _) in enumerate(ds.samples) if p.endswith(("corrupt.jpg", "truncated.jpg"))}
    assert len(bad) == 2 and not (seen & bad)
    assert loader.skipped == 2
    report = loader.report()
    assert "corrupt.jpg" in report and "truncated.jpg" in report and "2 sample(s) skipped" in report


@needs_decoder
def test_caption_dataset_batches_carry_captions(tmp_path, images):
    lines = []
    for i, (name, img) in enumerate(images[:5]):
        img.save(tmp_path / f"{name}.png")
        lines.append(f'{{"image": "{name}.png", "caption": "picture {i} \\u00e9"}}')
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    ds = td.CaptionDataset(tmp_path / "pairs.jsonl")
    assert ds[1][1] == "picture 1 é"
    if not td.image_decode_available():
        return
    batch = next(iter(td.DataLoader(ds, batch_size=5, shuffle=False, transform=td.clip_transform(32))))
    assert batch["captions"] == [f"picture {i} é" for i in range(5)]
    assert batch["pixel_values"].shape == (5, 3, 32, 32)


def test_resume_from_state_gives_the_same_next_batch():
    ds = td.FashionMNIST(split="test")
    kw = dict(batch_size=64, seed=3, rank=1, world_size=2, transform=td.clip_transform(28, train=True))
    a = td.DataLoader(ds, **kw)
    a.set_epoch(1)
    it = iter(a)
    for _ in range(4):
        next(it)
    state = a.state_dict()
    expected = next(it)
    b = td.DataLoader(ds, **kw)
    b.load_state_dict(state)
    b.set_epoch(1)
    got = next(iter(b))
    assert torch.equal(got["indices"], expected["indices"])
    assert torch.equal(got["pixel_values"], expected["pixel_values"])
    with pytest.raises(ValueError, match="world_size"):
        td.DataLoader(ds, **{**kw, "world_size": 4}).load_state_dict(state)


def test_early_stop_does_not_hang():
    ds = td.FashionMNIST(split="train")
    t0 = time.perf_counter()
    for _ in range(3):
        loader = td.DataLoader(ds, batch_size=256, num_workers=2, prefetch=8, transform=td.clip_transform(64))
        for _batch in loader:
            break
        del loader
    loader = td.DataLoader(ds, batch_size=256, transform=td.clip_transform(28))
    next(iter(loader))
    loader.stop()
    assert len(list(zip(range(3), loader))) == 3  # continues after stop
    assert time.perf_counter() - t0 < 30


def test_loader_rejects_python_datasets():
    with pytest.raises(TypeError, match="torch.utils.data.DataLoader"):
        td.DataLoader([1, 2, 3])
