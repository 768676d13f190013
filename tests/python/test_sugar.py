"""Sugar's training (task `sugar`): L_d is the paper's formula (over ranks' padded points too),
M_l is 1 within a sample and a plain GAK call otherwise, a point is a hand split of the hidden
states, the target cache is rebuilt exactly when an encoder checkpoint changes, a short run lowers
L_d and moves every LoRA and projector parameter, a checkpoint reloads as a SugarModel, and bad
input is a ValueError. Tiny random encoders and LLaVA stand in for the demo runs."""
import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import tessera
from tessera import _C
from tessera.losses.sugar import discriminative_loss
from tessera.models.sugar import SugarModel
from tessera.train import Trainer, build_task, recipe_from_dict
from tessera.train.distributed import init_distributed, seed_all
from tessera.train import sugar_targets
from tessera.train.sugar_targets import SliceVectors, SugarTargets, slice_vectors, target_matrix
from tessera.train.sugar_task import point_weights

sys.path.insert(0, os.path.dirname(__file__))
from _sugar_runs import FMNIST, make_runs, recipe  # noqa: E402

pytestmark = [pytest.mark.skipif(not _C.data.drawing_available(), reason="built without OpenCV"),
              pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("sugar"))


def test_discriminative_loss_is_the_formula():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(6, 5, generator=g, dtype=torch.float64)
    m_l = torch.rand(6, 6, generator=g, dtype=torch.float64)
    cos = F.cosine_similarity(r[:, None], r[None], dim=-1)
    plain = sum((cos[i, j] - m_l[i, j]) ** 2 for i in range(6) for j in range(6)) / 6  # 1/n, not 1/n^2
    torch.testing.assert_close(discriminative_loss(r, m_l), plain)
    valid = torch.tensor([True, False, True, True, False, True])  # padding points take no part
    keep = valid.nonzero()[:, 0]
    sub = sum((cos[i, j] - m_l[i, j]) ** 2 for i in keep for j in keep) / len(keep)
    torch.testing.assert_close(discriminative_loss(r, m_l, 1, valid, valid), sub)
    with pytest.raises(ValueError, match="columns"):
        discriminative_loss(r[:3], m_l[:3, :4])


