"""LLaVA-size conversation data (train/conversation_index.py): the C++ record scanner against
Python's JSON parser and hostile files, the index against encoding everything up front, its cache
(reused, rebuilt when anything it depends on changes, never trusted from another file), the
streaming checks' report, and LLaVA's length-grouped order against a transcription of LLaVA's
own code, through the loader on 1 and 2 ranks and across a resume."""
import json
import os
import random
import warnings

import pytest
import torch

from tessera import _C
from tessera.data import instruct
from tessera.text import SentencePieceTokenizer
from tessera.train.conversation_data import encode_samples, read_samples
from tessera.train.conversation_index import SUFFIX, ConversationSet, cache_path, load_index
from tessera.train.length_grouping import modality_length_grouped_indices
from tessera.train.loaders import IndexLoader

FMNIST = "/usr/share/datasets/fashion-mnist"
pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
IMG = "images/fashion/train/00000.png"
QA = [{"from": "human", "value": "<image>\nWhat is this item?"}, {"from": "gpt", "value": "A bag."}]


@pytest.fixture(scope="module")
def data(tmp_path_factory, png_codec):
    out = tmp_path_factory.mktemp("instruct") / "set"
    instruct.generate(str(out), fashion=24, scenes=8, heldout_fashion=2, heldout_scenes=2, vocab_size=600)
    return out


@pytest.fixture(scope="module")
def tok(data):
    return SentencePieceTokenizer(str(data / "tokenizer.model"), special_tokens=["<image>"])


def index_of(path, tok, max_length=112, **kw):
    return load_index(str(path), tok, "v1", tok.special_tokens["<image>"], 16, max_length, log=kw.pop("log", None)
                      or (lambda m: None), **kw)


# ---- the record scanner ----------------------------------------------------------------------
TRICKY = ['a "quoted" }{ ][ brace', "back\\slash\\", "ünïcödé ✓ 猫", "", "tab\there", "\\u007b"]


@pytest.mark.parametrize("lines", [False, True], ids=["list", "lines"])
def test_record_ranges_agree_with_the_json_parser(tmp_path, lines):
    rng = random.Random(0)
    samples = [{"id": i, "nested": [{"t": rng.choice(TRICKY)}, [[], {}]], "text": rng.choice(TRICKY), "n": -1.5e3}
               for i in range(50)]
    path = tmp_path / "d.json"
    if lines:
        path.write_text("\n".join(json.dumps(s, ensure_ascii=False) for s in samples) + "\n\n", encoding="utf-8")
    else:
        path.write_text(" \n[\n" + ",\n  ".join(json.dumps(s, ensure_ascii=False) for s in samples) + "\n]\n",
                        encoding="utf-8")
    fmt, offsets, lengths = _C.data.json_records(str(path))
    raw = path.read_bytes()
    assert fmt == ("lines" if lines else "list")
    assert [json.loads(raw[o:o + n]) for o, n in zip(offsets.tolist(), lengths.tolist())] == samples


