"""BLIP-2 stage 1 under torchrun (2 Gloo ranks, CPU): ddp gives the losses and weights of one
process with the same global batch (ITC gathers with gradient, ITM's negatives are drawn per global
row, ITG averages over the step's tokens), and so does fsdp2 per layer although each Q-Former layer
runs three times a step (ITC, ITM, ITG); every trainable parameter changes."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import tessera

sys.path.insert(0, os.path.dirname(__file__))
from _recipes import CLASSES, FMNIST, blip2_recipe as recipe  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")]
STEPS = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train(tmp_path, name, r, procs):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
              if procs > 1 else [sys.executable])
    cmd = [*launch, "-m", "tessera.train", str(path), "--out", str(tmp_path / name), "--quiet"]
    return subprocess.run(cmd, env=ENV, timeout=600, capture_output=True, text=True)


def rows(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl") if '"loss"' in line]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blip2")
    for name, strategy, batch, procs in (("single", "ddp", 16, 1), ("ddp", "ddp", 8, 2), ("fsdp2", "fsdp2", 8, 2)):
        run = train(tmp, name, recipe(strategy, batch), procs)
        assert run.returncode == 0, run.stderr[-4000:]
    return tmp


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_equal_one_process_term_by_term(runs, strategy):
    one, two = rows(runs / "single"), rows(runs / strategy)
    for key in ("loss", "itc", "itm", "itg"):
        torch.testing.assert_close(torch.tensor([r[key] for r in two]), torch.tensor([r[key] for r in one]),
                                   rtol=1e-5, atol=1e-5, msg=key)
    a = tessera.from_pretrained(str(runs / "single" / "checkpoints" / f"step-{STEPS:08d}")).state_dict()
    b = tessera.from_pretrained(str(runs / strategy / "checkpoints" / f"step-{STEPS:08d}")).state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5, msg=k)


def test_every_trainable_parameter_changes(runs):
    from tessera.train import build_task, recipe_from_dict
    from tessera.train.distributed import seed_all

    r = recipe_from_dict(recipe("ddp", 16))
    seed_all(r.train.seed, 0)
    start = build_task(r).build_model().state_dict()
    end = tessera.from_pretrained(str(runs / "ddp" / "checkpoints" / f"step-{STEPS:08d}")).state_dict()
    unchanged = [k for k in start if torch.equal(start[k], end[k])]
    assert not unchanged, f"parameters that did not train: {unchanged}"


def test_evaluation_follows_its_definitions(runs):
    """The stage-1 metrics recomputed image by image from the model's scores: ITC's best query per
    class, ITM at P(match) > 1/2 and > 1/3 (the 1:2 training prior), and LAVIS's re-ranking score
    (match logit + ITC similarity) over ITC's top k classes."""
    from tessera.train import build_task, recipe_from_dict

    r = recipe_from_dict(recipe("ddp", 16))
    task = build_task(r)
    model = task.load_model(str(runs / "single" / "checkpoints" / f"step-{STEPS:08d}")).eval()
    got = task.evaluate(model)
    C, k = len(CLASSES), r.eval.rerank_top_k
    ids, mask = task.vocab([per_class[0] for per_class in task.captions], r.data.context_length)
    classes = torch.nn.functional.normalize(model.itc_text_features(ids, mask), dim=-1)
    g = torch.Generator().manual_seed(r.train.seed + 1)
    right = {"itc": 0, "half": 0, "third": 0, "rerank": 0}
    n = 0
    for px, labels in task.heldout(model.device):
        emb = task.image_embeds(px)
        others = (labels + torch.randint(1, C, labels.shape, generator=g)) % C
        queries = model.itc_image_features(emb)
        for i, (y, other) in enumerate(zip(labels.tolist(), others.tolist())):
            sims = [max(float(q @ classes[c]) for q in queries[i]) for c in range(C)]
            right["itc"] += max(range(C), key=sims.__getitem__) == y

            def logits(c):
                return model.itm_logits(emb[i:i + 1], ids[c:c + 1], mask[c:c + 1])[0]

            p_true, p_other = (float(logits(c).softmax(-1)[1]) for c in (y, other))
            right["half"] += (p_true > 0.5) + (p_other <= 0.5)
            right["third"] += (p_true > 1 / 3) + (p_other <= 1 / 3)
            top = sorted(range(C), key=sims.__getitem__, reverse=True)[:k]
            right["rerank"] += max(top, key=lambda c: float(logits(c)[1]) + sims[c]) == y
            n += 1
    assert n == got["eval_images"] == 16
    assert got["zero_shot_acc"] == pytest.approx(right["itc"] / n)
    assert got["itm_pair_acc"] == pytest.approx(right["half"] / (2 * n))
    assert got["itm_pair_acc_prior"] == pytest.approx(right["third"] / (2 * n))
    assert got["itm_rerank_r1"] == pytest.approx(right["rerank"] / n)


