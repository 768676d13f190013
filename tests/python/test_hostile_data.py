"""Hostile input to the real-data surfaces (issue 17): generated sets never replace what they did
not write, paths in a data file stay inside its root, shard samples without a usable caption or
label are reported rather than trained on, and indexes are checked against the file they index.
Each case: a clear error naming the file, key or value, or a reported and skipped sample; never
a silent reinterpretation, and nothing already written is lost."""
from __future__ import annotations

import json
import os
import re

import pytest
import torch

from tessera.data import instruct, interleaved
from tessera.data.manifest import ensure_generated, staged

SMALL = {instruct: dict(fashion=4, scenes=2, heldout_fashion=1, heldout_scenes=1, vocab_size=600),
         interleaved: dict(sequences=2, scenes=1, heldout_sequences=1, pairs=1, single_modality=0)}


@pytest.mark.parametrize("gen", [instruct, interleaved], ids=["instruct", "interleaved"])
def test_generators_replace_only_their_own_sets(tmp_path, gen):
    out = tmp_path / "set"
    out.mkdir()
    (out / "precious.txt").write_text("a researcher's work")
    with pytest.raises(ValueError, match="did not write"):
        gen.ensure(str(out), **SMALL[gen])
    assert (out / "precious.txt").read_text() == "a researcher's work"
    assert sorted(os.listdir(tmp_path)) == ["set"], "no partial folder left beside it"
    # An empty folder is taken; the set is then regenerated in place when the arguments change,
    # and reused when they do not (defaults count: seed 7 is not the default seed 0).
    (out / "precious.txt").unlink()
    first = gen.ensure(str(out), **SMALL[gen], seed=7)
    assert first["generator"] == gen.__name__
    second = gen.ensure(str(out), **SMALL[gen])
    assert second["seed"] == 0
    assert gen.ensure(str(out), **SMALL[gen], seed=0) == second
    assert sorted(os.listdir(tmp_path)) == ["set"]


