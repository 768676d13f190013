"""Retrieval in the papers' format (tessera.eval.caption_retrieval): Karpathy files and LAVIS
annotation lists read exactly, R@K against the definition written out here, bad files named."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

import tessera
from tessera import _C
from tessera.eval import caption_retrieval as cr


def recall_by_definition(sim, owner, k):
    """sim [I, T]. i2t: any own caption among the image's K best texts; t2i: own image among K best."""
    n_img, n_txt = len(sim), len(sim[0])
    sim = [list(row) for row in sim]
    i2t = sum(any(owner[t] == i for t in sorted(range(n_txt), key=lambda t: -sim[i][t])[:k]) for i in range(n_img))
    t2i = sum(owner[t] in sorted(range(n_img), key=lambda i: -sim[i][t])[:k] for t in range(n_txt))
    return i2t / n_img, t2i / n_txt


def test_recall_equals_the_definition_on_random_scores():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(23, 8, generator=g), torch.randn(23 * 5 - 3, 8, generator=g)
    owner = [t % 23 for t in range(txt.shape[0])]
    out = cr.multi_caption_recall(img, txt, owner, ks=(1, 5, 10), block=7)  # blocks smaller than the split
    sim = (img @ txt.T).tolist()
    for k in (1, 5, 10):
        i2t, t2i = recall_by_definition(sim, owner, k)
        assert out[f"image_to_text_R@{k}"] == pytest.approx(i2t)
        assert out[f"text_to_image_R@{k}"] == pytest.approx(t2i)
    assert out["mean_recall"] == pytest.approx(sum(v for key, v in out.items() if "R@" in key) / 6)


def test_known_answers():
    # image 0 owns captions 0, 1; image 1 owns caption 2. Caption 1 points at image 1 instead.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])
    out = cr.multi_caption_recall(img, txt, [0, 0, 1], ks=(1, 2))
    assert out["image_to_text_R@1"] == 1.0        # each image's best text is its own
    assert out["text_to_image_R@1"] == pytest.approx(2 / 3)
    assert out["text_to_image_R@2"] == 1.0


def _png(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(_C.data.encode_png(torch.full((8, 8, 3), value, dtype=torch.uint8)))


def _karpathy(tmp_path, images=4):
    entries = []
    for i in range(images):
        split = "test" if i % 2 == 0 else "train"
        _png(str(tmp_path / "val2014" / f"{i}.png"), 40 * i)
        entries.append({"filepath": "val2014", "filename": f"{i}.png", "split": split, "imgid": i,
                        "sentences": [{"raw": f" image {i} caption {j} ", "tokens": []} for j in range(5)]})
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return str(path)


@pytest.mark.usefixtures("png_codec")
def test_karpathy_split_reads_every_caption_of_its_images(tmp_path):
    split = cr.load_retrieval_split("coco:" + _karpathy(tmp_path), "test")
    assert [os.path.basename(p) for p in split.images] == ["0.png", "2.png"]
    assert split.captions[:2] == ["image 0 caption 0", "image 0 caption 1"] and len(split.captions) == 10
    assert split.caption_image == [0] * 5 + [1] * 5


@pytest.mark.usefixtures("png_codec")
def test_annotation_list_groups_captions_by_image(tmp_path):
    for name in ("a", "b"):
        _png(str(tmp_path / "img" / f"{name}.png"), 10)
    path = tmp_path / "coco_karpathy_test.json"
    path.write_text(json.dumps([{"image": "img/a.png", "caption": ["one", "two"]},
                                {"image": "img/b.png", "caption": "three"}, {"image": "img/a.png", "caption": "four"}]))
    split = cr.load_retrieval_split(str(path))
    assert split.captions == ["one", "two", "three", "four"] and split.caption_image == [0, 0, 1, 0]


@pytest.mark.usefixtures("png_codec")
def test_bad_files_are_named(tmp_path):
    path = _karpathy(tmp_path)
    with pytest.raises(ValueError, match=r"no image in split 'restval'; the file's splits: test \(2\), train \(2\)"):
        cr.load_retrieval_split("coco:" + path, "restval")
    os.remove(tmp_path / "val2014" / "2.png")
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images not found, first .*2\.png"):
        cr.load_retrieval_split("coco:" + path, "test")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"filename": "x.png", "split": "test", "sentences": [{"raw": ""}]}]}))
    with pytest.raises(ValueError, match=r"images\[0\] \(x\.png\): sentences\[0\]\.raw: a caption must be"):
        cr.load_retrieval_split("coco:" + str(bad))
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([{"image": "a.png", "caption": []}]))
    with pytest.raises(ValueError, match=r"\[0\] \(a\.png\): empty caption list"):
        cr.load_retrieval_split(str(empty))


