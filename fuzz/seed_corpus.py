"""Writes the fuzzers' seed corpora into OUT/<target>/seed_*, derived at run time from the
reference files in ../shared (never committed): fixture configs and safetensors headers, the
tokenizer assets' texts, and small images, IDX files and caption lists made here.

    .venv/bin/python fuzz/seed_corpus.py build-fuzz/corpus
"""
import gzip
import io
import json
import os
import struct
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TESSERA_SHARED_DIR", ROOT.parent / "shared"))


def write(out: Path, target: str, name: str, data: bytes) -> None:
    folder = out / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed_{name}").write_bytes(data)


def small_safetensors(path: Path, max_tensor_bytes: int = 512, max_tensors: int = 6) -> bytes:
    """A fixture's header cut down to a few small tensors (its dtypes, shapes, names, metadata),
    re-packed with their real bytes: a valid file well under the fuzzer's -max_len."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out_header, chunks, offset = {}, [], 0
    if "__metadata__" in header:
        out_header["__metadata__"] = header.pop("__metadata__")
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        if end - begin > max_tensor_bytes or len(chunks) >= max_tensors:
            continue
        out_header[name] = {**info, "data_offsets": [offset, offset + end - begin]}
        chunks.append(data[begin:end])
        offset += end - begin
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def idx(type_code: int, fmt: str, dims, values) -> bytes:
    head = bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return head + b"".join(struct.pack(">" + fmt, v) for v in values)


def images():
    from PIL import Image  # the .venv's Pillow (a torchvision dependency)

    pixels = bytes((x * 7 + y * 13) % 256 for y in range(12) for x in range(16) for _ in range(3))
    rgb = Image.frombytes("RGB", (16, 12), pixels)
    cases = {
        "rgb.png": (rgb, "PNG", {}),
        "gray.png": (rgb.convert("L"), "PNG", {}),
        "palette.png": (rgb.convert("P"), "PNG", {}),
        "rgba.png": (rgb.convert("RGBA"), "PNG", {}),
        "gray16.png": (rgb.convert("I;16"), "PNG", {}),
        "interlaced.png": (rgb, "PNG", {"interlace": 1}),
        "rgb.jpg": (rgb, "JPEG", {"quality": 90}),
        "gray.jpg": (rgb.convert("L"), "JPEG", {}),
        "progressive.jpg": (rgb, "JPEG", {"progressive": True}),
        "cmyk.jpg": (rgb.convert("CMYK"), "JPEG", {}),
        "subsampled.jpg": (rgb, "JPEG", {"subsampling": 2}),
        "lossy.webp": (rgb, "WEBP", {"quality": 80}),
        "lossless.webp": (rgb, "WEBP", {"lossless": True}),
        "alpha.webp": (rgb.convert("RGBA"), "WEBP", {}),
    }
    for name, (img, fmt, kw) in cases.items():
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        yield name, buf.getvalue()


def shards():
    """Small tar shards as webdataset and img2dataset write them: ustar, GNU long names, pax."""
    def tar(fmt, members):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    sample = [("000000001.jpg", bytes(range(64))), ("000000001.txt", b"a cat"), ("000000001.cls", b"3"),
              ("000000002.png", bytes(40)), ("000000002.json", b'{"caption": "a dog"}')]
    yield "ustar.tar", tar(tarfile.USTAR_FORMAT, sample)
    yield "gnu_long.tar", tar(tarfile.GNU_FORMAT, [("d/" + "k" * 120 + ".txt", b"long name")] + sample[:2])
    yield "pax.tar", tar(tarfile.PAX_FORMAT, [("caf\u00e9/" + "p" * 110 + ".jpg", bytes(9)), ("__index__", b"{}")])
    yield "ustar.tar.gz", gzip.compress(tar(tarfile.USTAR_FORMAT, sample), mtime=0)


def main(out: Path) -> None:
    fixtures = sorted((SHARED / "fixtures" / "hf").glob("*"))
    for family in fixtures:
        for name in ("model", "io"):
            f = family / f"{name}.safetensors"
            if f.exists():
                write(out, "safetensors", f"{family.name}_{name}", small_safetensors(f))
        for f in family.glob("*.json"):
            write(out, "json_config", f"{family.name}_{f.name}", f.read_bytes())
    for f in sorted(ROOT.glob("csrc/tessera/models/*/configs/*.json")):
        write(out, "json_config", f"variant_{f.name}", f.read_bytes())

    write(out, "idx_file", "labels", idx(0x08, "B", [10], range(10)))
    write(out, "idx_file", "images", idx(0x08, "B", [2, 3, 3], range(18)))
    write(out, "idx_file", "int8", idx(0x09, "b", [4], [-1, 0, 1, 2]))
    write(out, "idx_file", "int16", idx(0x0B, "h", [2, 2], [-300, 1, 2, 300]))
    write(out, "idx_file", "int32", idx(0x0C, "i", [3], [-1, 1 << 20, 7]))
    write(out, "idx_file", "float", idx(0x0D, "f", [2], [1.5, -2.0]))
    write(out, "idx_file", "double", idx(0x0E, "d", [1, 2], [3.25, 1e300]))
    write(out, "idx_file", "labels.gz", gzip.compress(idx(0x08, "B", [10], range(10)), mtime=0))
    write(out, "idx_file", "images.gz", gzip.compress(idx(0x08, "B", [2, 3, 3], range(18)), mtime=0))

    # The caption harness reads its first byte as the format: 0 JSONL, 1 CSV, 2 TSV.
    write(out, "caption_file", "jsonl", b"\0" + b'{"image": "a.jpg", "caption": "a cat"}\n'
          b'\n{"image": "/abs/b.png", "caption": "two \\"dogs\\"", "extra": 1}\n')
    write(out, "caption_file", "csv", b"\1" + b'id,image,caption\r\n1,a.jpg,"a cat, sitting"\n'
          b'2,b.jpg,"a ""quoted"" dog\non two lines"\n\n')
    write(out, "caption_file", "tsv", b"\2" + b"caption\timage\na cat\ta.jpg\n\"x\ty\"\tb.jpg")

    for name, data in images():
        write(out, "image_decode", name, data)

    for name, data in shards():
        write(out, "tar_reader", name, data)
    conversation = {"id": "x", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it? {not a brace} \"q\""}, {"from": "gpt", "value": "A bag."}]}
    write(out, "json_records", "list", json.dumps([conversation, {"id": 2, "conversations": []}]).encode())
    write(out, "json_records", "lines", (json.dumps(conversation) + "\n\n" + json.dumps({"a": [[{}]]}) + "\n").encode())
    write(out, "json_records", "nested", b'[{"a": {"b": [1, 2, {"c": "\\u007b}"}]}}, {}]')

    texts = [
        "a photo of a cat", "A Photo Of TWO dogs!!", "&amp; &lt;b&gt; &#39;quoted&#39; &nbsp;",
        "naïve café — déjà vu", "日本語のテキスト", "emoji 🐱🐶 and\tcontrol\x01chars",
        "it's can't we'll they're I'M", "12345 3.14 1e10", "   leading and trailing   ",
        "<start_of_text> <|endoftext|> <s></s><unk>", "https://example.com/a?b=c&d=e",
    ]
    for i, t in enumerate(texts):
        write(out, "clip_tokenizer", f"text{i}", t.encode())
        write(out, "sentencepiece", f"text{i}", bytes([i % 4]) + t.encode())
    write(out, "clip_tokenizer", "invalid_utf8", b"caf\xc3 \xff\xfe broken \xe2\x82")
    write(out, "sentencepiece", "invalid_utf8", b"\3caf\xc3 \xff\xfe broken \xe2\x82")
    print(f"seed corpora in {out}: " + ", ".join(
        f"{d.name} {len(list(d.glob('seed_*')))}" for d in sorted(out.iterdir()) if d.is_dir()))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build-fuzz" / "corpus")