def _vectors(lengths, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    first = F.normalize(torch.randn(total, dim, generator=g), dim=-1)
    second = F.normalize(torch.randn(total, dim, generator=g), dim=-1)
    is_image = torch.rand(total, generator=g) < 0.5
    offsets = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    return SliceVectors(first, second, is_image, offsets)


@pytest.mark.parametrize("normalized", [True, False])
def test_targets_are_one_within_a_sample_and_gak_otherwise(normalized, monkeypatch):
    v = _vectors([3, 4, 2, 4])
    points = [(0, 1), (0, 2), (1, 0), (1, 3), (2, 1), (3, 2)]
    clip_only = SugarTargets(triple_kernel=False, delta=0.7, normalized=normalized)
    m = target_matrix(v, points, points, clip_only)
    for a, (i, p) in enumerate(points):
        for b, (j, q) in enumerate(points):
            if i == j:
                assert m[a, b] == 1
                continue
            x, y = v.second[v.offsets[i]:v.offsets[i] + p + 1], v.second[v.offsets[j]:v.offsets[j] + q + 1]
            direct = tessera.ops.gak(x[None].double(), y[None].double(), delta=0.7, normalized=normalized)
            torch.testing.assert_close(m[a, b].double(), direct[0], rtol=1e-4, atol=1e-6)
    # Each distinct pair is computed once and shared: some rows against every column (one rank's
    # points against all ranks'), a point repeated, the rows reversed; all read the same matrix.
    cols = points + [points[3]]
    part = target_matrix(v, points[4:1:-1], cols, clip_only)
    torch.testing.assert_close(part, m[[4, 3, 2]][:, [0, 1, 2, 3, 4, 5, 3]], rtol=1e-5, atol=1e-7)
    with monkeypatch.context() as patch:  # rows in blocks of one: nothing shared across blocks
        patch.setattr(sugar_targets, "PAIRS_PER_CALL", 4)
        torch.testing.assert_close(target_matrix(v, points, points, clip_only), m, rtol=1e-5, atol=1e-7)
    # A rank whose micro-batch has no point (instruction rows only) still gets its [0, n] block.
    assert target_matrix(v, [], points, clip_only).shape == (0, 6)
    assert target_matrix(v, points, [], clip_only).shape == (6, 0)
    # the triple kernel: two image-only prefixes compare their first blocks
    v.is_image[:] = True
    triple = target_matrix(v, [(0, 1)], [(1, 2)], SugarTargets(delta=0.7))
    direct = tessera.ops.gak(v.first[0:2][None], v.first[3:6][None], delta=0.7)
    torch.testing.assert_close(triple[0, 0], direct[0], rtol=1e-4, atol=1e-6)


def test_a_point_is_a_hand_split_of_the_hidden_states(runs):
    task = build_task(recipe_from_dict(recipe(runs)))
    model = task.build_model().eval()
    s = task.train_set
    rows = [0, 1]
    points = torch.tensor([[j for j, k in enumerate(s.kinds[i]) if k == "image"][:1]
                           + [j for j, k in enumerate(s.kinds[i]) if k == "text"][:1] for i in rows])
    width = int(s.attention_mask[rows].sum(1).max())
    w = point_weights([s.spans[i] for i in rows], [s.kinds[i] for i in rows], points, width)
    pixels = tessera.train.conversation_data.load_pixels([p for i in rows for p in s.images[i]], task.transform)
    ids, mask = s.input_ids[rows, :width], s.attention_mask[rows, :width]
    with torch.no_grad():
        out = model(ids, pixels, mask, point_weights=w)
        hidden = model.llava(input_ids=ids, pixel_values=pixels, attention_mask=mask,
                             output_hidden_states=True).hidden_states[-1]
    for b, i in enumerate(rows):
        (a0, b0), (a1, b1) = s.spans[i][int(points[b, 0])], s.spans[i][int(points[b, 1])]
        assert (ids[b, a0:b0] == task.image_token_id).all() and b0 - a0 == task.image_tokens
        torch.testing.assert_close(out["points"][2 * b], hidden[b, a0:b0].mean(0))      # image: mean of its tokens
        torch.testing.assert_close(out["points"][2 * b + 1], hidden[b, b1 - 1])          # text: its last token
    torch.testing.assert_close(out["r"], model.retrieval_projector(out["points"]))


def test_sugar_sees_images_as_its_llava_run_was_trained(runs, tmp_path):
    """A LLaVA run trained with `image_aspect_ratio: pad` (LLaVA-1.5's expand2square) had its
    images center-cropped by Sugar and its retriever. Sugar takes the run's layout (recipe.json)
    unless its recipe names one, and writes it into its own recipe for retrieval."""
    import shutil

    llava = tmp_path / "llava"
    shutil.copytree(runs / "llava", llava)
    (llava / "recipe.json").write_text(json.dumps({"task": "llava", "data": {"image_aspect_ratio": "pad"}}))
    r = recipe(runs)
    r["init"]["checkpoint"] = str(llava)
    task = build_task(recipe_from_dict(r))
    assert task.transform.options.resize_mode == "pad" and task.recipe.data.image_aspect_ratio == "pad"
    r["data"]["image_aspect_ratio"] = "square"
    assert build_task(recipe_from_dict(r)).transform.options.resize_mode == "shortest_floor"


def test_the_target_cache_is_reused_and_rebuilt_when_an_encoder_changes(runs, tmp_path):
    section = recipe_from_dict(recipe(runs, cache_dir=str(tmp_path))).targets
    data, logs = str(runs / "set" / "train.jsonl"), []
    first = slice_vectors(data, section, log=logs.append)
    files = sorted(os.listdir(tmp_path))
    again = slice_vectors(data, section, log=logs.append)
    assert len(logs) == 1 and sorted(os.listdir(tmp_path)) == files  # reused: nothing embedded again
    assert torch.equal(first.first, again.first) and first.fingerprint == again.fingerprint
    mae = tessera.from_pretrained(str(runs / "mae"))
    with torch.no_grad():
        for p in mae.parameters():
            p.add_(0.1)
    mae.save_pretrained(str(tmp_path / "mae2"))
    section.image_encoder = str(tmp_path / "mae2")
    changed = slice_vectors(data, section, log=logs.append)
    assert len(logs) == 2 and changed.fingerprint != first.fingerprint and len(os.listdir(tmp_path)) == 3
    # An encoder saved in shards (the index and model-0000i-of-0000n files) is fingerprinted by
    # them: the fingerprint hashed a model.safetensors such a folder does not have.
    mae.save_pretrained(str(tmp_path / "mae3"), max_shard_size="20KB")
    assert not (tmp_path / "mae3" / "model.safetensors").exists()
    section.image_encoder = str(tmp_path / "mae3")
    sharded = slice_vectors(data, section, log=logs.append)
    assert sharded.fingerprint not in (first.fingerprint, changed.fingerprint)
    torch.testing.assert_close(sharded.first, changed.first)  # the same weights, read from shards
    img = first.is_image
    assert not torch.allclose(changed.first[img], first.first[img])   # the image-only block moved
    torch.testing.assert_close(changed.second, first.second)         # CLIP's did not
    torch.testing.assert_close(changed.first[~img], first.first[~img])


def test_the_target_cache_follows_the_images_and_holds_only_the_datas_slices(runs, tmp_path):
    """The fingerprint hashed the data file and encoders only: another `data.image_folder` (same
    names, other pictures) reused the old images' targets, and a cache edited under its fingerprint
    (other dtype, width, offsets) or cut in half was used, or failed the run with a bare error. Now
    the images' stats are in the fingerprint, and a cache that does not hold the data file's slices
    is said and built again; a place that cannot take the cache is said, and the run goes on."""
    import shutil

    from PIL import Image, ImageOps

    section = recipe_from_dict(recipe(runs, cache_dir=str(tmp_path / "cache"))).targets
    data, logs = str(runs / "set" / "train.jsonl"), []
    base = slice_vectors(data, section, log=logs.append)
    inverted = tmp_path / "inverted"
    shutil.copytree(runs / "set", inverted)
    for image in inverted.rglob("*.png"):
        ImageOps.invert(Image.open(image).convert("RGB")).save(image)
    other = slice_vectors(data, section, image_folder=str(inverted), log=logs.append)
    img = base.is_image
    assert other.fingerprint != base.fingerprint and not torch.allclose(other.second[img], base.second[img])
    torch.testing.assert_close(other.second[~img], base.second[~img])  # the texts are the same
    cached = next(p for p in (tmp_path / "cache").iterdir() if base.fingerprint[:16] in p.name)
    good = torch.load(cached, weights_only=True)
    edits = {"first as int64": {**good, "first": good["first"].long()},
             "first 7 wide": {**good, "first": good["first"][:, :7].clone()},
             "offsets moved": {**good, "offsets": good["offsets"] * 2},
             "a list": [1, 2]}
    for label, state in edits.items():
        torch.save(state, cached)
        logs.clear()
        again = slice_vectors(data, section, log=logs.append)
        assert "building it again" in logs[0] and torch.equal(again.first, base.first), label
    cached.write_bytes(cached.read_bytes()[:1000])  # cut
    logs.clear()
    assert torch.equal(slice_vectors(data, section, log=logs.append).second, base.second)
    assert "is unreadable" in logs[0]
    shutil.copytree(runs / "set", tmp_path / "one")  # beside its images
    lines = [json.loads(line) for line in open(data)]
    for kind in ("image", "text"):  # a file of one modality: its cache is reused (its width check failed it)
        one = tmp_path / "one" / f"{kind}.jsonl"
        one.write_text("".join(json.dumps({**r, "segments": [s for s in r["segments"] if kind in s]}) + "\n"
                               for r in lines if any(kind in s for s in r["segments"])))
        logs.clear()
        slice_vectors(str(one), section, log=logs.append)
        slice_vectors(str(one), section, log=logs.append)
        assert len(logs) == 1, logs  # embedded once
    cached.unlink()
    cached.mkdir()  # a folder where the cache goes
    logs.clear()
    assert torch.equal(slice_vectors(data, section, log=logs.append).second, base.second)
    assert any("could not cache the targets" in line for line in logs)


def test_retrieval_ranked_by_the_targets_is_gak_over_each_samples_own_slices(runs):
    """The retrieval ceiling: M_l between a held-out sample's images alone and another's sentences
    alone is normalised GAK with CLIP's cost across and the single-modality blocks within (all three
    at the pair's bandwidth), built here from the slices' vectors with plain `gak` calls."""
    from tessera.train.interleaved_data import read_interleaved
    from tessera.train.sugar_eval import single_modality_targets

    r = recipe_from_dict(recipe(runs))
    task = build_task(r)
    count = len(read_interleaved(r.data.eval))
    indices = list(range(count))[::-2]  # a subset, out of order
    m_l = single_modality_targets(task, r.data.eval, indices)
    v = slice_vectors(r.data.eval, r.targets, log=lambda *a: None)

    def blocks(i, image):
        a, b = v.slices(i)
        keep = v.is_image[a:b] == image
        return v.first[a:b][keep], v.second[a:b][keep]

    def k(x, y, sigma):
        return float(tessera.ops.gak(x.double(), y.double(), sigma=sigma, normalized=False))

    expected = torch.zeros(len(indices), len(indices))
    for row, i in enumerate(indices):
        img_first, img_second = blocks(i, True)
        for col, j in enumerate(indices):
            txt_first, txt_second = blocks(j, False)
            sigma = r.targets.delta * ((len(img_first) + len(txt_first)) / 2) ** 0.5  # the pair's, for all three
            expected[row, col] = k(img_second, txt_second, sigma) / (
                k(img_first, img_first, sigma) * k(txt_first, txt_first, sigma)) ** 0.5
    torch.testing.assert_close(m_l, expected, rtol=1e-4, atol=1e-6)


def test_training_lowers_l_d_and_moves_every_lora_and_projector_parameter(runs, tmp_path):
    r = recipe_from_dict(recipe(runs, steps=20))
    task = build_task(r)
    seed_all(r.train.seed, 0)  # the initial weights the trainer builds
    start = {k: p.detach().clone() for k, p in task.build_model().named_parameters()}
    trainer = Trainer(r, task, str(tmp_path / "run"), init_distributed(), progress=False)
    summary = trainer.fit()
    trainable = [k for k, p in trainer.model.named_parameters() if p.requires_grad]
    assert any(".lora_A" in k for k in trainable) and any("retrieval_projector" in k for k in trainable)
    assert all(".lora_" in k or "multi_modal_projector" in k or "retrieval_projector" in k for k in trainable)
    assert all(("q_proj" in k or "v_proj" in k) for k in trainable if ".lora_" in k)
    still = [k for k in trainable if torch.equal(dict(trainer.model.named_parameters())[k], start[k])]
    assert not still, f"trainable parameters that did not move: {still}"
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if '"discriminative"' in line]
    l_d = [row["discriminative"] for row in rows]
    assert len(l_d) == 20 and sum(l_d[-5:]) / 5 < 0.8 * sum(l_d[:5]) / 5, l_d
    assert all("generative" in row for row in rows)
    assert {"retrieval_i2t_r1", "winoground_group"} <= set(summary)
    for d in ("i2t", "t2i"):  # the ceiling is reported; the Pearson is a number (not NaN)
        assert 0 <= summary[f"retrieval_{d}_r1_targets"] <= summary[f"retrieval_{d}_r5_targets"] <= 1
    assert -1 <= summary["retrieval_target_pearson"] <= 1
    # the checkpoint is a plain LLaVA plus the projector, and reloads as the trained model
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000020"
    assert isinstance(tessera.from_pretrained(str(ckpt)), tessera.LlavaForConditionalGeneration)
    assert (ckpt / "chat_template.jinja").is_file()  # the LLaVA run's template (eval.template), as LLaVA's carry it
    loaded = task.load_model(str(ckpt))
    assert isinstance(loaded, SugarModel)
    for k, v in loaded.retrieval_projector.state_dict().items():
        torch.testing.assert_close(v, trainer.model.retrieval_projector.state_dict()[k])