@pytest.mark.usefixtures("png_codec")
def test_a_clip_model_end_to_end_equals_its_own_embeddings(tmp_path):
    split = cr.load_retrieval_split("coco:" + _karpathy(tmp_path, images=6), "test")
    cfg = {"projection_dim": 16,
           "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
           "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                           "num_attention_heads": 2}}
    model = tessera.CLIPModel(cfg).eval()
    out = cr.caption_retrieval_evaluate(model, split, tessera.tokenize, image_size=16, batch_size=2)
    assert out["num_images"] == 3 and out["num_captions"] == 15
    transform = tessera.data.ImageTransform(tessera.data.clip_transform(16))
    with torch.no_grad():
        px = torch.stack([transform(tessera.data.read_image(p)) for p in split.images])
        img = F.normalize(model.get_image_features(px), dim=-1)
        txt = F.normalize(model.get_text_features(tessera.tokenize(split.captions)), dim=-1)
    i2t, t2i = recall_by_definition((img @ txt.T).tolist(), split.caption_image, 1)
    assert out["image_to_text_R@1"] == pytest.approx(i2t) and out["text_to_image_R@1"] == pytest.approx(t2i)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="no Fashion-MNIST")
@pytest.mark.usefixtures("png_codec")
def test_eval_cli_with_a_karpathy_file(tmp_path):
    import subprocess
    import sys

    import yaml

    sys.path.insert(0, os.path.dirname(__file__))
    from test_train import tiny_recipe

    recipe = tiny_recipe()
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    tessera.CLIPModel(recipe["model"]["config"]).save_pretrained(str(tmp_path / "ckpt"))
    split_file = _karpathy(tmp_path / "coco", images=6)
    cmd = [sys.executable, "-m", "tessera.cli", "eval", str(tmp_path / "ckpt"), "--recipe", str(tmp_path / "r.yaml"),
           "--retrieval", "coco:" + split_file, "--split", "test"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads(run.stdout)
    assert metrics["num_images"] == 3 and metrics["num_captions"] == 15 and 0 <= metrics["mean_recall"] <= 1
    run = subprocess.run(cmd[:-1] + ["val"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "no image in split 'val'" in run.stderr


@pytest.mark.usefixtures("png_codec")
def test_the_clip_task_scores_a_caption_file_per_image(tmp_path):
    """`eval.retrieval` on a caption file with several rows per image (COCO's five) scored each row
    as its own image: another caption of the same image was a miss (R@1 0.18 where the papers' rule
    gives 0.92). Rows are now grouped by image and scored by multi_caption_recall."""
    from tessera.train import build_task, recipe_from_dict
    from tessera.train.clip_task import caption_split

    rows = []
    for i in range(3):
        _png(str(tmp_path / f"{i}.png"), 60 * i)
        rows += [{"image": f"{i}.png", "caption": f"image {i} caption {j}"} for j in range(4)]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = tessera.data.CaptionDataset(str(tmp_path / "val.jsonl"))
    split = caption_split(dataset)
    assert [os.path.basename(p) for p in split.images] == ["0.png", "1.png", "2.png"]
    assert split.caption_image == [0] * 4 + [1] * 4 + [2] * 4 and split.captions[5] == "image 1 caption 1"
    assert caption_split(dataset, max_images=2).caption_image == [0] * 4 + [1] * 4
    recipe = recipe_from_dict({"task": "clip", "model": {"config": {
        "projection_dim": 16, "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                                "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2}}},
        "data": {"dataset": "captions", "root": str(tmp_path / "val.jsonl"), "image_size": 16, "batch_size": 4,
                 "num_workers": 1},
        "eval": {"retrieval": True, "zero_shot": False}})
    task = build_task(recipe)
    model = task.build_model().eval()
    out = task.evaluate(model)
    want = cr.caption_retrieval_evaluate(model, split, task.tokenizer, image_size=16, batch_size=4)
    assert out["num_images"] == 3 and out["num_captions"] == 12
    assert {k: out[k] for k in want} == want


def test_rows_grouped_by_image_equal_multi_caption_recall_and_ungrouped_rows_stay_as_they_were():
    """recall_at_k(image_ids=...) is the papers' rule (an image hits if any of its captions is
    retrieved) where each row repeats its image, and without image_ids the one-caption rule."""
    from tessera.eval.retrieval import recall_at_k

    g = torch.Generator().manual_seed(0)
    for n_img, n_txt in ((1, 1), (4, 9), (7, 30)):
        owner = torch.cat([torch.arange(n_img), torch.randint(0, n_img, (n_txt - n_img,), generator=g)])
        owner = owner[torch.randperm(n_txt, generator=g)].tolist()
        order = list(dict.fromkeys(owner))  # images in order of first appearance
        images = F.normalize(torch.randn(n_img, 8, generator=g), dim=-1)
        texts = F.normalize(torch.randn(n_txt, 8, generator=g), dim=-1)
        rows = images[torch.tensor(owner)]
        want = cr.multi_caption_recall(images[torch.tensor(order)], texts, [order.index(o) for o in owner])
        got = recall_at_k(rows, texts, [f"caption {i}" for i in range(n_txt)], image_ids=owner)
        assert got == pytest.approx({k: want[k] for k in got})


def test_the_clip_task_scores_caption_shards_per_image(tmp_path):
    """Shards written from a caption file (one sample per caption row, the image repeated) were
    scored row by row: image->text R@1 0.16 where the papers' rule gives 0.78. Rows holding the
    same image are now one image, as the caption file's own evaluation groups them."""
    from tessera.data.shards import file_samples, write_shards
    from tessera.train import build_task, recipe_from_dict

    rows = []
    for i in range(3):
        _png(str(tmp_path / f"{i}.png"), 60 * i)
        rows += [(str(tmp_path / f"{i}.png"), f"image {i} caption {j}", None) for j in range(4)]
    pattern = write_shards(str(tmp_path / "shards"), file_samples(rows), maxcount=5)
    config = {"projection_dim": 16, "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                                      "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
              "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                              "num_attention_heads": 2}}
    recipe = recipe_from_dict({"task": "clip", "model": {"config": config},
                               "data": {"dataset": "webdataset", "root": pattern, "image_size": 16, "batch_size": 4,
                                        "num_workers": 1},
                               "eval": {"retrieval": True, "zero_shot": False}})
    task = build_task(recipe)
    model = task.build_model().eval()
    out = task.evaluate(model)
    split = cr.RetrievalSplit.from_pairs("eval", [(p, c) for p, c, _ in rows])
    want = cr.caption_retrieval_evaluate(model, split, task.tokenizer, image_size=16, batch_size=4)
    assert out["num_images"] == 3 and out["num_captions"] == 12
    assert {k: out[k] for k in want} == pytest.approx(want)


@pytest.mark.usefixtures("png_codec")
def test_a_split_is_read_once_per_image_and_never_ignored(tmp_path):
    """`--split val` with a LAVIS list (one split's file) was ignored without a word; `./a.png`
    and `a.png` in one list were two images; a Karpathy split naming one image twice tied it with
    itself in every ranking."""
    _png(str(tmp_path / "img" / "0.png"), 10)
    _png(str(tmp_path / "img" / "1.png"), 90)
    lavis = tmp_path / "coco_karpathy_test.json"
    lavis.write_text(json.dumps([{"image": "img/0.png", "caption": ["a"]}, {"image": "./img/0.png", "caption": ["b"]},
                                 {"image": "img/1.png", "caption": "c"}]))
    split = cr.load_retrieval_split(str(lavis))
    assert len(split.images) == 2 and split.caption_image == [0, 0, 1]
    for spec in (str(lavis), "annotations:" + str(lavis)):
        with pytest.raises(ValueError, match=r"a LAVIS annotation list holds one split .* split 'val' applies to "
                                             "Karpathy files only"):
            cr.load_retrieval_split(spec, "val")
    entry = {"filepath": "img", "filename": "0.png", "split": "test", "sentences": [{"raw": "x"}]}
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"images": [entry, dict(entry, filepath="./img")]}))
    with pytest.raises(ValueError, match=r"images\[1\] \(0.png\): the same image as images\[0\] in split 'test'"):
        cr.load_retrieval_split("coco:" + str(karpathy))


