"""Tar layouts that valid writers produce but test_webdataset.py's shards do not (links, sparse
files, signed header checksums, stacked name records), and the damage an interrupted copy leaves:
each member is read as Python's tarfile and the webdataset package read it, and whatever is not
read is reported by name, never dropped without a word."""
import io
import shutil
import subprocess
import tarfile
import warnings

import pytest

from tessera.data.shard_loader import ShardLoader
from tessera.data.transforms import clip_transform
from tessera.data.webdataset import expand_urls, tar_samples


def _samples(path, problems):
    return [(s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")}) for s in tar_samples(path, problems)]


def _webdataset(path):
    import webdataset as wds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")})
                for s in wds.WebDataset(path, shardshuffle=False, empty_check=False)]


def _member(tar, name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _header(name: bytes, size: int, kind: bytes = b"0", signed: bool = False) -> bytes:
    """A ustar header; its checksum summed over unsigned bytes (POSIX) or signed ones (old tars)."""
    block = bytearray(512)
    block[:len(name)] = name
    block[100:108], block[124:136], block[136:148] = b"0000644\0", b"%011o\0" % size, b"00000000000\0"
    block[156:157], block[257:265], block[148:156] = kind, b"ustar\x0000", b" " * 8
    total = sum(b - 256 if signed and b > 127 else b for b in block)
    block[148:156] = b"%06o\0 " % total
    return bytes(block)


def _raw_member(name: bytes, data: bytes, kind: bytes = b"0", signed: bool = False) -> bytes:
    return _header(name, len(data), kind, signed) + data + bytes(-len(data) % 512)


def test_links_devices_and_unknown_entries_are_reported_and_directories_pass(tmp_path):
    """tarfile lists them all; webdataset drops them silently. A sample that loses its image to a
    link would reach the loader without one and be skipped there with a misleading reason."""
    path = str(tmp_path / "links.tar")
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        _member(tar, "images/", kind=tarfile.DIRTYPE)
        _member(tar, "images/000.jpg", b"J0")
        _member(tar, "images/000.txt", b"zero")
        _member(tar, "images/001.jpg", kind=tarfile.LNKTYPE, link="images/000.jpg")
        _member(tar, "images/001.txt", b"one")
        _member(tar, "images/002.jpg", kind=tarfile.SYMTYPE, link="/etc/passwd")
        _member(tar, "images/003.jpg", kind=tarfile.FIFOTYPE)
        _member(tar, "images/004.jpg", kind=b"Z")
    problems = []
    ours = _samples(path, problems)
    assert ours == [(k, v) for k, v in _webdataset(path)] == [
        ("images/000", {"jpg": b"J0", "txt": b"zero"}), ("images/001", {"txt": b"one"})]
    assert [p.split(": ", 1)[1] for p in problems] == [
        "member 'images/001.jpg': a hard link to 'images/000.jpg', not read (tar --hard-dereference stores the file itself)",
        "member 'images/002.jpg': a symbolic link to '/etc/passwd', not followed",
        "member 'images/003.jpg': a FIFO entry, not read",
        "member 'images/004.jpg': an entry of unknown type 'Z', not read",
    ]


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar writes the sparse members")
@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_members_are_reported_not_served_as_their_map(tmp_path, fmt):
    """`tar --sparse` stores a file with holes as a map and its data: the old GNU format as type 'S'
    (was dropped silently), pax formats as a regular member under './GNUSparseFile.N/name' (was
    served as a sample of that key holding the raw map)."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "000.jpg", "wb") as f:
        f.write(b"HEAD" * 1000)
        f.seek(1 << 20)
        f.write(b"TAIL" * 1000)
    (src / "000.txt").write_text("caption")
    (src / "001.txt").write_text("after")
    path = str(tmp_path / f"{fmt}.tar")
    subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", path, "-C", str(src), "000.jpg", "000.txt",
                    "001.txt"], check=True)
    problems = []
    assert _samples(path, problems) == [("000", {"txt": b"caption"}), ("001", {"txt": b"after"})]
    assert len(problems) == 1 and "member '000.jpg': a sparse file (written by tar --sparse), not read" in problems[0]


def test_signed_header_checksums_read_as_tarfile_reads_them(tmp_path):
    """Old Sun and BSD tars summed the header as signed bytes; the sums differ only for names with
    bytes >= 0x80. tarfile and GNU tar accept either (it was 'not a tar file')."""
    path = str(tmp_path / "signed.tar")
    with open(path, "wb") as f:
        f.write(_raw_member("café.jpg".encode(), b"J", signed=True) + _raw_member("café.txt".encode(), b"T", signed=True)
                + bytes(1024))
    problems = []
    assert _samples(path, problems) == _webdataset(path) == [("café", {"jpg": b"J", "txt": b"T"})]
    assert problems == []


def test_stacked_name_records_resolve_as_in_tarfile(tmp_path):
    """A GNU long name and a pax path before one member, or two pax paths: the record read first
    names the member, as tarfile reads it (no writer emits this; a crafted shard must not
    name a member otherwise than the reference)."""
    def long_name(name):
        return _raw_member(b"././@LongLink", name.encode() + b"\0", kind=b"L")

    def pax(path):
        record = f" path={path}\n"
        record = f"{len(record) + len(str(len(record) + 3))}{record}"
        return _raw_member(b"pax", record.encode(), kind=b"x")

    for name, prefix in (("L_then_x", long_name("fromL.jpg") + pax("fromX.jpg")),
                         ("x_then_L", pax("fromX.jpg") + long_name("fromL.jpg")),
                         ("x_then_x", pax("first.jpg") + pax("second.jpg"))):
        path = str(tmp_path / f"{name}.tar")
        with open(path, "wb") as f:
            f.write(prefix + _raw_member(b"header.jpg", b"J") + bytes(1024))
        with tarfile.open(path) as tar:
            want = [m.name for m in tar.getmembers()]
        problems = []
        got = [f"{key}.jpg" for key, _ in _samples(path, problems)]
        assert got == want and problems == [], (name, got, want, problems)


def test_a_shard_cut_at_a_member_boundary_is_reported(tmp_path):
    """An interrupted copy that ends on a 512-byte block boundary left well-formed members and no
    end-of-archive marker: the tail was lost without a report. Every writer ends a shard with the
    marker, so its absence is reported; cuts after it lose nothing and say nothing."""
    import webdataset as wds

    full = str(tmp_path / "full.tar")
    with wds.TarWriter(full) as sink:
        for i in range(6):
            sink.write({"__key__": f"{i:04d}", "jpg": bytes([i]) * (700 + 300 * i), "txt": f"caption {i}".encode()})
    with tarfile.open(full) as tar:
        last = tar.getmembers()[-1]
        marker = last.offset_data + (last.size + 511) // 512 * 512
    data = open(full, "rb").read()
    assert _samples(full, problems := []) and problems == []
    cut = str(tmp_path / "cut.tar")
    for at in range(512, len(data), 512):
        open(cut, "wb").write(data[:at])
        problems = []
        samples = _samples(cut, problems)
        if at <= marker:
            assert len(problems) == 1, (at, problems)
            assert "no end-of-archive marker" in problems[0] or "truncated" in problems[0], (at, problems)
        else:
            assert problems == [] and len(samples) == 6, (at, problems)


def test_a_cut_inside_the_last_padding_keeps_the_whole_member(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _member(tar, "000.jpg", b"j" * 900)
        _member(tar, "000.txt", b"t" * 901)
    path = str(tmp_path / "pad.tar")
    open(path, "wb").write(buf.getvalue()[:512 + 1024 + 512 + 950])  # 000.txt's 901 bytes and 49 of its padding
    problems = []
    assert _samples(path, problems) == [("000", {"jpg": b"j" * 900, "txt": b"t" * 901})]
    assert len(problems) == 1 and "member '000.txt': truncated inside its padding: the member is whole" in problems[0]


def test_a_damaged_shard_is_reported_once_when_a_loop_is_entered_again(tmp_path):
    """Leaving a loader's loop (for an evaluation, say) and iterating again in the epoch replays the
    shards before the position: the damaged one was counted twice in summary.json."""
    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(jpeg, "JPEG")
    for s in range(3):
        with tarfile.open(tmp_path / f"{s}.tar", "w") as tar:
            for i in range(8):
                _member(tar, f"s{s}-{i}.jpg", jpeg.getvalue())
                _member(tar, f"s{s}-{i}.txt", b"a caption")
    first = tmp_path / "0.tar"
    first.write_bytes(first.read_bytes()[:len(first.read_bytes()) // 3 + 100])
    loader = ShardLoader(str(tmp_path / "{0..2}.tar"), 4, clip_transform(16), num_workers=0, prefetch=2)
    batches = iter(loader)
    for _ in range(3):
        next(batches)
    batches.close()
    assert loader.counts()["shard_problems"] == 1
    for _ in loader:
        pass
    assert loader.counts()["shard_problems"] == 1, loader.report()


def test_an_empty_shard_list_is_an_error():
    with pytest.raises(ValueError, match="no shard pattern given"):
        expand_urls([])
    with pytest.raises(ValueError, match="no shard pattern given"):
        ShardLoader([], 8, clip_transform(16))


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_a_long_link_target_is_reported_whole(tmp_path, fmt):
    """Past the header's 100 bytes a target lives in a GNU 'K' record or a pax linkpath; the report
    quoted its first 100 characters."""
    target = "/data/" + "deeply/nested/" * 10 + "000.jpg"
    path = str(tmp_path / "long.tar")
    with tarfile.open(path, "w", format=fmt) as tar:
        _member(tar, "000.jpg", kind=tarfile.SYMTYPE, link=target)
        _member(tar, "000.txt", b"a")
    problems = []
    assert _samples(path, problems) == [("000", {"txt": b"a"})]
    assert problems == [f"{path}: member '000.jpg': a symbolic link to '{target}', not followed"]
