"""tessera's safetensors reader/writer against the `safetensors` package (the format's reference
implementation), plus sharded checkpoints as transformers writes them."""
from __future__ import annotations

import json
import struct

import pytest
import torch

import tessera
from tessera import _C
from _clip_reference import assert_close, hf_clip, one_thread, pixel_batch, text_batch, tiny_config

st = pytest.importorskip("safetensors")
st_torch = pytest.importorskip("safetensors.torch")

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


def _sample(dtype: torch.dtype, shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g, dtype=torch.float64) * 100).to(dtype)
    info = torch.iinfo(dtype)
    lo, hi = max(info.min, -(2 ** 40)), min(info.max, 2 ** 40)
    t = torch.randint(lo, hi, shape, generator=g, dtype=torch.int64).to(dtype)
    if t.numel() >= 2:  # the extremes of the type survive too
        t.view(-1)[0], t.view(-1)[1] = info.min, info.max
    return t


def _all_tensors():
    out = {}
    for i, (name, dtype) in enumerate(DTYPES.items()):
        out[f"{name}.matrix"] = _sample(dtype, (3, 5), i)
        out[f"{name}.scalar"] = _sample(dtype, (), 100 + i)  # 0-d
        out[f"{name}.empty"] = _sample(dtype, (0,), 200 + i)
        out[f"{name}.empty3d"] = _sample(dtype, (2, 0, 3), 300 + i)
        base = _sample(dtype, (4, 6), 400 + i)
        out[f"{name}.transposed"] = base.t()  # non-contiguous
        out[f"{name}.strided"] = base[::2, 1::3]  # non-contiguous with steps
    return out


def _assert_same(got, want):
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert tuple(got[k].shape) == tuple(v.shape), k
        assert torch.equal(got[k], v), k


def test_round_trip_all_dtypes(tmp_path):
    tensors = _all_tensors()
    assert not tensors["F32.transposed"].is_contiguous() and not tensors["I8.strided"].is_contiguous()
    path = str(tmp_path / "all.safetensors")
    _C.core.save_safetensors(path, tensors, {"note": "round trip"})
    got, meta = _C.core.load_safetensors(path)
    _assert_same(got, tensors)
    assert meta == {"note": "round trip"}


def test_tessera_file_read_by_safetensors_package(tmp_path):
    tensors = _all_tensors()
    path = str(tmp_path / "ours.safetensors")
    _C.core.save_safetensors(path, tensors, {"format": "pt", "author": "tessera"})
    _assert_same(st_torch.load_file(path), tensors)
    with st.safe_open(path, framework="pt") as f:
        assert f.metadata() == {"format": "pt", "author": "tessera"}
    # The data buffer starts 8-byte aligned, as the reference writer keeps it.
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    assert (8 + n) % 8 == 0


def test_safetensors_package_file_read_by_tessera(tmp_path):
    tensors = {k: v.contiguous() for k, v in _all_tensors().items()}
    path = str(tmp_path / "theirs.safetensors")
    st_torch.save_file(tensors, path, metadata={"format": "pt", "x": "1"})
    got, meta = _C.core.load_safetensors(path)
    _assert_same(got, tensors)
    assert meta == {"format": "pt", "x": "1"}


@pytest.mark.parametrize("header, reference_refuses", [
    ('{"w":{"dtype":"F32","shape":[2],"shape":[1],"data_offsets":[0,8]}}', True),
    ('{"__metadata__":{"a":"1"},"__metadata__":{"a":"2"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', True),
    ('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}',
     False),
], ids=["field", "metadata", "tensor"])
def test_a_key_given_twice_in_the_header_is_refused(tmp_path, header, reference_refuses):
    """tessera kept the last of a repeated key where the reference refuses a repeated field; two
    tensors of one name, which the reference reads as its last, tessera refuses too: tools that
    keep the first read another tensor."""
    path = tmp_path / "twice.safetensors"
    data = header.encode()
    path.write_bytes(struct.pack("<Q", len(data)) + data + bytes(8))
    if reference_refuses:
        with pytest.raises(Exception, match="duplicate field"):
            st_torch.load_file(str(path))
    with pytest.raises(ValueError, match=r"twice.safetensors: key '(shape|__metadata__|w)' is given twice"):
        _C.core.load_safetensors(str(path))