@pytest.mark.parametrize("text, message", [
    ('[{"id": 1}, {"id": 2, "c": [1, 2', r"byte 32: the file ends inside record 1 \(started at byte 12\): the file is truncated"),
    ('[{"id": 1}, {"id": 2}', r"ends before the list's closing '\]'"),
    ('[{"a": [}]', r"byte 8: '}' closes a '\['"),
    ('[{"a": 1}] {"b": 2}', r"byte 11: data after the list's closing"),
    ('[{"a": 1}, 7]', r"record 1 is not an object \(it starts with '7'\)"),
    ('{"a": 1} {"b": 2}\n', r"line 1 has '{' after its object"),
    ('{"a": "x\n"}\n', r"a line break inside a string of record 0"),
    ("PK\x03\x04 not json", r"byte 0: starts with 'P'"),
    ("   ", r"empty or only whitespace"),
])
def test_hostile_files_are_refused_by_byte(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        _C.data.json_records(str(path))
    assert str(path) in str(e.value)


def test_a_huge_record_is_refused_not_read(tmp_path):
    path = tmp_path / "big.json"
    path.write_text('[{"t": "' + "x" * 5000 + '"}]')
    with pytest.raises(ValueError, match="record 0 is longer than 4096 bytes"):
        _C.data.json_records(str(path), max_record_bytes=4096)


# ---- the index against encoding everything up front -----------------------------------------
def llava_15_style(data):
    """LLaVA-1.5's mix: multi-turn, <image> at the start or end of the first turn, text-only samples."""
    samples = json.load(open(data / "instruct.json"))[:12]
    for i, s in enumerate(samples):
        if i % 3 == 1:  # the placeholder at the end of the turn
            first = s["conversations"][0]
            first["value"] = first["value"].replace("<image>\n", "") + "\n<image>"
        if i % 3 == 2:  # text only, two turns
            s.pop("image")
            s["conversations"] = [{"from": "human", "value": "Name a kind of shoe."}, {"from": "gpt", "value": "A boot."},
                                  {"from": "human", "value": "And a bag?"}, {"from": "gpt", "value": "A tote."}]
    path = data / "mix.json"
    path.write_text(json.dumps(samples))
    return path


def test_the_index_renders_what_encoding_up_front_gives(data, tok):
    path = llava_15_style(data)
    ix = index_of(path, tok)
    image_id = tok.special_tokens["<image>"]
    upfront = encode_samples(read_samples(str(path)), str(path), tok, "v1", image_id, 16, 112)
    lazy = ConversationSet(ix, tok, "v1", image_id, 16, 112).encoded(range(len(ix)), width=112)
    for name in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(getattr(lazy, name), getattr(upfront, name)), name
    assert lazy.images == upfront.images and lazy.samples == upfront.samples
    assert ix.lengths.tolist() == upfront.attention_mask.sum(1).tolist()
    assert ix.images.tolist() == [0 if i % 3 == 2 else 1 for i in range(12)]
    modality = ix.modality_lengths
    assert all((m < 0) == (i % 3 == 2) for i, m in enumerate(modality.tolist()))


# ---- the cache -------------------------------------------------------------------------------
def test_the_index_is_cached_and_rebuilt_when_anything_changes(data, tok, tmp_path):
    path = tmp_path / "d.json"
    samples = [{"id": i, "image": IMG, "conversations": QA} for i in range(6)]
    path.write_text(json.dumps(samples))
    folder = str(data)
    built = []
    log = built.append
    first = index_of(path, tok, image_folder=folder, log=log)
    assert len(built) == 1 and os.path.isfile(str(path) + SUFFIX)
    again = index_of(path, tok, image_folder=folder, log=log)
    assert len(built) == 1 and torch.equal(again.offsets, first.offsets)  # reused
    index_of(path, tok, image_folder=folder, max_length=100, log=log)
    assert len(built) == 2  # another setting
    path.write_text(json.dumps(samples[:4]))  # another file version, same name
    assert len(index_of(path, tok, image_folder=folder, log=log)) == 4 and len(built) == 3
    # An index written for another file, put in this one's place, is not trusted.
    other = tmp_path / "other.json"
    other.write_text(json.dumps(samples))
    index_of(other, tok, image_folder=folder, log=log)
    os.replace(str(other) + SUFFIX, str(path) + SUFFIX)
    assert len(index_of(path, tok, image_folder=folder, log=log)) == 4 and len(built) == 5
    # Garbage in the cache file: a warning, and a new index.
    with open(str(path) + SUFFIX, "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.warns(UserWarning, match="unreadable data index"):
        assert len(index_of(path, tok, image_folder=folder, log=log)) == 4
    assert len(built) == 6


def test_the_index_is_rebuilt_when_the_tokenizer_folder_changes(data, tok, tmp_path):
    """A tokenizer's ids follow its folder's files too (tokenizer_config.json's pad token, legacy,
    a tokenizer.json's rules): the index was kept when only they changed."""
    import shutil

    shutil.copy(tok.model_path, tmp_path / "tokenizer.model")
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": i, "image": IMG, "conversations": QA} for i in range(3)]))
    built = []
    index_of(path, SentencePieceTokenizer(tmp_path / "tokenizer.model", ["<image>"]), image_folder=str(data),
             log=built.append)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<unk>", "add_bos_token": True}))
    index_of(path, SentencePieceTokenizer(tmp_path / "tokenizer.model", ["<image>"]), image_folder=str(data),
             log=built.append)
    assert len(built) == 2


def test_refusals_for_image_files_are_checked_again_not_cached(data, tok, tmp_path):
    """Image files are not in the fingerprint: a sample refused for a missing image stayed
    refused after the image was fetched (the report asks for just that) until the cache was
    deleted by hand. Such an index is built again; one without such refusals is reused."""
    import shutil

    path = tmp_path / "d.json"
    samples = [{"id": i, "image": "late.png" if i == 2 else IMG, "conversations": QA} for i in range(4)]
    path.write_text(json.dumps(samples))
    built = []
    with pytest.raises(ValueError, match=r"(?s)image file: 1 sample\(s\).*late.png' not found"):
        index_of(path, tok, image_folder=str(data), log=built.append)
    with pytest.warns(UserWarning, match="left out"):
        assert len(index_of(path, tok, image_folder=str(data), skip_invalid=True, log=built.append)) == 3
    shutil.copy(data / IMG, data / "late.png")
    try:
        assert len(index_of(path, tok, image_folder=str(data), log=built.append)) == 4 and len(built) == 3
        index_of(path, tok, image_folder=str(data), log=built.append)
        assert len(built) == 3  # nothing refused now: reused
    finally:
        os.remove(data / "late.png")


def test_a_data_file_rewritten_after_indexing_is_refused_not_served(data, tok, tmp_path):
    """Same-length records in another order sat at the indexed offsets: the set served other
    samples, silently. The file's size, mtime and inode, and the record's checksum, are now checked
    at every read."""
    path = tmp_path / "d.jsonl"
    records = [{"id": f"s{i}", "image": IMG, "conversations": [QA[0], {"from": "gpt", "value": a}]}
               for i, a in enumerate(["A bag.", "A hat.", "A cap."])]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ix = index_of(path, tok, image_folder=str(data))
    sets = ConversationSet(ix, tok, "v1", tok.special_tokens["<image>"], 16, 112, str(data))
    assert [s["id"] for s in sets.encoded([0, 1, 2]).samples] == ["s0", "s1", "s2"]
    indexed = os.stat(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in records[::-1]))
    # A later write, a second on: a kernel whose mtime moves by clock ticks (4 ms) could give
    # both writes one time stamp, leaving it to the record's checksum (the second half below).
    os.utime(path, ns=(indexed.st_atime_ns, indexed.st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match="d.jsonl: the file changed after it was indexed"):
        sets.encoded([0])
    # A rewrite in place at the same size within one mtime tick keeps size, mtime and inode: each
    # record's CRC-32 still tells.
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ix = index_of(path, tok, image_folder=str(data))
    sets = ConversationSet(ix, tok, "v1", tok.special_tokens["<image>"], 16, 112, str(data))
    before = os.stat(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in records[::-1]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_ino == before.st_ino and os.stat(path).st_size == before.st_size
    assert [s["id"] for s in sets.encoded([1]).samples] == ["s1"]  # the middle record did not move
    with pytest.raises(ValueError, match="d.jsonl: sample 0 is not what was indexed .* the data index was removed"):
        sets.encoded([0])
    assert not os.path.exists(ix.cache_file)  # the next start indexes the file anew


def test_a_cached_index_whose_columns_do_not_fit_its_file_is_rebuilt(data, tok, tmp_path):
    """The fingerprint is a hash of public inputs: an index file carrying it can still point every
    row at one record, or past the file's end, list a subset of the samples, give lengths past
    max_length, negative image counts, or a report that is not the one written. Not trusted."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": i, "image": IMG, "conversations": QA} for i in range(3)]))
    built = []
    first = index_of(path, tok, image_folder=str(data), log=built.append)
    tensors, meta = _C.core.load_safetensors(str(path) + SUFFIX)
    every_other = {k: v[::2].clone() for k, v in tensors.items()}  # a subset, the report saying all passed
    report = json.loads(meta["report"])
    for tamper, forged in (({"offsets": torch.zeros_like(tensors["offsets"])}, {}),
                           ({"offsets": tensors["offsets"] + os.path.getsize(path)}, {}),
                           ({"nbytes": tensors["nbytes"][:2]}, {}),
                           (every_other, {}),
                           ({"modality_lengths": torch.full_like(tensors["modality_lengths"], 2 ** 31 - 1)}, {}),
                           ({"images": torch.full_like(tensors["images"], -5)}, {}),
                           ({"images": torch.zeros_like(tensors["images"])}, {}),  # images, lengths say
                           ({"rows": tensors["rows"].long()}, {}),
                           ({}, {"report": "{}"}), ({}, {"report": "[1]"}), ({}, {"report": "not json"}),
                           ({}, {"report": json.dumps({**report, "read": report["read"] + 1})})):
        _C.core.save_safetensors(str(path) + SUFFIX, {**dict(tensors), **tamper}, {**meta, **forged})
        with pytest.warns(UserWarning, match="does not fit its data file, settings or report"):
            again = index_of(path, tok, image_folder=str(data), log=built.append)
        assert torch.equal(again.offsets, first.offsets) and len(again) == 3
    assert len(built) == 13


def test_a_read_only_data_folder_caches_elsewhere(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "d.json").write_text("[]")
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        where = cache_path(str(ro / "d.json"), str(tmp_path / "cache"))
        assert where.startswith(str(tmp_path / "cache")) and where.endswith(SUFFIX)
    finally:
        os.chmod(ro, 0o755)
    assert cache_path(str(ro / "d.json")) == str(ro / "d.json") + SUFFIX


# ---- the streaming checks -------------------------------------------------------------------
BAD = [
    {"id": "escapes", "image": "../../../etc/passwd", "conversations": QA},
    {"id": "absolute", "image": "/etc/hosts", "conversations": QA},
    {"id": "gone", "image": "images/missing.png", "conversations": QA},
    {"id": "no-placeholder", "image": IMG, "conversations": [{"from": "human", "value": "What?"}, QA[1]]},
    {"id": "bad-role", "image": IMG, "conversations": [{"from": "robot", "value": "hi"}]},
    {"id": "not-an-image", "image": "tokenizer.model", "conversations": QA},
]


def test_every_offender_is_reported_by_id_before_training(data, tok):
    good = [{"id": f"fine-{i}", "image": IMG, "conversations": QA} for i in range(3)]
    path = data / "bad.json"
    text = json.dumps(good + BAD)
    path.write_text(text[:-1] + ', {"id": tru}]')  # the last record is framed but not JSON
    with pytest.raises(ValueError) as e:
        index_of(path, tok)
    report = str(e.value)
    assert "10 samples read, 3 pass the checks, 7 refused" in report
    for check, count in [("image path", 2), ("image file", 2), ("rendering", 1), ("record", 1), ("JSON", 1)]:
        assert f"  {check}: {count} sample(s)" in report, check
    for name in ("'escapes'", "'absolute'", "'gone'", "'no-placeholder'", "'bad-role'", "'not-an-image'", "sample 9"):
        assert name in report
    assert "data.skip_invalid" in report
    with pytest.warns(UserWarning, match="7 refused"):
        ix = index_of(path, tok, skip_invalid=True)
    assert len(ix) == 3 and ix.rows.tolist() == [0, 1, 2]
    # The report is kept with the cached index: a warm start tells the same story.
    with pytest.raises(ValueError, match="7 refused"):
        index_of(path, tok)


def test_a_lone_surrogate_is_refused_by_sample_id_and_turn(data, tok):
    """JSON may escape half an emoji ("\\ud83d"); the refusal named neither file nor sample, and
    gave an offset into the rendered template."""
    good = [{"id": f"fine-{i}", "image": IMG, "conversations": QA} for i in range(3)]
    cut = {"id": "cut-emoji", "conversations": [{"from": "human", "value": "a joke \ud83d"},
                                                 {"from": "gpt", "value": "No."}]}
    path = data / "surrogate.json"
    path.write_text(json.dumps(good + [cut]))  # ensure_ascii: the file is ASCII, the surrogate escaped
    with pytest.raises(ValueError, match=r"surrogate.json: sample 3 \(id 'cut-emoji'\): turn 0: 'value' holds "
                                         r"'\\ud83d' at character 7, which is not UTF-8 text"):
        index_of(path, tok)


# ---- LLaVA's length-grouped order -------------------------------------------------------------
def llava_reference(lengths, batch_size, world_size, generator):
    """LLaVA's get_modality_length_grouped_indices (llava/train/llava_trainer.py @05f156c), written
    from its definition in plain Python, every draw from `generator`."""
    def even_chunks(indices, lens, k):
        if len(indices) % k:
            return [indices[i::k] for i in range(k)]
        per, chunks, totals = len(indices) // k, [[] for _ in range(k)], [0] * k
        for i in indices:
            s = totals.index(min(totals))
            chunks[s].append(i)
            totals[s] += lens[i]
            if len(chunks[s]) == per:
                totals[s] = float("inf")
        return chunks

    def grouped(lens):
        perm = torch.randperm(len(lens), generator=generator).tolist()
        size = world_size * batch_size
        megas = [sorted(perm[i:i + size], key=lambda i: lens[i], reverse=True) for i in range(0, len(lens), size)]
        return [i for m in megas for c in even_chunks(m, lens, world_size) for i in c]

    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return grouped([abs(n) for n in lengths])
    mm = [(i, n) for i, n in enumerate(lengths) if n > 0]
    lang = [(i, -n) for i, n in enumerate(lengths) if n < 0]
    size = world_size * batch_size
    megas, extra = [], []
    for group in (mm, lang):
        ids, lens = zip(*group)
        order = [ids[i] for i in grouped(lens)]
        chunks = [order[i:i + size] for i in range(0, len(order), size)]
        megas += chunks[:-1]
        extra += chunks[-1]
    megas = [megas[i] for i in torch.randperm(len(megas), generator=generator).tolist()]
    if len(extra) >= size:
        megas, extra = [extra[:size]] + megas, extra[size:]
    return [i for m in megas + [extra] for i in m]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("mix", ["images", "mixed", "text"])
def test_length_grouping_equals_llava(world, mix):
    rng = random.Random(world)
    lengths = [rng.choice([5, 9, 9, 30, 64]) * (1 if mix == "images" or (mix == "mixed" and rng.random() < 0.6)
                                               else -1) for _ in range(101)]
    for seed in range(3):
        ours = modality_length_grouped_indices(torch.tensor(lengths, dtype=torch.int32), 4, world,
                                               torch.Generator().manual_seed(seed))
        ref = llava_reference(lengths, 4, world, torch.Generator().manual_seed(seed))
        assert ours.tolist() == ref


def grouped_loader(lengths, batch, rank=0, world=1):
    return IndexLoader(len(lengths), lambda rows: {"rows": rows}, batch, seed=5, rank=rank, world_size=world,
                       group_lengths=torch.tensor(lengths))


def test_grouped_batches_cover_the_data_once_and_keep_modalities_apart():
    rng = random.Random(1)
    lengths = [rng.randint(3, 60) * (1 if i % 4 else -1) for i in range(96)]
    ranks = [[b["rows"].tolist() for b in grouped_loader(lengths, 4, r, 2)] for r in range(2)]
    seen = [i for batches in ranks for b in batches for i in b]
    assert sorted(seen) == list(range(96))
    # Rank r's k-th batch is global chunk 2k + r: one process with batch 8 sees their union per step.
    one = [b["rows"].tolist() for b in grouped_loader(lengths, 8)]
    assert [sorted(a + b) for a, b in zip(*ranks)] == [sorted(b) for b in one]
    # The two modalities' last megabatches (72 images and 24 texts: one full of each) lead and end
    # the epoch: no batch mixes them (an older LLaVA, sorting them by index, mixed both).
    assert not [b for b in one if len({lengths[i] > 0 for i in b}) > 1]
    # Partial last megabatches (68 and 28 samples: 4 + 4 left) join into the one megabatch that
    # mixes; being full, it leads the epoch.
    uneven = [rng.randint(3, 60) * (1 if i < 68 else -1) for i in range(96)]
    batches = [b["rows"].tolist() for b in grouped_loader(uneven, 8)]
    assert [b for b in batches if len({uneven[i] > 0 for i in b}) > 1] == batches[:1]
    # Each global batch is dealt to the ranks with balanced token counts (LLaVA's even chunks).
    def imbalance(per_rank):
        return sum(abs(sum(abs(lengths[i]) for i in a) - sum(abs(lengths[i]) for i in b)) for a, b in zip(*per_rank))

    plain = [[b["rows"].tolist() for b in IndexLoader(96, lambda rows: {"rows": rows}, 4, seed=5, rank=r,
                                                      world_size=2)] for r in range(2)]
    assert imbalance(ranks) < imbalance(plain) / 2


def test_a_grouped_loader_resumes_where_it_stopped():
    lengths = [(i % 7 + 1) * (1 if i % 3 else -1) for i in range(64)]
    loader = grouped_loader(lengths, 4)
    loader.set_epoch(2)
    it = iter(loader)
    head = [next(it)["rows"].tolist() for _ in range(5)]
    state = loader.state_dict()
    rest = [b["rows"].tolist() for b in it]
    again = grouped_loader(lengths, 4)
    again.load_state_dict(state)
    assert [b["rows"].tolist() for b in again] == rest
    full = grouped_loader(lengths, 4)
    full.set_epoch(2)
    assert [b["rows"].tolist() for b in full] == head + rest
