"""Webdataset shards: the same samples as the webdataset package reads from the same shards,
every sample exactly once per epoch over 2 ranks x 2 loader workers, exact resume with a
shuffle buffer, and damaged shards skipped and reported (not a tar, '../' names, a 10 GB member
header, truncation, an oversized member) without a crash or a hang."""
import io
import os
import re
import shutil
import tarfile

import pytest
import torch

from tessera.data.webdataset import ShardStream, expand_urls, mix, tar_samples

FMNIST = "/usr/share/datasets/fashion-mnist"
pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")


def test_same_samples_as_the_webdataset_package(shards):
    import webdataset as wds

    ours = list(ShardStream(shards))
    theirs = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False))
    assert len(ours) == len(theirs) == 230
    for a, b in zip(ours, theirs):
        assert a["__key__"] == b["__key__"] and a["__url__"] == b["__url__"]
        assert {k: v for k, v in a.items() if not k.startswith("__")} == {k: v for k, v in b.items()
                                                                          if not k.startswith("__")}
    assert ours[0]["txt"] == b"a photo of a ankle boot." and ours[0]["cls"] == b"9"


def test_shards_written_by_webdataset_read_the_same(tmp_path):
    import webdataset as wds

    path = str(tmp_path / "w.tar")
    with wds.TarWriter(path) as sink:
        for i in range(7):
            sink.write({"__key__": f"dir/s{i:03d}", "jpg": bytes([i]) * (100 + i), "json": b'{"i": %d}' % i,
                        "txt": f"caption {i}".encode()})
    ours = list(ShardStream(path))
    theirs = list(wds.WebDataset(path, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in ours] == [s["__key__"] for s in theirs] == [f"dir/s{i:03d}" for i in range(7)]
    assert all(a["jpg"] == b["jpg"] and a["txt"] == b["txt"] for a, b in zip(ours, theirs))


class _Epoch(torch.utils.data.IterableDataset):
    def __init__(self, stream):
        self.stream = stream

    def __iter__(self):
        return (s["__key__"] for s in self.stream)


def test_a_stream_is_a_dataset_torch_dataloader_workers_share(shards):
    """Passed to torch's DataLoader as webdataset's WebDataset is (it took it for a map-style
    dataset: "has no len()"), two workers deal the shards between them."""
    keys = [s["__key__"] for s in torch.utils.data.DataLoader(ShardStream(shards), batch_size=None, num_workers=2)]
    assert sorted(keys) == sorted(s["__key__"] for s in ShardStream(shards)) and len(keys) == 230


@pytest.mark.parametrize("buffer", [0, 16])
def test_a_finished_stream_is_read_again_as_an_iterable_dataset_is(shards, buffer):
    """A second loop over a ShardStream (or a mix) that reached its epoch's end yielded nothing, and
    persistent DataLoader workers failed their second epoch on their own leftover position;
    webdataset's WebDataset and RandomMix read the epoch again. A loop left early still continues."""
    from tessera.data.webdataset import MixedStream

    stream = ShardStream(shards, shuffle_buffer=buffer, seed=3)
    first = [s["__key__"] for s in stream]
    assert len(first) == 230 and [s["__key__"] for s in stream] == first
    it = iter(stream)
    head = [next(it)["__key__"] for _ in range(5)]
    it.close()
    assert head + [s["__key__"] for s in stream] == first
    loader = torch.utils.data.DataLoader(ShardStream(shards, shuffle_buffer=buffer, seed=3), batch_size=None,
                                         num_workers=2, persistent_workers=True)
    for _ in range(2):
        assert sorted(s["__key__"] for s in loader) == sorted(first)
    urls = expand_urls(shards)
    mix = MixedStream([urls[:5], urls[5:]], [1.0, 1.0], seed=1)
    once = [s["__key__"] for s in mix]
    assert once and [s["__key__"] for s in mix] == once
    assert len(list(torch.utils.data.DataLoader(mix, batch_size=None))) == len(once)  # "has no len()" before


@pytest.mark.parametrize("buffer", [0, 16])
def test_two_ranks_two_workers_see_every_sample_once(shards, buffer):
    seen = []
    for rank in range(2):
        stream = ShardStream(shards, shuffle_buffer=buffer, seed=3, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(_Epoch(stream), batch_size=None, num_workers=2)
        seen += list(loader)
    assert len(seen) == 230 and len(set(seen)) == 230


def test_resume_continues_exactly(shards):
    full = [s["__key__"] for s in ShardStream(shards, shuffle_buffer=32, seed=1)]
    first = ShardStream(shards, shuffle_buffer=32, seed=1)
    it = iter(first)
    head = [next(it)["__key__"] for _ in range(57)]
    resumed = ShardStream(shards, shuffle_buffer=32, seed=1)
    resumed.load_state_dict(first.state_dict())
    assert head + [s["__key__"] for s in resumed] == full
    assert full != [s["__key__"] for s in ShardStream(shards)]  # the buffer did shuffle


def test_a_resume_reads_headers_only_before_its_position(shards, tmp_path, monkeypatch):
    """A resume replayed every sample before its position with all its bytes (a resume near an
    epoch's end read the epoch once more). Plain tars are now replayed from their headers and only
    the served samples are read; the samples, bytes and all, equal an uninterrupted stream's, with
    gzip shards (decompressed through) in the mix."""
    import gzip

    import tessera.data.webdataset as W

    packed = str(tmp_path / "packed.tar.gz")
    open(packed, "wb").write(gzip.compress(open(expand_urls(shards)[0], "rb").read()))
    urls = expand_urls(shards)[1:] + [packed]
    full = list(ShardStream(urls, shuffle_buffer=32, seed=1))
    served = {"bytes": 0}
    read_members = W.read_members

    def counted(sample, files):
        served["bytes"] += sum(r.size for r in sample.values() if isinstance(r, W.MemberRef))
        return read_members(sample, files)

    monkeypatch.setattr(W, "read_members", counted)
    resumed = ShardStream(urls, shuffle_buffer=32, seed=1)
    resumed.load_state_dict({"epoch": 0, "position": 150})
    rest = list(resumed)
    assert [s["__key__"] for s in rest] == [s["__key__"] for s in full[150:]]
    assert all(a == b for a, b in zip(rest, full[150:]))  # every member's bytes too
    tail = sum(len(v) for s in full[150:] for k, v in s.items() if isinstance(v, bytes) and k != "__url__")
    assert 0 < served["bytes"] <= tail  # read for served samples only (the gzip shard's come whole)
    refs = list(W.tar_samples(urls[0], headers_only=True))
    assert all(isinstance(v, W.MemberRef) for s in refs for k, v in s.items() if not k.startswith("__"))
    files = {}
    assert [W.read_members(s, files) for s in refs] == list(W.tar_samples(urls[0]))
    for f in files.values():
        f.close()
    assert all(isinstance(s["png"], bytes) for s in W.tar_samples(packed, headers_only=True))


def test_brace_patterns_and_missing_shards(shards, tmp_path):
    assert len(expand_urls(shards)) == 10
    with pytest.warns(UserWarning, match=r"10 shard\(s\) listed more than once, first .*fm-00000\.tar"):
        assert len(expand_urls(shards + "::" + shards)) == 20  # read as often as listed, said aloud
    with pytest.raises(ValueError, match=r"matches no file .*\(shard patterns take braces, not globs"):
        expand_urls(shards.replace("{00000..00009}", "*"))
    with pytest.raises(ValueError, match="matches no file"):
        expand_urls(str(tmp_path / "none-{000..003}.tar"))
    with pytest.raises(ValueError, match=r"1 of 11 shards are missing or not regular files, first .*fm-00010\.tar' "
                                         r"\(missing\)"):
        expand_urls(shards.replace("00009", "00010"))
    fifo = tmp_path / "fifo-00001.tar"
    os.mkfifo(fifo)  # opened, it would block until a writer came: refused before any open
    shutil.copy(expand_urls(shards)[0], tmp_path / "fifo-00000.tar")
    with pytest.raises(ValueError, match=r"first .*fifo-00001\.tar' \(not a regular file\)"):
        expand_urls(str(tmp_path / "fifo-{00000..00001}.tar"))


def _tar(path, members):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_key_that_comes_back_after_another_is_reported(tmp_path):
    """A shard written sorted by extension (a.jpg b.jpg a.txt b.txt) or appended to (tar -r) split
    its samples: every image lost its caption, or a key was served twice, and nothing said so
    (webdataset's grouping is the same, and as silent). The runs are still served as written."""
    for name, members, keys in (("sorted", [("a.jpg", b"1"), ("b.jpg", b"2"), ("a.txt", b"x"), ("b.txt", b"y")],
                                 ["a", "b", "a", "b"]),
                                ("appended", [("a.jpg", b"1"), ("a.cls", b"3"), ("b.jpg", b"2"), ("a.jpg", b"9")],
                                 ["a", "b", "a"])):
        problems = []
        _tar(tmp_path / f"{name}.tar", members)
        assert [s["__key__"] for s in tar_samples(str(tmp_path / f"{name}.tar"), problems)] == keys
        assert len(problems) == 1 and re.search(rf"{name}\.tar: {len(keys) - 2} key\(s\) come back after other keys, "
                                                r"first 'a': a sample's members must be adjacent", problems[0]), problems
    problems = []
    _tar(tmp_path / "ordered.tar", [("a.jpg", b"1"), ("a.txt", b"x"), ("b.jpg", b"2"), ("b.txt", b"y")])
    assert len(list(tar_samples(str(tmp_path / "ordered.tar"), problems))) == 2 and problems == []


def test_damaged_shards_are_skipped_and_reported(tmp_path):
    problems = []
    bad = tmp_path / "not.tar"
    bad.write_bytes(b"this is not a tar file" * 100)
    assert list(tar_samples(str(bad), problems)) == [] and "not a tar file" in problems[-1]

    escape = str(tmp_path / "escape.tar")
    _tar(escape, [("a.txt", b"x"), ("../evil.txt", b"y"), ("b.txt", b"z")])
    assert [s["__key__"] for s in tar_samples(escape, problems)] == ["a", "b"]
    assert "member '../evil.txt': its name leaves the archive's folder" in problems[-1]

    huge = tmp_path / "huge.tar"  # a header claiming 10 GB, followed by a few bytes
    info = tarfile.TarInfo("big.jpg")
    info.size = 10 * 2**30
    huge.write_bytes(info.tobuf(tarfile.GNU_FORMAT) + b"\0" * 4096)
    assert list(tar_samples(str(huge), problems)) == []
    assert "member 'big.jpg': truncated: its 10737418240 bytes run past the end" in problems[-1]

    cut = str(tmp_path / "cut.tar")
    _tar(cut, [(f"s{i}.txt", bytes(700)) for i in range(4)])
    data = open(cut, "rb").read()
    open(cut, "wb").write(data[: 1536 * 2 + 512 + 100])  # members take 512 + 1024 bytes: inside the third's data
    assert [s["__key__"] for s in tar_samples(cut, problems)] == ["s0", "s1"]
    assert "member 's2.txt': truncated" in problems[-1]

    limited = str(tmp_path / "limited.tar")
    _tar(limited, [("a.jpg", bytes(5000)), ("b.jpg", bytes(10))])
    assert [s["__key__"] for s in tar_samples(limited, problems, max_member_bytes=4096)] == ["b"]
    assert "member 'a.jpg': 5000 bytes is over the limit of 4096; skipped" in problems[-1]


def _header(name, size_field, kind=b"0"):
    """A ustar header with a raw 12-byte size field and a valid checksum."""
    block = bytearray(512)
    block[0:len(name)] = name.encode()
    block[100:108], block[108:116], block[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    block[124:136], block[136:148], block[156:157] = size_field, b"00000000000\0", kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


@pytest.mark.parametrize("size, kind", [(2**63 - 1, b"0"), (2**62, b"0"), (2**63 - 1, b"5")])
def test_a_size_near_two_to_the_63_is_reported_not_skipped_silently(tmp_path, size, kind):
    """Rounding such a size up to whole blocks overflowed and passed the bounds check: the rest of
    the shard was dropped with no report (a directory entry) or a misleading one."""
    import struct

    good = tarfile.TarInfo("a.txt")
    good.size = 1
    path = tmp_path / "big.tar"
    path.write_bytes(good.tobuf(tarfile.USTAR_FORMAT) + b"x" + bytes(511)
                     + _header("huge.jpg", b"\x80" + bytes(3) + struct.pack(">Q", size), kind) + bytes(4096))
    problems = []
    assert [s["__key__"] for s in tar_samples(str(path), problems)] == ["a"]
    assert len(problems) == 1 and f"member 'huge.jpg': truncated: its {size} bytes run past the end" in problems[0]


def test_files_that_are_not_tar_shards_say_what_they_are(tmp_path):
    import gzip

    cases = {"empty.tar": (b"", "an empty file (0 bytes), not a tar shard"),
             "page.tar": (b"<html>404</html>", "not a tar file (16 bytes, shorter than one 512-byte header)"),
             "nothing.tar.gz": (gzip.compress(b""), "gzip data that decompresses to nothing, not a tar shard"),
             "page.tar.gz": (gzip.compress(b"<html>404</html>" * 64),
                             "not a tar file (the first header's checksum does not match)"),
             "w.tar.xz": (b"\xfd7zXZ\x00" + bytes(600), "compressed with xz; tessera reads plain and gzip-compressed"),
             "w.tar.zst": (b"\x28\xb5\x2f\xfd" + bytes(600), "compressed with zstd"),
             "w.tar.bz2": (b"BZh9" + bytes(600), "compressed with bzip2")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        problems = []
        assert list(tar_samples(str(tmp_path / name), problems)) == [] and len(problems) == 1
        assert f"{name}: {message}" in problems[0], problems


def test_gzip_shards_read_as_the_webdataset_package_reads_them(shards, tmp_path):
    """webdataset opens .tar.gz shards transparently (tarfile's "r|*"); so does tessera: the same
    keys and bytes, from shards it wrote and from its own shards compressed."""
    import gzip

    import webdataset as wds

    path = str(tmp_path / "w.tar.gz")
    with wds.TarWriter(path) as sink:  # a name ending in gz: webdataset compresses
        for i in range(7):
            sink.write({"__key__": f"s{i:03d}", "jpg": os.urandom(3000 + i), "txt": f"caption {i}".encode()})
    assert open(path, "rb").read(2) == b"\x1f\x8b"
    packed = []
    for shard in expand_urls(shards)[:3]:
        packed.append(str(tmp_path / (os.path.basename(shard) + ".gz")))
        open(packed[-1], "wb").write(gzip.compress(open(shard, "rb").read()))
    for urls in (path, packed):
        ours = list(ShardStream(urls))
        theirs = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            assert a["__key__"] == b["__key__"]
            assert {k: v for k, v in a.items() if not k.startswith("__")} == \
                {k: v for k, v in b.items() if not k.startswith("__")}


def test_damaged_gzip_shards_are_cut_where_the_damage_is_and_reported(tmp_path):
    import gzip

    whole = tmp_path / "whole.tar"
    _tar(str(whole), [(f"s{i}.txt", os.urandom(5000)) for i in range(6)])
    packed = gzip.compress(whole.read_bytes())
    problems = []
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    keys = [s["__key__"] for s in tar_samples(str(cut), problems)]
    assert keys == [f"s{i}" for i in range(len(keys))] and 1 <= len(keys) < 6
    assert len(problems) == 1 and "cut.tar.gz" in problems[0] and "truncated" in problems[0]
    # Damage inside the deflate data: zlib's error (or the gzip checksum at the end) is reported.
    text = [(f"t{i}.txt", (f"sample {i} says hello " * 400).encode()) for i in range(6)]
    _tar(str(whole), text)
    garbled = bytearray(gzip.compress(whole.read_bytes()))
    garbled[len(garbled) // 2: len(garbled) // 2 + 16] = b"\xff" * 16
    problems = []
    (tmp_path / "garbled.tar.gz").write_bytes(bytes(garbled))
    keys = [s["__key__"] for s in tar_samples(str(tmp_path / "garbled.tar.gz"), problems)]
    assert keys == [f"t{i}" for i in range(len(keys))]
    # zlib finds the damage, or the garbage it decodes fails a tar header's checksum first
    assert len(problems) == 1 and "garbled.tar.gz" in problems[0], problems
    assert "zlib" in problems[0] or "corrupt header" in problems[0], problems
    # Damage in the gzip trailer only (its CRC): every member was decoded before zlib can tell, and
    # all of them are served before the report (gzread dropped the last ~256 KiB it had decoded).
    _tar(str(whole), [(f"u{i}.txt", os.urandom(20000)) for i in range(40)])
    crc = bytearray(gzip.compress(whole.read_bytes()))
    crc[-8] ^= 0xFF
    (tmp_path / "crc.tar.gz").write_bytes(bytes(crc))
    problems = []
    keys = [s["__key__"] for s in tar_samples(str(tmp_path / "crc.tar.gz"), problems)]
    assert keys == [f"u{i}" for i in range(40)]
    assert len(problems) == 1 and "incorrect data check" in problems[0], problems
    # A header inside the gzip stream claiming 10 GB: over the limit, skipped, the stream's end
    # reported; nothing of that size is allocated.
    info = tarfile.TarInfo("big.jpg")
    info.size = 10 * 2**30
    (tmp_path / "huge.tar.gz").write_bytes(gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(4096)))
    problems = []
    assert list(tar_samples(str(tmp_path / "huge.tar.gz"), problems)) == []
    assert "member 'big.jpg': 10737418240 bytes is over the limit" in problems[0]
    # Under the limit but longer than the stream: reading stops at the stream's end.
    info.size = 2**29
    (tmp_path / "long.tar.gz").write_bytes(gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(4096)))
    problems = []
    assert list(tar_samples(str(tmp_path / "long.tar.gz"), problems)) == []
    assert problems == [f"{tmp_path / 'long.tar.gz'}: member 'big.jpg': truncated while reading its data"]


def test_only_top_level_meta_members_are_left_out_as_webdataset_does(tmp_path):
    import webdataset as wds

    path = str(tmp_path / "meta.tar")
    _tar(path, [("__index__", b"i"), ("a.txt", b"1"), ("data/__v2__/k.txt", b"2"), ("b__x__.txt", b"3")])
    ours = [s["__key__"] for s in tar_samples(path, [])]
    assert ours == [s["__key__"] for s in wds.WebDataset(path, shardshuffle=False, empty_check=False)]
    assert ours == ["a", "data/__v2__/k", "b__x__"]


def test_a_resume_on_another_number_of_ranks_restarts_the_epoch_said_out_loud(shards):
    """A shard stream's position counts one rank's own shards: carried to another world size it
    served 20 samples twice and 4 never (2 ranks -> 1). The epoch now starts again, with a warning."""
    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader
    from tessera.train.data_stream import reshard_data_state

    def loader(rank, world, batch):
        return ShardLoader(shards, batch, clip_transform(28), rank=rank, world_size=world, num_workers=0)

    saved = []
    for rank in range(2):
        first = loader(rank, 2, 4)
        it = iter(first)
        for _ in range(5):
            next(it)
        saved.append(first.state_dict())
    resumed = loader(0, 1, 8)
    with pytest.warns(UserWarning, match=r"on 1 process\(es\) where the checkpoint had 2.*starts again"):
        resumed.load_state_dict(reshard_data_state(saved[0], resumed.state_dict()))
    keys = [k for batch in resumed for k in batch["keys"]]
    assert len(keys) == len(set(keys)) == 230 // 8 * 8
    same = loader(1, 2, 4)  # the same world size resumes mid-epoch as before
    same.load_state_dict(reshard_data_state(saved[1], same.state_dict()))
    assert same.stream.position == saved[1]["position"] > 0


def test_a_position_is_not_resumed_inside_dataloader_workers(shards):
    stream = ShardStream(shards)
    stream.load_state_dict({"epoch": 0, "position": 30})
    with pytest.raises(ValueError, match="position 30 cannot be resumed inside DataLoader workers"):
        list(torch.utils.data.DataLoader(_Epoch(stream), batch_size=None, num_workers=1))


def test_webp_samples_are_served_as_img2dataset_writes_them(tmp_path):
    """img2dataset's --encode_format webp: such samples were skipped as "not a JPEG or PNG"."""
    from PIL import Image

    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader

    def encoded(fmt):
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, fmt)
        return buf.getvalue()

    path = str(tmp_path / "formats.tar")
    _tar(path, [("a.webp", encoded("WEBP")), ("a.txt", b"red"), ("b.JPG", encoded("JPEG")), ("b.txt", b"red"),
                ("c.png", encoded("PNG")), ("c.txt", b"red")])
    loader = ShardLoader(path, 3, clip_transform(28), drop_last=False, num_workers=0)
    assert [k for batch in loader for k in batch["keys"]] == ["a", "b", "c"] and not loader.report()


def test_a_stream_keeps_going_past_a_damaged_shard(shards, tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\x01" * 2048)
    stream = ShardStream([shards, str(bad)])
    assert len(list(stream)) == 230 and len(stream.problems) == 1 and "bad.tar" in stream.problems[0]


def test_mix_draws_by_weight():
    a, b = [{"s": "a"}] * 1000, [{"s": "b"}] * 1000
    drawn = [x["s"] for x, _ in zip(mix([a, b], [3, 1], seed=0), range(800))]
    assert 0.7 < drawn.count("a") / len(drawn) < 0.8
    with pytest.raises(ValueError, match="one weight per stream"):
        next(mix([a], [1, 2]))


def test_the_clip_task_trains_on_shards(shards):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from _recipes import tiny_recipe
    from tessera.train import recipe_from_dict
    from tessera.train.clip_task import ClipTask
    from tessera.train.distributed import DistInfo
    from tessera.train.trainer import Trainer

    r = tiny_recipe(steps=6, checkpoint_every=3)
    r["data"].update(dataset="webdataset", root=shards, eval_root=shards, shuffle_buffer=16, batch_size=16)
    r["eval"] = {"max_images": 64}
    recipe = recipe_from_dict(r)
    out = os.path.join(os.path.dirname(shards), "run")
    summary = Trainer(recipe, ClipTask(recipe), out, DistInfo(), progress=False).fit()
    assert summary["train_steps"] == 6 and summary["final_loss"] == summary["final_loss"]  # finite


def test_weighted_sources_draw_by_weight_resume_exactly_and_train(shards, tmp_path):
    """Several sources with weights (issue 17), which a recipe could not name and `mix` could not
    resume: drawn sample by sample (webdataset's RandomMix: until the first source runs out),
    seeded by (seed, epoch, rank), so a saved position replays the draws without reading."""
    import sys

    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader
    from tessera.data.shards import fashion_mnist_samples, write_shards
    from tessera.data.webdataset import MixedStream

    small = write_shards(str(tmp_path / "b"), fashion_mnist_samples(FMNIST, "train", limit=120), maxcount=40,
                         prefix="b-")
    keys = [s["__key__"] for s in MixedStream([shards, small], [1, 3], seed=5)]
    from_b = sum(k.startswith("train-") for k in keys)
    assert from_b == 120 and 0.65 < from_b / len(keys) < 0.85  # b runs out first, ~3/4 of the draws
    assert keys == [s["__key__"] for s in MixedStream([shards, small], [1, 3], seed=5)]  # seeded
    with pytest.raises(ValueError, match="finite numbers >= 0 with a positive sum"):
        MixedStream([shards, small], [0, float("nan")])

    def loader():
        return ShardLoader(f"{shards}::{small}", 8, clip_transform(28), shuffle_buffer=16, seed=5, weights=[1, 3])

    want = [b["keys"] for b in loader()]
    first = loader()
    it = iter(first)
    head = [next(it)["keys"] for _ in range(5)]
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    first.stop()
    assert head + [b["keys"] for b in resumed] == want

    sys.path.insert(0, os.path.dirname(__file__))
    from _recipes import tiny_recipe
    from tessera.train import recipe_from_dict
    from tessera.train.clip_task import ClipTask
    from tessera.train.distributed import DistInfo
    from tessera.train.trainer import Trainer

    r = tiny_recipe(steps=4, checkpoint_every=4)
    r["data"].update(dataset="webdataset", root=f"{shards}::{small}", eval_root=shards, batch_size=16,
                     source_weights=[1, 3])
    r["eval"] = {"max_images": 32}
    summary = Trainer(recipe_from_dict(r), ClipTask(recipe_from_dict(r)), str(tmp_path / "run"), DistInfo(),
                      progress=False).fit()
    assert summary["train_steps"] == 4
    r["data"]["source_weights"] = [1]
    with pytest.raises(ValueError, match="data.source_weights: one weight per source"):
        recipe_from_dict(r)


def test_resumed_and_mixed_streams_refuse_what_would_serve_other_data(shards, tmp_path):
    """From a review of the header-only resume and the weighted mix: a resumed epoch kept a file
    open per shard served (a 1000-shard rank ran out of descriptors), a shard replaced after its
    headers were read came back cut to the old sizes, a resume with other weights replayed other
    draws, and an empty source ended the epoch before it began without naming itself."""
    import gc
    import shutil

    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader
    from tessera.data.shards import fashion_mnist_samples, write_shards
    from tessera.data.webdataset import MixedStream

    many = write_shards(str(tmp_path / "many"), fashion_mnist_samples(FMNIST, "test", limit=120), maxcount=4,
                        prefix="m-")
    before = len(os.listdir("/proc/self/fd"))
    resumed = ShardStream(many, shuffle_buffer=8, seed=0)
    resumed.load_state_dict({"epoch": 0, "position": 10})
    it = iter(resumed)
    for _ in range(100):  # 25 shards served
        next(it)
    assert len(os.listdir("/proc/self/fd")) - before <= 9
    del it
    gc.collect()

    copy = tmp_path / "copy"
    shutil.copytree(os.path.dirname(expand_urls(shards)[0]), copy)
    pattern = str(copy / os.path.basename(shards))
    stream = ShardStream(pattern, shuffle_buffer=40, seed=0)
    stream.load_state_dict({"epoch": 0, "position": 30})
    it = iter(stream)
    sample = next(it)  # the replay read the headers of the epoch's first 3 shards (30 served, 40 buffered)
    second = stream.shards()[1]
    assert sample["__url__"] != second  # its headers are read, none of its bytes
    shutil.copy(stream.shards()[5], second + ".new")
    os.replace(second + ".new", second)  # as write_shards replaces a shard
    with pytest.raises(ValueError, match="the shard changed on disk after a resume read its headers"):
        for _ in range(60):
            next(it)

    def loader(weights):
        return ShardLoader(f"{shards}::{many}", 8, clip_transform(28), weights=weights)

    first = loader([1, 3])
    head = iter(first)
    next(head)
    with pytest.raises(ValueError, match=r"drew its sources with weights \[1.0, 3.0\], this one with \[3.0, 1.0\]"):
        loader([3, 1]).load_state_dict(first.state_dict())
    first.stop()
    with pytest.raises(ValueError, match=r"source 1 of the mix .* serves rank 1 no sample"), \
            pytest.warns(UserWarning, match="1 shards for 2 readers"):
        list(MixedStream([shards, expand_urls(many)[0]], [1, 1], rank=1, world_size=2))
    for bad in ([1e308, 1e308], [True, 1], ["1", 2]):
        with pytest.raises(ValueError, match="finite numbers >= 0 with a positive sum"):
            MixedStream([shards, many], bad)
    import numpy as np

    assert len(list(MixedStream([shards, many], [np.float32(1), np.int64(2)]))) > 0


def test_a_write_that_crashed_while_moving_its_shards_in_is_refused_until_written_again(tmp_path, monkeypatch):
    """Interrupted while the new shards replaced the old ones, the folder held new shard 0 beside
    old shards 1-3, which read back as one set without a word; the staging folder stayed. The mark
    is per set: another prefix's set in the folder reads, and writes, as before."""
    from tessera.data import shards as S

    def samples(n, tag):
        return ((f"{tag}{i:03d}", [("txt", f"{tag} {i}".encode()), ("cls", b"0")]) for i in range(n))

    out = str(tmp_path / "set")
    pattern = S.write_shards(out, samples(8, "old"), maxcount=2)
    real, moved = os.replace, []

    def crash_after_one(src, dst):
        if moved:
            raise KeyboardInterrupt
        moved.append(dst)
        real(src, dst)

    monkeypatch.setattr(S.os, "replace", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        S.write_shards(out, samples(8, "new"), maxcount=2)
    monkeypatch.setattr(S.os, "replace", real)
    with pytest.raises(ValueError, match=r"\.replacing- says a write of this set did not finish"):
        expand_urls(pattern)
    other = S.write_shards(out, samples(3, "other"), maxcount=2, prefix="test-")  # another set in the folder
    assert len(expand_urls(other)) == 2  # is read, and leaves the first set's marker alone
    with pytest.raises(ValueError, match="did not finish"):
        expand_urls(pattern)
    assert S.write_shards(out, samples(8, "new"), maxcount=2) == pattern  # written again: whole, and readable
    keys = [s["__key__"] for url in expand_urls(pattern) for s in tar_samples(url)]
    assert keys == [f"new{i:03d}" for i in range(8)] and not S.unfinished_replaces(out)
    assert sorted(n for n in os.listdir(out) if n.startswith(".")) == []  # the crash's staging folder went too