@pytest.mark.usefixtures("png_codec")
def test_eval_cli_retrieval_on_a_karpathy_file_follows_the_definition(runs, tmp_path):
    """`tessera eval RUN --retrieval coco:FILE` refused a BLIP-2 stage-1 run ("needs a two-tower
    model"); it now scores each image's best query against each caption, as ITC does."""
    import torch.nn.functional as F

    from test_caption_retrieval import recall_by_definition
    from tessera.eval.caption_retrieval import load_retrieval_split
    from tessera.train import build_task, recipe_from_dict

    r = recipe("ddp", 16)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    ckpt = runs / "single" / "checkpoints" / f"step-{STEPS:08d}"
    # Noise images and 15 distinct captions in the run's words, so that no two scores tie.
    g, entries = torch.Generator().manual_seed(0), []
    pairs = iter(torch.randperm(len(CLASSES) ** 2, generator=g).tolist())
    (tmp_path / "val2014").mkdir()
    for i in range(6):
        pixels = torch.randint(0, 256, (12, 12, 3), generator=g, dtype=torch.uint8)
        (tmp_path / "val2014" / f"{i}.png").write_bytes(tessera._C.data.encode_png(pixels))
        words = [(CLASSES[p // len(CLASSES)], CLASSES[p % len(CLASSES)]) for p in (next(pairs) for _ in range(5))]
        entries.append({"filepath": "val2014", "filename": f"{i}.png", "split": "test" if i % 2 == 0 else "train",
                        "imgid": i, "sentences": [{"raw": f"a photo of a {a} {b}."} for a, b in words]})
    split_file = str(tmp_path / "dataset_coco.json")
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))
    run = subprocess.run([sys.executable, "-m", "tessera.cli", "eval", str(ckpt), "--recipe", str(tmp_path / "r.yaml"),
                          "--retrieval", "coco:" + split_file, "--split", "test"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    task = build_task(recipe_from_dict(r))
    model = task.load_model(str(ckpt)).eval()
    split = load_retrieval_split("coco:" + split_file, "test")
    transform = tessera.data.ImageTransform(tessera.data.clip_transform(28))
    with torch.no_grad():
        px = torch.stack([transform(tessera.data.read_image(p)) for p in split.images])
        queries = model.itc_image_features(task.image_embeds(px))                     # [I, Q, E]
        texts = model.itc_text_features(*task.vocab(split.captions, r["data"]["context_length"]))
    sim = torch.einsum("iqe,te->itq", queries, texts).amax(-1)
    for k in (1, 5):
        i2t, t2i = recall_by_definition(sim.tolist(), split.caption_image, k)
        assert got[f"image_to_text_R@{k}"] == pytest.approx(i2t) and got[f"text_to_image_R@{k}"] == pytest.approx(t2i)
    assert got["num_images"] == 3 and got["num_captions"] == 15
    # ITM re-ranking as LAVIS's compute_sim_matrix (k_test 128 covers every candidate here): the
    # match logit of every pair plus its ITC score.
    with torch.no_grad():
        embeds = task.image_embeds(px)
        ids, mask = task.vocab(split.captions, r["data"]["context_length"])
        logits = torch.stack([model.itm_logits(embeds[i:i + 1].expand(len(ids), -1, -1), ids, mask)[:, 1]
                              for i in range(len(split.images))])                              # [I, T]
    for k in (1, 5):
        i2t, t2i = recall_by_definition((logits + sim).tolist(), split.caption_image, k)
        assert got[f"itm_image_to_text_R@{k}"] == pytest.approx(i2t)
        assert got[f"itm_text_to_image_R@{k}"] == pytest.approx(t2i)


def test_the_frozen_tower_does_not_change(tmp_path):
    """Stage 1 trains the Q-Former side only: the CLIP tower it reads runs without gradients and
    leaves the run as it came (issue 15's "the frozen tower does not")."""
    from tessera.train import Trainer, build_task, recipe_from_dict

    r = recipe_from_dict(recipe("ddp", 8))
    task = build_task(r)
    before = {k: v.clone() for k, v in task.tower.state_dict().items()}
    Trainer(r, task, str(tmp_path / "run"), progress=False).fit()
    after = task.tower.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in task.tower.parameters())