def test_instruction_rows_take_l_g_on_their_answers_and_no_points(runs):
    """data.instruct: LLaVA conversation rows follow the interleaved ones; they draw no points, a
    step of them alone has L_d 0, and their token loss is LLaVA's own on the answers."""
    r = recipe(runs)
    r["data"].update(instruct=str(runs / "instruct" / "instruct.json"), instruct_samples=6)
    task = build_task(recipe_from_dict(r))
    n, m = len(task.train_set.samples), len(task.instruct.samples)
    seen = torch.cat([b["index"] for b in task.train_loader(0, 1)])  # one epoch, whole batches of 8
    assert m == 6 and len(seen) == (n + m) // 8 * 8 and len(set(seen.tolist())) == len(seen)
    assert int(seen.max()) < n + m and int((seen >= n).sum()) >= m - (n + m) % 8
    points = task.draw_points([0, n, n + 5], step=0)
    assert (points[0] >= 0).all() and (points[1:] == -1).all()
    model = task.build_model().eval()
    rows = torch.arange(n, n + 4)
    batch = {"index": rows, "input_ids": task.instruct.input_ids[:4], "labels": task.instruct.labels[:4],
             "attention_mask": task.instruct.attention_mask[:4]}
    loss = task.compute_loss(model, model, batch, step=0)["loss"]
    assert float(loss.means["discriminative"][1].detach()) == 0.0
    assert int(loss.tokens.count) == task.count_tokens(batch, 0) == int((batch["labels"][:, 1:] != -100).sum())
    pixels = tessera.train.conversation_data.load_pixels([p for i in range(4) for p in task.instruct.images[i]],
                                                         task.transform)
    with torch.no_grad():
        plain = model.llava(input_ids=batch["input_ids"], pixel_values=pixels, attention_mask=batch["attention_mask"],
                            labels=batch["labels"]).loss
    torch.testing.assert_close(loss.tokens.sum / loss.tokens.count, plain)