def test_a_failed_generation_leaves_the_old_set_and_no_partial_folder(tmp_path):
    out = tmp_path / "set"
    with staged(str(out), "g") as tmp:
        (open(os.path.join(tmp, "manifest.json"), "w")).write(json.dumps({"generator": "g", "version": 1}))
        (open(os.path.join(tmp, "data.txt"), "w")).write("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with staged(str(out), "g") as tmp:
            (open(os.path.join(tmp, "data.txt"), "w")).write("half")
            raise RuntimeError("disk full")
    assert (out / "data.txt").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["set"]
    with pytest.raises(ValueError, match="did not write"):
        with staged(str(out), "another generator"):
            pass


@pytest.mark.parametrize("text, message", [('{"version": 1', "not a JSON manifest"), ("[1, 2]", "JSON object"),
                                           (b"\xff\xfe", "not a JSON manifest")])
def test_a_corrupt_manifest_names_its_file(tmp_path, text, message):
    (tmp_path / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=f"manifest.json.*{message}"):
        ensure_generated(str(tmp_path), 1, instruct.generate, fashion=1)


def _png(path):
    import torch

    from tessera import _C

    with open(path, "wb") as f:
        f.write(_C.data.encode_png(torch.zeros(4, 4, 3, dtype=torch.uint8)))


def test_a_caption_file_cannot_pack_a_file_that_is_not_an_image(tmp_path):
    from tessera.data.shards import main

    _png(tmp_path / "a.png")
    (tmp_path / "secret").write_text("root:x:0:0:root:/root:/bin/bash\n")
    captions = tmp_path / "c.jsonl"
    captions.write_text(json.dumps({"image": "a.png", "caption": "ok"}) + "\n"
                        + json.dumps({"image": str(tmp_path / "secret"), "caption": "innocent"}) + "\n")
    with pytest.raises(ValueError, match="entry 1: .*secret.* is not a JPEG, PNG or WebP"):
        main([str(tmp_path / "shards"), "--captions", str(captions)])
    assert not any(n.endswith(".tar") for n in os.listdir(tmp_path / "shards")), "nothing written"


def test_rewriting_shards_swaps_the_whole_set_or_nothing(tmp_path):
    from tessera.data.shards import write_shards
    from tessera.data.webdataset import tar_samples

    out = str(tmp_path / "shards")
    write_shards(out, ((f"old{i}", [("txt", b"old")]) for i in range(3)), maxcount=1)

    def crashing():
        yield "new0", [("txt", b"new")]
        yield "new1", [("txt", b"new")]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_shards(out, crashing(), maxcount=1)
    assert sorted(os.listdir(out)) == ["00000.tar", "00001.tar", "00002.tar"]
    keys = [s["__key__"] for f in sorted(os.listdir(out)) for s in tar_samples(os.path.join(out, f))]
    assert keys == ["old0", "old1", "old2"]
    pattern = write_shards(out, ((f"new{i}", [("txt", b"new")]) for i in range(2)), maxcount=1)
    assert pattern.endswith("{00000..00001}.tar")
    assert sorted(os.listdir(out)) == ["00000.tar", "00001.tar"], "the earlier set's third shard is gone"


def _jpeg():
    import io

    from PIL import Image

    b = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(b, "JPEG")
    return b.getvalue()


SHARD_CASES = [
    # (members besides the image, the sample's (caption, label), what the report must say or None)
    ({"txt": b"a red square"}, ("a red square", -1), None),
    ({"cls": b"3"}, ("", 3), None),
    ({}, ("", -1), None),  # image only: MAE, BEiT and feature MIM read nothing else
    ({"cls": b"-1"}, ("", -1), None),  # a common "unknown"
    ({"txt": b"caf\xe9", "cls": b"2"}, ("", 2), ".txt is not UTF-8"),
    ({"json": b'{"caption": null}', "cls": b"1"}, ("", 1), '"caption" is a string'),
    ({"json": b'{"caption": ["x", 1]}'}, ("", -1), '"caption" is a string'),
    ({"json": b'["a caption"]'}, ("", -1), "must be an object"),
    ({"json": b"{"}, ("", -1), ".json does not parse"),
    ({"txt": b"ok", "cls": b"-3"}, ("ok", -1), ".cls must be an integer"),
    ({"cls": b"99999999999999999999"}, ("", -1), ".cls must be an integer"),
]


@pytest.mark.parametrize("members, fields, problem", SHARD_CASES)
def test_a_shard_field_that_does_not_parse_is_reported_and_left_out(tmp_path, members, fields, problem):
    """A bad member used to pass as garbage ("None" captions, label -3, "caf\ufffd") or to end the
    epoch; now that field is left out and reported, and the sample serves what is usable."""
    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader
    from tessera.data.shards import write_shards

    good = [("png", _jpeg()), ("txt", b"a good sample")]
    pattern = write_shards(str(tmp_path), [("a", good), ("b", [("jpg", _jpeg()), *members.items()]), ("c", good)])
    loader = ShardLoader(pattern, batch_size=1, transform=clip_transform(8), num_workers=1, drop_last=False)
    batches = list(loader)
    assert [k for b in batches for k in b["keys"]] == ["a", "b", "c"] and loader.skipped == 0
    b = batches[1]
    assert ((b["captions"] or [""])[0], int(b["labels"][0])) == fields
    if problem is None:
        assert not loader.report()
    else:
        assert re.search(problem, loader.report()) and "left out" in loader.report(), loader.report()


def test_template_captions_fill_only_the_missing_ones_and_refuse_a_label_outside_the_classes():
    import torch

    from tessera.train.image_data import template_captions

    labels = torch.tensor([-1, 1, 0])
    out = template_captions(["a {}."], ["cat", "dog"], labels, 0, 0, [0, 1, 2], ["own caption", "", "another"])
    assert out == ["own caption", "a dog.", "another"]
    with pytest.raises(ValueError, match="sample 0 .* label -1, outside the 2 class names"):
        template_captions(["a {}."], ["cat", "dog"], labels, 0, 0, [0, 1, 2])
    with pytest.raises(ValueError, match="label 57"):
        template_captions(["a {}."], ["cat", "dog"], torch.tensor([57]), 0, 0, [0])
    with pytest.raises(ValueError, match="sample 'shard-0:k7'"):
        template_captions(["a {}."], ["cat", "dog"], torch.tensor([-1]), 0, 0, [0], keys=["shard-0:k7"])


def test_an_error_quoting_bytes_that_are_not_utf8_still_names_the_file(tmp_path):
    """C++ errors quote file contents; an undecodable byte turned the ValueError into a
    UnicodeDecodeError without the file's name. Now it is shown as \\xNN."""
    from tessera.data import CaptionDataset

    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"image": "a.png", "caption": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl' line 1: .*caf\\xe9"):
        CaptionDataset(str(path))


def test_a_shard_cut_by_a_zero_block_or_holding_a_non_utf8_name_is_reported(tmp_path):
    """A zeroed header read as the end of the archive and dropped the rest silently (so did two
    tars joined with cat); a member name that is not UTF-8 stopped the whole stream."""
    import io
    import tarfile

    from tessera.data.webdataset import tar_samples

    def tar(path, names, encoding="utf-8"):
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT, encoding=encoding) as t:
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = 3
                t.addfile(info, io.BytesIO(b"abc"))

    shard = str(tmp_path / "cut.tar")
    tar(shard, [f"s{i}.txt" for i in range(4)])
    raw = bytearray(open(shard, "rb").read())
    raw[1024:1536] = bytes(512)  # the second member's header
    open(shard, "wb").write(bytes(raw))
    problems = []
    assert [s["__key__"] for s in tar_samples(shard, problems)] == ["s0"]
    assert len(problems) == 1 and "after the end-of-archive marker" in problems[0]

    latin = str(tmp_path / "latin.tar")
    tar(latin, ["a.txt", "café.txt", "b.txt"], encoding="latin-1")
    problems = []
    assert [s["__key__"] for s in tar_samples(latin, problems)] == ["a", "b"]
    assert len(problems) == 1 and "caf\ufffd.txt': its name is not UTF-8; skipped" in problems[0]