def test_itm_reranked_recall_equals_lavis_protocol():
    """LAVIS's compute_sim_matrix: a -100 matrix, each query's k_test best by ITC set to the match
    logit plus the ITC score, then report_metrics' ranks; here written out on full matrices."""
    g = torch.Generator().manual_seed(0)
    n_img, per = 9, 5
    owner = [t // per for t in range(n_img * per)]
    img, txt = torch.randn(n_img, 6, generator=g), torch.randn(n_img * per, 6, generator=g)
    logits = torch.randn(n_img, n_img * per, generator=g) * 3  # ITM's match logit of every pair
    itc = img @ txt.T
    for k_test in (10, 12, 45):
        i2t = torch.full_like(itc, -100.0)
        for i in range(n_img):
            sim, top = itc[i].topk(k_test)
            i2t[i, top] = logits[i, top] + sim
        t2i = torch.full_like(itc.T, -100.0)
        for t in range(n_img * per):
            sim, top = itc[:, t].topk(min(k_test, n_img))
            t2i[t, top] = logits[top, t] + sim
        got = cr.reranked_recall(img, txt, owner, lambda a, b: a @ b.T, lambda i, t: logits[i, t], k_test, block=4)
        for k in (1, 5, 10):
            want_i2t = sum(any(owner[t] == i for t in i2t[i].argsort(descending=True)[:k].tolist())
                           for i in range(n_img)) / n_img
            want_t2i = sum(owner[t] in t2i[t].argsort(descending=True)[:k].tolist() for t in range(n_img * per))
            assert got[f"itm_image_to_text_R@{k}"] == pytest.approx(want_i2t)
            assert got[f"itm_text_to_image_R@{k}"] == pytest.approx(want_t2i / (n_img * per))
    with pytest.raises(ValueError, match="k_test 5 is below the largest K"):
        cr.reranked_recall(img, txt, owner, lambda a, b: a @ b.T, lambda i, t: logits[i, t], k_test=5)