def test_bytes_equal_reference_serialisation(tmp_path):
    """Independent writers, same tensors: each reads the other's bytes to identical tensors, and
    tessera's data buffer holds exactly the tensors' bytes in header order."""
    tensors = {"b": torch.arange(6, dtype=torch.int16).view(2, 3), "a": torch.tensor([1.5, -2.0])}
    path = str(tmp_path / "x.safetensors")
    _C.core.save_safetensors(path, tensors)
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    for name, t in tensors.items():
        begin, end = header[name]["data_offsets"]
        assert data[begin:end] == t.numpy().tobytes()
        assert header[name]["shape"] == list(t.shape)
    assert "__metadata__" not in header


def test_empty_file_round_trip(tmp_path):
    path = str(tmp_path / "empty.safetensors")
    _C.core.save_safetensors(path, {})
    assert _C.core.load_safetensors(path) == ({}, {})
    assert st_torch.load_file(path) == {}


def test_metadata_round_trip_with_unicode(tmp_path):
    meta = {"format": "pt", "text": "ünïcödé 東京 \"quoted\" \\ back", "empty": ""}
    path = str(tmp_path / "m.safetensors")
    _C.core.save_safetensors(path, {"w": torch.ones(1)}, meta)
    assert _C.core.load_safetensors(path)[1] == meta
    with st.safe_open(path, framework="pt") as f:
        assert f.metadata() == meta


def test_loaded_tensors_outlive_the_file_and_do_not_write_back(tmp_path):
    path = tmp_path / "w.safetensors"
    _C.core.save_safetensors(str(path), {"w": torch.arange(8.0)})
    before = path.read_bytes()
    tensors, _ = _C.core.load_safetensors(str(path))
    tensors["w"].add_(1)  # a private mapping: the file on disk is not modified
    assert path.read_bytes() == before
    path.unlink()
    assert tensors["w"].tolist() == [float(i + 1) for i in range(8)]


def test_requires_grad_and_parameters_save(tmp_path):
    p = torch.nn.Parameter(torch.randn(3, 2))
    path = str(tmp_path / "p.safetensors")
    _C.core.save_safetensors(path, {"p": p})
    got = st_torch.load_file(path)["p"]
    assert torch.equal(got, p.detach()) and not got.requires_grad


# --------------------------------------------------------------------------- sharded checkpoints