def test_bad_input_is_a_value_error(runs, tmp_path):
    spans, kinds = [[(1, 17), (17, 17)]], [["image", "text"]]
    with pytest.raises(ValueError, match="empty slice"):
        point_weights(spans, kinds, torch.tensor([[1]]), 20)
    with pytest.raises(ValueError, match="past the batch"):
        point_weights(spans, kinds, torch.tensor([[0]]), 10)
    with pytest.raises(ValueError, match="slices"):
        target_matrix(_vectors([2, 3]), [(0, 2)], [(1, 0)], SugarTargets())
    with pytest.raises(ValueError, match="init.checkpoint"):
        build_task(recipe_from_dict({**recipe(runs), "init": {}}))
    for key, value in (("delta", 0.0), ("delta", -1.0)):
        with pytest.raises(ValueError, match=key):
            recipe_from_dict(recipe(runs, **{key: value}))
    with pytest.raises(ValueError, match="alpha"):
        recipe_from_dict({**recipe(runs), "loss": {"alpha": -1.0}})
    with pytest.raises(FileNotFoundError, match="Sugar checkpoint"):
        SugarModel.from_pretrained(str(runs / "llava"))
    bad = tmp_path / "instruct.json"  # mixed-in instruction data goes through LLaVA's checks
    bad.write_text(json.dumps([{"id": 1, "image": "../../x.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A bag."}]}]))
    r = recipe(runs)
    r["data"]["instruct"] = str(bad)
    with pytest.raises(ValueError, match="leaves the image folder"):
        build_task(recipe_from_dict(r))
    with pytest.raises(ValueError, match="instruct_samples"):
        recipe_from_dict({**r, "data": {**r["data"], "instruct_samples": -1}})