@pytest.mark.parametrize("record", ['{"id": ' + "9" * 5000 + "}", '{"a": ' * 100_000 + "1" + "}" * 100_000],
                         ids=["5000-digit number", "nested 100000 deep"])
def test_json_that_python_cannot_read_names_the_file_and_line(tmp_path, record):
    from tessera.io import read_json
    from tessera.train.conversation_data import read_samples
    from tessera.train.interleaved_data import read_interleaved

    lines = tmp_path / "d.jsonl"
    lines.write_text("\n" + record + "\n")  # line 2
    whole = tmp_path / "d.json"
    whole.write_text(record)
    for call, where in ((lambda: read_samples(str(lines)), "d.jsonl: line 2"),
                        (lambda: read_interleaved(str(lines)), "d.jsonl:2"),
                        (lambda: read_json(str(whole)), "d.json: JSON that cannot be read")):
        with pytest.raises(ValueError, match=where):
            call()


def test_python_loaders_refuse_what_the_cpp_loader_refuses(tmp_path):
    """batch_size 0 gave an empty epoch, rank 3 of 2 another rank's batch, a resume past the
    epoch's end a StopIteration from inside the generator; each now names the value."""
    import torch

    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader
    from tessera.data.shards import write_shards
    from tessera.train.loaders import TensorLoader

    pattern = write_shards(str(tmp_path), [("a", [("png", _jpeg()), ("txt", b"x")])])
    for kw, key in (({"batch_size": 0}, "batch_size"), ({"batch_size": 2, "num_workers": -5}, "num_workers"),
                    ({"batch_size": 2, "rank": 3, "world_size": 2}, "rank")):
        with pytest.raises(ValueError, match=key):
            ShardLoader(pattern, transform=clip_transform(8), **kw)
    loader = ShardLoader(pattern, batch_size=1, transform=clip_transform(8))
    with pytest.raises(ValueError, match=r"batches must be an integer in \[0, 2\^62\), got -3"):
        loader.load_state_dict({**loader.state_dict(), "batches": -3})

    data = {"x": torch.arange(10)}
    for kw, key in (({"rank": 3, "world_size": 2}, "rank"), ({"rank": -1}, "rank"), ({"world_size": 0}, "world_size")):
        with pytest.raises(ValueError, match=key):
            TensorLoader(data, batch_size=2, **kw)
    tl = TensorLoader(data, batch_size=2)
    for batches, message in ((99, "cannot resume at batch 99: an epoch here has 5"), (-3, "batches must be")):
        with pytest.raises(ValueError, match=message):
            tl.load_state_dict({**tl.state_dict(), "batches": batches})