def _write_shards(folder, shards, weight_map):
    folder.mkdir(exist_ok=True)
    for name, tensors in shards.items():
        st_torch.save_file(tensors, str(folder / name), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def test_sharded_checkpoint_loads(tmp_path):
    a = {"x": torch.randn(2, 3), "y": torch.arange(4)}
    b = {"z": torch.ones(5, dtype=torch.bfloat16)}
    _write_shards(tmp_path, {"model-00001-of-00002.safetensors": a, "model-00002-of-00002.safetensors": b},
                  {"x": "model-00001-of-00002.safetensors", "y": "model-00001-of-00002.safetensors",
                   "z": "model-00002-of-00002.safetensors"})
    _assert_same(_C.core.load_checkpoint_dir(str(tmp_path)), {**a, **b})


def test_weight_files_are_what_the_loader_reads(tmp_path):
    """weights.weight_files (what a fingerprint of the weights hashes) lists the index and its
    shards, and refuses what the C++ loader refuses: a name that is not a plain file name."""
    import json as _json

    from tessera.models.weights import weight_files

    _write_shards(tmp_path, {"s1.safetensors": {"x": torch.zeros(1)}, "s2.safetensors": {"y": torch.zeros(1)}},
                  {"x": "s1.safetensors", "y": "s2.safetensors", "z": "s1.safetensors"})
    assert weight_files(str(tmp_path)) == ["model.safetensors.index.json", "s1.safetensors", "s2.safetensors"]
    for bad in (1, None, "../../etc/hostname", ""):
        (tmp_path / "model.safetensors.index.json").write_text(_json.dumps({"weight_map": {"x": bad}}))
        with pytest.raises(ValueError, match="weight_map must name shard files in the folder"):
            weight_files(str(tmp_path))
    (tmp_path / "model.safetensors.index.json").write_text("{")
    with pytest.raises(ValueError, match="not a valid index"):
        weight_files(str(tmp_path))


def test_index_names_tensor_absent_from_shard(tmp_path):
    _write_shards(tmp_path, {"s1.safetensors": {"x": torch.zeros(1)}, "s2.safetensors": {"y": torch.zeros(1)}},
                  {"x": "s1.safetensors", "y": "s2.safetensors", "ghost": "s2.safetensors"})
    with pytest.raises(ValueError) as e:
        _C.core.load_checkpoint_dir(str(tmp_path))
    msg = str(e.value)
    assert "ghost" in msg and "s2.safetensors" in msg and "model.safetensors.index.json" in msg


def test_index_names_missing_shard(tmp_path):
    _write_shards(tmp_path, {"s1.safetensors": {"x": torch.zeros(1)}},
                  {"x": "s1.safetensors", "y": "s9.safetensors"})
    with pytest.raises((RuntimeError, OSError, ValueError)) as e:
        _C.core.load_checkpoint_dir(str(tmp_path))
    assert str(tmp_path / "s9.safetensors") in str(e.value)


@pytest.mark.parametrize("index", ['{"weight_map": ', '{"metadata": {}}', '{"weight_map": {"x": 3}}',
                                   '{"weight_map": {"x": "../s1.safetensors"}}'],
                         ids=["not_json", "no_weight_map", "not_a_name", "path_escape"])
def test_bad_index(tmp_path, index):
    _write_shards(tmp_path, {"s1.safetensors": {"x": torch.zeros(1)}}, {"x": "s1.safetensors"})
    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ValueError) as e:
        _C.core.load_checkpoint_dir(str(tmp_path))
    assert "model.safetensors.index.json" in str(e.value)


def test_transformers_sharded_clip_loads(tmp_path):
    """transformers' save_pretrained with a small max_shard_size writes an index and several
    shards; tessera.from_pretrained reads them and reproduces transformers' outputs."""
    config = tiny_config()
    hf = hf_clip(config, "sdpa")
    hf.save_pretrained(str(tmp_path), max_shard_size="20KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) >= 2 and (tmp_path / "model.safetensors.index.json").exists()
    assert not (tmp_path / "model.safetensors").exists()
    model = tessera.from_pretrained(str(tmp_path))
    for k, v in hf.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    ids, mask = text_batch(config["text_config"], batch=2, seq_len=8)
    px = pixel_batch(config["vision_config"], batch=2)
    with torch.no_grad():
        a = model(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
        b = hf(input_ids=ids, pixel_values=px, attention_mask=mask, return_loss=True)
    assert_close(a.loss, b.loss, 1e-4, "loss")
    assert_close(a.logits_per_image, b.logits_per_image, 1e-4, "logits_per_image")


def test_half_precision_checkpoint_loads_into_float32_model(tmp_path):
    """A float16 checkpoint (as often published) loads by value into the float32 model, as
    torch's load_state_dict and transformers do."""
    model = tessera.CLIPModel(tiny_config())
    model.save_pretrained(str(tmp_path))
    path = str(tmp_path / "model.safetensors")
    half = {k: v.half() for k, v in st_torch.load_file(path).items()}
    st_torch.save_file(half, path, metadata={"format": "pt"})
    loaded = tessera.from_pretrained(str(tmp_path))
    for k, v in half.items():
        assert loaded.state_dict()[k].dtype == torch.float32
        assert torch.equal(loaded.state_dict()[k], v.float()), k
