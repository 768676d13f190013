"""Malformed files, configs, checkpoints and inputs give clear Python exceptions, never a crash.

The safetensors files are built byte by byte following the format's specification: an 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the data
buffer, which the tensors must cover exactly.
"""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch

import tessera
from tessera import _C
from _clip_reference import one_thread, pixel_batch, text_batch, tiny_config

CONFIG = tiny_config()


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


def _write(path, header, data: bytes = b"", header_bytes: bytes = None, length: int = None) -> str:
    raw = header_bytes if header_bytes is not None else json.dumps(header).encode()
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return str(path)


def _f32(*values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def _load_error(path: str, *, names=()) -> str:
    with pytest.raises((ValueError, RuntimeError)) as e:
        _C.core.load_safetensors(path)
    msg = str(e.value)
    assert path in msg, msg
    for name in names:
        assert name in msg, msg
    return msg


# --------------------------------------------------------------------------- safetensors files


def test_valid_hand_written_file_loads(tmp_path):
    """The builder itself is right: a well-formed file reads back as written."""
    path = _write(tmp_path / "ok.safetensors",
                  {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
                  _f32(1.0, 2.0, 3.0))
    tensors, meta = _C.core.load_safetensors(path)
    assert tensors["a"].tolist() == [1.0, 2.0] and tensors["b"].tolist() == [3.0] and meta == {}


@pytest.mark.parametrize("size", [0, 3, 7])
def test_truncated_before_header_length(tmp_path, size):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x10" * size)
    assert "truncated" in _load_error(str(path))


def test_truncated_header(tmp_path):
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path = _write(tmp_path / "cut.safetensors", None, header_bytes=header[:10], length=len(header))
    assert "truncated" in _load_error(path)


def test_truncated_data(tmp_path):
    # A valid file cut in the middle of its data: the last tensor runs past the end.
    path = _write(tmp_path / "cut.safetensors",
                  {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "tail": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}},
                  _f32(1, 2, 3))
    _load_error(path, names=["tail"])


def test_oversized_header_length(tmp_path):
    path = _write(tmp_path / "huge.safetensors", None, header_bytes=b"{}", length=1 << 40)
    msg = _load_error(path)
    assert str(1 << 40) in msg


def test_header_length_beyond_file(tmp_path):
    path = _write(tmp_path / "long.safetensors", None, header_bytes=b"{}", length=4096)
    assert "truncated" in _load_error(path)


@pytest.mark.parametrize("raw", [b"not json at all", b'{"a": ', b"\xff\xfe\x00{}"], ids=["text", "unclosed", "binary"])
def test_header_not_json(tmp_path, raw):
    path = _write(tmp_path / "nojson.safetensors", None, header_bytes=raw)
    assert "JSON" in _load_error(path)


def test_header_not_an_object(tmp_path):
    path = _write(tmp_path / "list.safetensors", [1, 2, 3])
    assert "object" in _load_error(path)


@pytest.mark.parametrize("dtype", ["F128", "float32", "Q4_0", ""])
def test_unknown_dtype(tmp_path, dtype):
    path = _write(tmp_path / "dtype.safetensors", {"w": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}},
                  _f32(1))
    msg = _load_error(path, names=["'w'"])
    assert "dtype" in msg