def test_an_image_folder_with_a_symlink_loop_lists_each_image_once(tmp_path):
    from tessera.data import ImageFolder

    (tmp_path / "cat" / "sub").mkdir(parents=True)
    (tmp_path / "dog").mkdir()
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "cat" / "sub" / "b.png")
    _png(tmp_path / "dog" / "c.png")
    os.symlink(tmp_path / "cat", tmp_path / "cat" / "sub" / "loop")
    os.symlink(tmp_path / "dog", tmp_path / "cat" / "elsewhere")  # followed, as torchvision does
    names = sorted(os.path.relpath(p, tmp_path) for p, _ in ImageFolder(str(tmp_path)).samples)
    assert names == ["cat/a.png", "cat/elsewhere/c.png", "cat/sub/b.png", "dog/c.png"]


NAMES = [f"class {i}" for i in range(10)]


@pytest.mark.parametrize("members", [
    {"txt": b""},            # img2dataset's caption where the source had none
    {"txt": b"  \n"},
    {"txt": b"caf\xe9"},     # not UTF-8: the field is left out, so nothing is left
    {},
    {"cls": b"12"},          # a label the class names do not cover
])
def test_a_sample_an_image_text_task_cannot_use_is_skipped_where_it_is_read(tmp_path, members):
    """One such sample in LAION-style shards used to fail the training step that met it, hours
    into a run; it is skipped by the loader, named in the report, and the batch refilled."""
    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader
    from tessera.data.shards import write_shards
    from tessera.train.image_data import caption_or_label

    good = [("jpg", _jpeg()), ("txt", b"a red square")]
    pattern = write_shards(str(tmp_path), [("a", good), ("b", [("jpg", _jpeg()), *members.items()]), ("c", good),
                                           ("d", [("jpg", _jpeg()), ("cls", b"4")])])
    loader = ShardLoader(pattern, batch_size=2, transform=clip_transform(8), num_workers=1, drop_last=False,
                         select=caption_or_label(NAMES))
    assert [b["keys"] for b in loader] == [["a", "c"], ["d"]]
    assert loader.counts()["skipped_samples"] == 1
    assert re.search(r": b: no caption \(.txt or .json\) and label -?\d+, outside the 10 class names", loader.report())