def test_a_damaged_retrieval_projector_is_named(fixture_dir, tmp_path):
    """The projector's files are listed in a checkpoint's checksums but were never checked:
    `tessera eval` of a Sugar run loaded a damaged one."""
    from tessera.checksums import CheckpointDamaged, write_manifest
    from tessera.models.sugar import RetrievalProjector

    llava = tessera.from_pretrained(fixture_dir("llava"))
    model = SugarModel(llava, RetrievalProjector(llava.config["text_config"]["hidden_size"], hidden=32, dim=16))
    model.save_pretrained(str(tmp_path))
    write_manifest(str(tmp_path))
    SugarModel.from_pretrained(str(tmp_path))
    weights = tmp_path / "retrieval_projector.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0x7F
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointDamaged, match="retrieval_projector.safetensors: checksum mismatch"):
        SugarModel.from_pretrained(str(tmp_path))


def test_an_evaluation_of_non_finite_embeddings_is_refused(runs):
    """With NaN embeddings the retrieval recalls came from index order (R@1 0.10, R@5 0.50),
    Winoground scored 0/0/0 and the Pearson correlations were written as NaN."""
    from tessera.train.sugar_eval import evaluate_sugar

    task = build_task(recipe_from_dict(recipe(runs)))
    model = task.build_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("retrieval_projector."):
                p.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"Sugar's embeddings r: \d+ of \d+ rows hold NaN or inf"):
        evaluate_sugar(task, model)


def test_point_weights_in_another_layout_and_a_state_dict_of_other_keys_are_refused(fixture_dir, tmp_path):
    """[P, L, B] weights (the same elements) pooled the wrong tokens without a word; a DDP-style
    state dict ("module.llava.") saved a checkpoint holding 0 tensors."""
    from safetensors.torch import load_file

    from tessera.models.sugar import RetrievalProjector, SugarModel

    d = fixture_dir("llava")
    model = SugarModel(tessera.from_pretrained(str(d)).eval(), RetrievalProjector(64, 32, 16)).eval()
    ids = load_file(str(d / "io.safetensors"))["input_ids"].repeat(2, 1)
    px = torch.randn(2, 3, 32, 32)
    B, L = ids.shape
    w = torch.zeros(2, B, L)
    w[0, 0, 5:9], w[1, 1, -1] = 0.25, 1.0
    with torch.no_grad():
        assert model(ids, px, point_weights=w)["points"].shape == (2, 64)
        for bad in (w.transpose(1, 2), w[:, :, :-1], w[0]):
            with pytest.raises(ValueError, match=rf"point_weights must be \[points, batch, length\] = \[P, {B}, {L}\]"):
                model(ids, px, point_weights=bad)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"state_dict must hold this model's keys .* \d+ unknown .* \d+ missing"):
        model.save_pretrained(str(tmp_path / "out"), state_dict=state)
    assert not (tmp_path / "out" / "model.safetensors").exists()