def test_overlapping_offsets(tmp_path):
    path = _write(tmp_path / "overlap.safetensors",
                  {"first": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "second": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                  _f32(1, 2, 3))
    assert "overlap" in _load_error(path, names=["second"])


def test_same_span_twice(tmp_path):
    path = _write(tmp_path / "alias.safetensors",
                  {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                  _f32(1, 2))
    assert "overlap" in _load_error(path)


def test_gap_between_tensors(tmp_path):
    path = _write(tmp_path / "gap.safetensors",
                  {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                   "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
                  _f32(1, 2, 3))
    assert "gap" in _load_error(path, names=["'b'"])


def test_gap_at_start(tmp_path):
    path = _write(tmp_path / "gap0.safetensors", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
                  _f32(1, 2))
    assert "gap" in _load_error(path, names=["'a'"])


def test_offsets_past_end(tmp_path):
    path = _write(tmp_path / "past.safetensors", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                  _f32(1, 2))
    assert "outside" in _load_error(path, names=["'w'"])


@pytest.mark.parametrize("offsets", [[8, 4], [0], [0, -4], ["0", "4"], [0, 4.5], "0-4"])
def test_malformed_offsets(tmp_path, offsets):
    path = _write(tmp_path / "off.safetensors", {"w": {"dtype": "F32", "shape": [1], "data_offsets": offsets}},
                  _f32(1, 2))
    _load_error(path, names=["'w'"])


def test_shape_times_dtype_differs_from_span(tmp_path):
    path = _write(tmp_path / "span.safetensors", {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                  _f32(1, 2))
    msg = _load_error(path, names=["'w'"])
    assert "12" in msg and "8" in msg  # needs 12 bytes, spans 8


@pytest.mark.parametrize("shape", [[-1], [2.5], ["2"], 4, [1 << 40, 1 << 40]],
                         ids=["negative", "fraction", "string", "scalar", "overflow"])
def test_bad_shape(tmp_path, shape):
    path = _write(tmp_path / "shape.safetensors", {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4]}},
                  _f32(1))
    _load_error(path, names=["'w'"])


@pytest.mark.parametrize("missing", ["dtype", "shape", "data_offsets"])
def test_entry_missing_a_field(tmp_path, missing):
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    del entry[missing]
    path = _write(tmp_path / "field.safetensors", {"w": entry}, _f32(1))
    assert missing in _load_error(path, names=["'w'"])


def test_trailing_bytes(tmp_path):
    path = _write(tmp_path / "trail.safetensors", {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                  _f32(1) + b"\x00\x00\x00\x00")
    assert "trailing" in _load_error(path)


def test_metadata_must_be_strings(tmp_path):
    path = _write(tmp_path / "meta.safetensors", {"__metadata__": {"format": 1}})
    assert "format" in _load_error(path)


def test_not_a_regular_file(tmp_path):
    _load_error(str(tmp_path))


def test_missing_file_names_path(tmp_path):
    path = str(tmp_path / "absent.safetensors")
    with pytest.raises((RuntimeError, OSError, ValueError)) as e:
        _C.core.load_safetensors(path)
    assert path in str(e.value)


# --------------------------------------------------------------------------- checkpoints and configs


@pytest.fixture
def checkpoint(tmp_path):
    d = tmp_path / "ckpt"
    tessera.CLIPModel(CONFIG).save_pretrained(str(d))
    return d


def test_missing_checkpoint_folder(tmp_path):
    path = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tessera.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tessera.CLIPModel.from_pretrained(path)


def test_folder_without_weights(checkpoint):
    os.remove(checkpoint / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        tessera.from_pretrained(str(checkpoint))


def test_config_not_json(checkpoint):
    (checkpoint / "config.json").write_text('{"model_type": "clip", ')
    with pytest.raises(ValueError) as e:
        tessera.from_pretrained(str(checkpoint))
    assert str(checkpoint / "config.json") in str(e.value)


def test_unsupported_model_type(checkpoint):
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "not_a_model"}))
    with pytest.raises(ValueError, match="not_a_model"):
        tessera.from_pretrained(str(checkpoint))


@pytest.mark.parametrize("value", ["64", 64.5, None, True, [64]], ids=["string", "fraction", "null", "bool", "list"])
def test_config_non_integer_hidden_size(checkpoint, value):
    config = json.loads((checkpoint / "config.json").read_text())
    config["vision_config"]["hidden_size"] = value
    (checkpoint / "config.json").write_text(json.dumps(config))
    if value is None:
        # null means "not set" (transformers' defaults): the default 768 then mismatches the weights.
        with pytest.raises(ValueError, match="of another shape .vision_model"):
            tessera.from_pretrained(str(checkpoint))
        return
    with pytest.raises(ValueError) as e:
        tessera.from_pretrained(str(checkpoint))
    msg = str(e.value)
    assert "hidden_size" in msg and "vision_config" in msg and str(checkpoint / "config.json") in msg


@pytest.mark.parametrize("text, key", [
    (dict(num_attention_heads=3), "num_attention_heads"),   # 16 is not a multiple of 3
    (dict(hidden_act="swishy"), "swishy"),
    (dict(vocab_size=0), "vocab_size"),
])
def test_config_inconsistent_values(text, key):
    with pytest.raises(ValueError, match=key):
        tessera.CLIPModel(tiny_config(text=text))


def test_config_image_size_not_multiple_of_patch():
    with pytest.raises(ValueError, match="patch_size"):
        tessera.CLIPModel(tiny_config(vision=dict(image_size=20, patch_size=8)))


def test_checkpoint_wrong_shape_names_key_and_shapes(checkpoint):
    path = str(checkpoint / "model.safetensors")
    tensors, meta = _C.core.load_safetensors(path)
    tensors = {k: v.clone() for k, v in tensors.items()}
    tensors["text_projection.weight"] = torch.zeros(8, 17)
    _C.core.save_safetensors(path, tensors, meta)
    with pytest.raises(ValueError) as e:
        tessera.from_pretrained(str(checkpoint))
    msg = str(e.value)
    assert "text_projection.weight" in msg and "[8, 17]" in msg and "[8, 16]" in msg


def test_checkpoint_missing_and_extra_keys(checkpoint):
    path = str(checkpoint / "model.safetensors")
    tensors, meta = _C.core.load_safetensors(path)
    tensors = {k: v.clone() for k, v in tensors.items() if k != "logit_scale"}
    tensors["vision_model.surplus"] = torch.zeros(1)
    _C.core.save_safetensors(path, tensors, meta)
    with pytest.raises(ValueError) as e:
        tessera.from_pretrained(str(checkpoint))
    assert "logit_scale" in str(e.value) and "vision_model.surplus" in str(e.value)


def test_corrupt_weights_file_names_it(checkpoint):
    path = checkpoint / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises((ValueError, RuntimeError)) as e:
        tessera.from_pretrained(str(checkpoint))
    assert str(path) in str(e.value)


def test_old_position_ids_buffer_is_ignored(checkpoint):
    """transformers 4.x checkpoints may carry `*.position_ids`; those are computed, not loaded."""
    path = str(checkpoint / "model.safetensors")
    tensors, meta = _C.core.load_safetensors(path)
    tensors = {k: v.clone() for k, v in tensors.items()}
    tensors["text_model.embeddings.position_ids"] = torch.arange(8).unsqueeze(0)
    _C.core.save_safetensors(path, tensors, meta)
    model = tessera.from_pretrained(str(checkpoint))
    assert "text_model.embeddings.position_ids" not in model.state_dict()


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def model():
    return tessera.CLIPModel(CONFIG).eval()


@pytest.fixture
def good():
    ids, mask = text_batch(CONFIG["text_config"], batch=2, seq_len=8)
    return ids, mask, pixel_batch(CONFIG["vision_config"], batch=2)


@pytest.mark.parametrize("make, exc, words", [
    (lambda px: px[0], ValueError, ["pixel_values", "4", "(3, 16, 16)"]),
    (lambda px: px[None], ValueError, ["pixel_values", "4"]),
    (lambda px: px[:, :2], ValueError, ["pixel_values", "[2, 2, 16, 16]"]),
    (lambda px: torch.randn(2, 3, 15, 16), ValueError, ["15", "patch"]),
    (lambda px: torch.randn(2, 3, 24, 24), ValueError, ["24", "interpolate_pos_encoding"]),
    (lambda px: px.long(), TypeError, ["floating", "Long"]),
    (lambda px: px.tolist(), TypeError, ["pixel_values", "list"]),
], ids=["3d", "5d", "channels", "not_multiple_of_patch", "wrong_size", "int_dtype", "list"])
def test_bad_pixel_values(model, good, make, exc, words):
    ids, mask, px = good
    bad = make(px)
    for call in (lambda: model.get_image_features(bad),
                 lambda: model(input_ids=ids, pixel_values=bad, attention_mask=mask)):
        with pytest.raises(exc) as e:
            call()
        for w in words:
            assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("make, exc, words", [
    (lambda ids: ids[0], ValueError, ["input_ids", "2", "(8,)"]),
    (lambda ids: torch.cat([ids, ids], 1), ValueError, ["16", "8"]),
    (lambda ids: ids[:, :0], ValueError, ["0 tokens"]),
    (lambda ids: torch.where(ids == ids[0, 0], torch.full_like(ids, 64), ids), IndexError, ["64", "vocabulary"]),
    (lambda ids: torch.where(ids == ids[0, 0], torch.full_like(ids, -1), ids), IndexError, ["-1", "vocabulary"]),
    (lambda ids: ids.float(), TypeError, ["int64", "Float"]),
    (lambda ids: ids.tolist(), TypeError, ["input_ids", "list"]),
], ids=["1d", "too_long", "empty", "id_ge_vocab", "negative_id", "float", "list"])
def test_bad_input_ids(model, good, make, exc, words):
    ids, mask, px = good
    bad = make(ids)
    with pytest.raises(exc) as e:
        model.get_text_features(bad)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("make", [lambda m: m[:, :7], lambda m: m[:1], lambda m: m[:, None]],
                         ids=["shorter", "batch", "3d"])
def test_attention_mask_shape_mismatch(model, good, make):
    ids, mask, px = good
    with pytest.raises(ValueError) as e:
        model(input_ids=ids, pixel_values=px, attention_mask=make(mask))
    assert "attention_mask" in str(e.value)


def test_missing_or_unpaired_inputs(model, good):
    ids, mask, px = good
    with pytest.raises(ValueError, match="pixel_values"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="input_ids"):
        model(pixel_values=px)
    with pytest.raises(ValueError, match="paired"):
        model(input_ids=ids, pixel_values=px[:1], attention_mask=mask, return_loss=True)


def test_tower_models_check_inputs():
    vision = tessera.CLIPVisionModel(CONFIG["vision_config"])
    text = tessera.CLIPTextModel(CONFIG["text_config"])
    with pytest.raises(ValueError, match="pixel_values"):
        vision(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match="patch"):
        vision(torch.randn(1, 3, 12, 12), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="input_ids"):
        text(torch.tensor([1, 2, 63]))
    with pytest.raises(IndexError, match="vocabulary"):
        text(torch.tensor([[1, 2, 99]]))
    with pytest.raises(TypeError, match="int64"):
        text(torch.tensor([[1.0, 2.0]]))


# --------------------------------------------------------------------------- failed saves


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_failed_save_keeps_previous_files(tmp_path):
    folder = tmp_path / "out"
    model = tessera.CLIPModel(CONFIG)
    model.save_pretrained(str(folder))
    before = _snapshot(folder)
    assert set(before) == {"config.json", "model.safetensors"}

    # A tensor safetensors cannot store (complex) makes the save fail after it has started.
    other = tessera.CLIPModel(CONFIG)
    other.register_buffer("bad", torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="bad"):
        other.save_pretrained(str(folder))
    assert _snapshot(folder) == before  # same names (no temp file left) and same bytes

    # A config that is not JSON-serialisable fails before the weights are replaced.
    other = tessera.CLIPModel(CONFIG)
    other.config["not_json"] = object()
    with pytest.raises(TypeError):
        other.save_pretrained(str(folder))
    assert _snapshot(folder) == before
    assert torch.equal(tessera.from_pretrained(str(folder)).visual_projection.weight, model.visual_projection.weight)


def test_save_into_a_file_path_fails_cleanly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((OSError, RuntimeError)):
        tessera.CLIPModel(CONFIG).save_pretrained(str(blocker))
    assert blocker.read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_save_rejects_reserved_tensor_name(tmp_path):
    path = tmp_path / "reserved.safetensors"
    with pytest.raises(ValueError, match="__metadata__"):
        _C.core.save_safetensors(str(path), {"__metadata__": torch.zeros(2)}, {"format": "pt"})
    assert not path.exists()


def test_save_safetensors_failure_leaves_no_temp_file(tmp_path):
    path = tmp_path / "t.safetensors"
    _C.core.save_safetensors(str(path), {"a": torch.arange(4.0)})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="'z'"):
        _C.core.save_safetensors(str(path), {"a": torch.zeros(2), "z": torch.zeros(2, dtype=torch.complex128)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]