def test_zero_shot_reads_only_labelled_samples_and_refuses_a_label_outside_the_classes(tmp_path):
    """A label of -1 was scored as a miss and counted in the confusion matrix's last row."""
    from tessera.data import clip_transform
    from tessera.data.shard_loader import ShardLoader
    from tessera.data.shards import write_shards
    from tessera.eval import zero_shot_evaluate
    from tessera.train.image_data import labelled

    pattern = write_shards(str(tmp_path), [("a", [("jpg", _jpeg()), ("cls", b"1")]),
                                           ("b", [("jpg", _jpeg()), ("txt", b"captioned, unlabelled")])])
    loader = ShardLoader(pattern, batch_size=2, transform=clip_transform(8), num_workers=1, drop_last=False,
                         select=labelled(NAMES))
    assert [b["keys"] for b in loader] == [["a"]] and "b: label -1 is outside" in loader.report()
    classifier = torch.eye(3)
    feats = lambda px: px  # noqa: E731
    batch = {"pixel_values": torch.eye(3)[:2], "labels": torch.tensor([0, -1])}
    with pytest.raises(ValueError, match="label -1 is outside the classifier's 3 classes"):
        zero_shot_evaluate(None, [batch], classifier, image_features=feats)
    batch["labels"] = torch.tensor([0, 1])
    assert zero_shot_evaluate(None, [batch], classifier, image_features=feats)["zero_shot_top1"] == 1.0


def test_blip2_pairs_its_own_captions_by_sample_and_templates_by_class():
    """BLIP-2 trained on class templates even where the shards had captions (and treated every
    same-class pair as a positive); a shard's own caption is now its text and its own identity."""
    from tessera.train.blip2_task import Blip2PretrainTask
    from tessera.train.image_data import sample_ids

    batch = {"labels": torch.tensor([3, 3, -1]), "captions": ["a dog", "", "a cat"], "keys": ["k0", "k1", "k2"]}
    ids = Blip2PretrainTask.text_ids(batch)
    digest = sample_ids(batch)
    assert ids.tolist() == [-1 - digest[0], 3, -1 - digest[2]]
    assert Blip2PretrainTask.text_ids({"labels": torch.tensor([3, 3]), "indices": [0, 1]}).tolist() == [3, 3]


