"""Hostile input to the real-data surfaces (issue 17): generated sets never replace what they did
not write, paths in a data file stay inside its root, shard samples without a usable caption or
label are reported rather than trained on, and indexes are checked against the file they index.
Each case: a clear error naming the file, key or value, or a reported and skipped sample; never
a silent reinterpretation, and nothing already written is lost."""
from __future__ import annotations

import json
import os

import pytest

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