def test_a_loader_report_reaches_the_run_and_its_summary(tmp_path, capsys):
    """A truncated shard and a skipped sample used to end a run with exit code 0 and no word
    (the report was printed only when rank 0 had skipped a sample)."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from _recipes import FMNIST, tiny_recipe
    from tessera.data.shards import fashion_mnist_samples, write_shards
    from tessera.train import recipe_from_dict
    from tessera.train.clip_task import ClipTask
    from tessera.train.distributed import DistInfo
    from tessera.train.trainer import Trainer

    if not os.path.isdir(FMNIST):
        pytest.skip("dataset-fashion-mnist not installed")
    samples = list(fashion_mnist_samples(FMNIST, "test", limit=48))
    samples.insert(5, ("no-caption", [("png", samples[0][1][0][1]), ("txt", b"")]))
    pattern = write_shards(str(tmp_path / "shards"), samples, maxcount=16)
    last = tmp_path / "shards" / "00001.tar"
    last.write_bytes(last.read_bytes()[:3000])  # a partial download
    r = tiny_recipe(steps=4, checkpoint_every=0)
    r["data"].update(dataset="webdataset", root=pattern, eval_root=pattern, shuffle_buffer=0, batch_size=8)
    r["eval"] = {"max_images": 16}
    recipe = recipe_from_dict(r)
    summary = Trainer(recipe, ClipTask(recipe), str(tmp_path / "run"), DistInfo(), progress=False).fit()
    problems = summary["data_problems"]
    assert problems["skipped_samples"] >= 1 and problems["shard_problems"] >= 1, problems
    printed = capsys.readouterr().out
    assert "no-caption: no caption" in printed and "00001.tar" in printed and "truncated" in printed, printed
    assert json.load(open(tmp_path / "run" / "summary.json"))["data_problems"] == problems


def test_a_caption_csv_with_a_byte_order_mark_reads_as_without(tmp_path):
    """Excel's "CSV UTF-8" and pandas' utf-8-sig start with a BOM: the header's first column read
    as "\\ufeffimage" and the file was refused for having no "image" column."""
    from tessera.data import CaptionDataset

    _png(tmp_path / "a.png")
    (tmp_path / "train.csv").write_text('image,caption\na.png,"a cat, sitting"\n', encoding="utf-8-sig")
    (tmp_path / "plain.csv").write_text('image,caption\na.png,"a cat, sitting"\n')
    assert CaptionDataset(str(tmp_path / "train.csv")).entries == CaptionDataset(str(tmp_path / "plain.csv")).entries


@pytest.mark.parametrize("header, row", [("image,caption", "b.png,a cat\na.png,a dog, running"),
                                         ("caption,image", "a cat,b.png\na dog, running,a.png"),
                                         ("image\tcaption", "b.png\ta cat\na.png\ta dog\trunning")])
def test_a_caption_row_with_more_fields_than_the_header_is_refused_as_pandas_refuses_it(tmp_path, header, row):
    """An unquoted delimiter in a caption cut it ("a dog") or moved caption text into the image
    column (" running"), without a word; pandas (open_clip's CsvDataset) refuses the row (when
    every row has one field too many it reads the first as an index: tessera refuses that too)."""
    pandas = pytest.importorskip("pandas")
    from tessera.data import CaptionDataset

    path = tmp_path / ("c.tsv" if "\t" in header else "c.csv")
    path.write_text(f"{header}\n{row}\n")
    with pytest.raises(pandas.errors.ParserError, match="Expected 2 fields in line 3, saw 3"):
        pandas.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    with pytest.raises(ValueError, match=r"c\.(csv|tsv)' line 3: 3 fields, the header has 2 \(a delimiter inside a caption"):
        CaptionDataset(str(path))


def test_names_that_are_not_utf8_are_listed_as_torchvision_lists_them(tmp_path, png_codec):
    """A class or file name that is not UTF-8 loaded, but .classes, .samples and .source() failed
    with a bare UnicodeDecodeError (and so did packing the folder into shards); torchvision lists
    such names as Python's os functions give them (undecodable bytes as surrogates)."""
    tv = pytest.importorskip("torchvision.datasets")
    from tessera.data import ImageFolder, read_image
    from tessera.data.shards import main as pack

    root = os.fsencode(tmp_path / "images")
    for name in (b"/cls\xff/a.png", b"/plain/b\xfe.png"):
        os.makedirs(os.path.dirname(root + name), exist_ok=True)
        _png(root + name)
    ours, theirs = ImageFolder(os.fsdecode(root)), tv.ImageFolder(os.fsdecode(root))
    assert ours.classes == theirs.classes == ["cls\udcff", "plain"]
    assert ours.samples == theirs.samples and ours.source(1) == theirs.samples[1][0]
    assert read_image(ours.samples[0][0]).shape == (4, 4, 3)  # the names it lists read back
    with pytest.raises(ValueError, match=r"images: class folder 'cls\\udcff' is not named in UTF-8; its caption"):
        pack([str(tmp_path / "shards"), "--image-folder", os.fsdecode(root)])  # a caption must be text
    os.rename(root + b"/cls\xff", root + b"/cls")
    assert pack([str(tmp_path / "shards"), "--image-folder", os.fsdecode(root)]) == 0  # a file's name may be bytes


def test_an_animated_webp_is_named_as_such_not_as_corrupt():
    import io

    from PIL import Image

    from tessera.data import decode_image

    frames = [Image.new("RGB", (32, 24), (200, 0, 0)), Image.new("RGB", (32, 24), (0, 200, 0))]
    b = io.BytesIO()
    frames[0].save(b, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    with pytest.raises(ValueError, match=r"decode_image\(shard:k\): an animated WebP; .*webpmux -get frame 1"):
        decode_image(b.getvalue(), "shard:k")
    still = io.BytesIO()
    frames[0].save(still, "WEBP", lossless=True, exif=b"Exif\0\0")  # VP8X without the animation flag
    assert tuple(decode_image(still.getvalue(), "still").shape) == (24, 32, 3)
