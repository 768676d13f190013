"""The masked-image-modeling tasks end to end on Fashion-MNIST with their shipped recipes (shrunk,
and with a small random CLIP teacher instead of the demo's): VQ-KD learns and uses its codebook,
BEiT learns to predict its tokens, feature-target MIM learns the teacher's features, a BEiT run
resumes bit-exactly (masks are reseeded per step), and `tessera eval --probe` reads the runs."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml

import tessera
from tessera.train import recipe_from_dict
from tessera.train.distributed import DistInfo
from tessera.train.tasks import task_class
from tessera.train.trainer import Trainer

sys.path.insert(0, os.path.dirname(__file__))
from _recipes import FMNIST  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")
ROOT = pathlib.Path(__file__).resolve().parents[2]
TEACHER = {"config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 28, "patch_size": 7}}
ENCODER = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 96}


def recipe(name, steps=30, **sections):
    r = yaml.safe_load(open(ROOT / "recipes" / f"fashion_mnist_{name}.yaml"))
    r["train"].update(steps=steps, eval_every=0, checkpoint_every=steps, log_every=1, threads=1, plots=False)
    r["data"].update(batch_size=64, num_workers=1)
    r["eval"]["max_images"] = 256
    for key, value in sections.items():
        r[key] = value
    return r


def fit(r, out, resume=False, task_cls=None):
    rec = recipe_from_dict(r)
    trainer = Trainer(rec, (task_cls or task_class(rec.task))(rec), str(out), DistInfo(), progress=False)
    return trainer.fit(resume=resume), trainer.model


@pytest.fixture(scope="module")
def vqkd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vqkd")
    r = recipe("vqkd", teacher=TEACHER)
    r["model"]["config"]["encoder_config"].update(ENCODER)
    r["model"]["config"]["codebook_size"] = 64
    summary, model = fit(r, out)
    return out, summary, model


def test_vqkd_learns_and_uses_its_codebook(vqkd_run):
    out, summary, model = vqkd_run
    assert summary["final_loss"] < 0.7 * summary["first_loss"], summary
    assert summary["codes_used"] > 0.25 and summary["perplexity"] > 8, summary
    loaded = tessera.from_pretrained(str(out / "checkpoints" / "step-00000030"))
    assert isinstance(loaded, tessera.VQKD) and torch.equal(loaded.quantize.embedding, model.quantize.embedding)


def _beit(vqkd_out, steps=30):
    r = recipe("beit", steps=steps, tokenizer={"checkpoint": str(vqkd_out)})
    r["model"]["config"].update(ENCODER)
    return r


def test_beit_predicts_visual_tokens(vqkd_run, tmp_path):
    # 60 steps: a k-means codebook spreads the tokens more evenly than random codes did, so the
    # first loss sits near ln 64 and the drop to 0.8 of it takes longer than 30 steps.
    summary, model = fit(_beit(vqkd_run[0], steps=60), tmp_path)
    assert model.config["vocab_size"] == 64
    assert summary["final_loss"] < 0.8 * summary["first_loss"], summary
    assert summary["token_accuracy"] > 3 / 64, summary  # chance is 1/64
    result = subprocess.run([sys.executable, "-m", "tessera.cli", "eval", str(tmp_path), "--probe", "--probe-train",
                             "600", "--probe-test", "200"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["feature_dim"] == 48 and 0.3 < probe["linear_probe"] <= 1 and 0.3 < probe["knn"] <= 1, probe


def test_beit_resume_is_bit_exact(vqkd_run, tmp_path):
    class Crash(Exception):
        pass

    r = _beit(vqkd_run[0], steps=6)
    r["train"]["checkpoint_every"] = 3
    _, full = fit(r, tmp_path / "full")
    base = task_class("beit")

    class Crashing(base):
        def compute_loss(self, wrapped, model, batch, step):
            if step == 4:
                raise Crash()
            return super().compute_loss(wrapped, model, batch, step)

    with pytest.raises(Crash):
        fit(r, tmp_path / "cut", task_cls=Crashing)
    _, resumed = fit(r, tmp_path / "cut", resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("loss", ["cosine", "smooth_l1"])
def test_feature_targets_are_learned(loss, tmp_path):
    r = recipe("mim_features", teacher=TEACHER, loss={"type": loss})
    r["model"]["config"].update(ENCODER)
    summary, model = fit(r, tmp_path)
    assert model.config["vocab_size"] == 48  # the head regresses the teacher's width
    assert summary["final_loss"] < 0.8 * summary["first_loss"], summary


def test_recipe_errors_name_the_problem(vqkd_run, tmp_path):
    r = recipe("beit", tokenizer={"checkpoint": str(tmp_path / "nothing")})
    with pytest.raises(FileNotFoundError, match="tokenizer.checkpoint .*nothing"):
        fit(r, tmp_path)
    r = _beit(vqkd_run[0])
    r["model"]["config"]["vocab_size"] = 100
    with pytest.raises(ValueError, match="model.config.vocab_size is 100 but the beit task needs 64"):
        fit(r, tmp_path)
    r = recipe("mim_features", teacher={**TEACHER, "checkpoint": "runs/demo"})
    with pytest.raises(ValueError, match="either checkpoint .* or config"):
        fit(r, tmp_path)
    r = recipe("beit", tokenizer={"checkpoint": str(vqkd_run[0])}, masking={"ratio": 1.5})
    with pytest.raises(ValueError, match=r"masking.ratio must be in \(0, 1\)"):
        fit(r, tmp_path)


def _split_equals_whole(task, model, batch, step):
    """compute_loss's masked sum over a batch equals the sums over its halves, as on 2 ranks."""
    def total(b):
        out = task.compute_loss(model, model, b, step)["loss"]
        return float(out.sum), float(out.count)

    half = len(batch["indices"]) // 2
    parts = [{k: v[s] for k, v in batch.items()} for s in (slice(0, half), slice(half, None))]
    whole, a, b = total(batch), total(parts[0]), total(parts[1])
    assert whole[1] == a[1] + b[1] and whole[0] == pytest.approx(a[0] + b[0], rel=1e-5)


def test_masks_are_drawn_per_sample_so_two_ranks_mask_what_one_process_masks(vqkd_run):
    """Masks were seeded by (seed, step, rank) and drawn in batch order (BEiT) or taken from the
    rank's global RNG (MAE): rank 1 masked images 4-7 otherwise than one process did."""
    torch.manual_seed(0)
    batch = {"pixel_values": torch.randn(8, 3, 28, 28), "indices": torch.arange(8) * 7}
    beit = task_class("beit")(recipe_from_dict(_beit(vqkd_run[0])))
    whole = beit.train_masks(batch, 5)
    halves = torch.cat([beit.train_masks({"indices": batch["indices"][:4]}, 5),
                        beit.train_masks({"indices": batch["indices"][4:]}, 5)])
    assert torch.equal(whole, halves) and not torch.equal(whole, beit.train_masks(batch, 6))
    assert torch.equal(beit.train_masks({"keys": ["a", "b"]}, 5), beit.train_masks({"keys": ["a", "b"]}, 5))
    r = recipe("mae")
    r["model"]["config"].update(ENCODER, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                decoder_num_attention_heads=2, decoder_intermediate_size=64)
    mae = task_class("mae")(recipe_from_dict(r))
    model = mae.build_model()
    _split_equals_whole(mae, model, batch, 3)


def test_weight_decay_groups_follow_each_pretraining_reference(vqkd_run):
    """MAE's main_pretrain.py decays the class and mask tokens (no skip list); BEiT's pretraining
    decays the mask token and the relative position bias table (skip list: cls_token, pos_embed)."""
    def decayed(task):
        model = task.build_model()
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(p)]: g["weight_decay"] > 0 for g in task.param_groups(model) for p in g["params"]}

    r = recipe("mae")
    r["model"]["config"].update(ENCODER, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                decoder_num_attention_heads=2, decoder_intermediate_size=64)
    mae = decayed(task_class("mae")(recipe_from_dict(r)))
    assert mae["vit.embeddings.cls_token"] and mae["decoder.mask_token"]
    assert not any(on for n, on in mae.items() if n.endswith(".bias") or "norm" in n)
    beit = decayed(task_class("beit")(recipe_from_dict(_beit(vqkd_run[0]))))
    assert beit["beit.embeddings.mask_token"] and not beit["beit.embeddings.cls_token"]
    assert all(on for n, on in beit.items() if "relative_position_bias_table" in n)
    vqkd = decayed(task_class("vqkd")(recipe_from_dict(recipe("vqkd", teacher=TEACHER))))
    assert not any(on for n, on in vqkd.items() if "token" in n)  # BEiT v2's VQ-KD groups: unchanged


def test_a_code_in_use_is_not_restarted_while_the_ema_warms_up():
    """cluster_size starts at 0: uncorrected, a code used 4 times in the first step (count 0.04)
    fell under a 0.05 threshold and was moved onto a random input."""
    from tessera.models.quantizer import NormEMAQuantizer

    torch.manual_seed(0)
    q = NormEMAQuantizer(16, 8, decay=0.99, dead_code_threshold=0.05).train()
    z = q.embedding[torch.arange(64) % 15] + 0.01 * torch.randn(64, 8)  # 15 codes used ~4 times, one unused
    q(z)
    before = q.embedding.clone()
    assert q.restart_dead_codes() == 1  # only the code nothing chose
    assert int((before != q.embedding).any(1).sum()) == 1
    # A checkpoint written before the update count existed loads as a warmed-up EMA.
    state = {k: v for k, v in q.state_dict().items() if k != "updates"}
    fresh = NormEMAQuantizer(16, 8, decay=0.99, dead_code_threshold=0.05)
    fresh.load_state_dict(state)
    assert int(fresh.updates) >= 1 << 30


def test_the_projected_target_is_beit_v2s(tmp_path):
    """BEiT v2 regresses ln_post(tokens) @ visual.proj; the layer's raw output (the default,
    `hidden`) is another target. `projected` computes BEiT v2's from a CLIPModel checkpoint."""
    from tessera.train.teacher import TeacherSection, load_teacher, teacher_features, teacher_width

    torch.manual_seed(0)
    clip = tessera.CLIPModel({"projection_dim": 24, "vision_config": TEACHER["config"],
                              "text_config": {**ENCODER, "max_position_embeddings": 16}})
    clip.save_pretrained(str(tmp_path))
    px = torch.randn(2, 3, 28, 28)
    section = TeacherSection(checkpoint=str(tmp_path), target="projected")
    section.validate("teacher")
    got = teacher_features(load_teacher(section), px)
    state = clip.state_dict()
    with torch.no_grad():
        tokens = tessera.CLIPVisionModel.from_pretrained(str(tmp_path))(px).last_hidden_state
        normed = torch.nn.functional.layer_norm(tokens, (48,), state["vision_model.post_layernorm.weight"],
                                                state["vision_model.post_layernorm.bias"], 1e-5)
        want = (normed @ state["visual_projection.weight"].t())[:, 1:]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert teacher_width(section) == 24 and teacher_width(TeacherSection(checkpoint=str(tmp_path))) == 48
    hidden = teacher_features(load_teacher(TeacherSection(checkpoint=str(tmp_path))), px)
    torch.testing.assert_close(hidden, tokens[:, 1:])
    for bad in (TeacherSection(config=TEACHER["config"], target="projected"),
                TeacherSection(checkpoint=str(tmp_path), target="projected", layer=-2)):
        with pytest.raises(ValueError, match="projected is BEiT v2's target"):
            bad.validate("teacher")


def test_a_vqkd_checkpoint_from_before_the_update_count_resumes(tmp_path):
    """DCP refuses a model key its checkpoint lacks: a VQ-KD run written before `updates` existed
    failed to resume ("Missing key in checkpoint state_dict: model.quantize.updates"); one written
    before `initted` resumes as initialised (its codebook is trained: k-means must not rerun)."""
    import torch.distributed.checkpoint as dcp

    from tessera.models.quantizer import NormEMAQuantizer
    from tessera.train.checkpoint import _added_since
    from tessera.train.safe_dcp import SafeLoadPlanner, safe_reader

    class Tokenizer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quantize, self.proj = NormEMAQuantizer(8, 4, kmeans_init=True), torch.nn.Linear(4, 4)

    old = {k: v for k, v in Tokenizer().state_dict().items() if not k.endswith(("updates", "initted"))}
    old["quantize.embedding"] = torch.randn(8, 4)
    dcp.save({"model": old}, checkpoint_id=str(tmp_path))
    model = Tokenizer()
    state = model.state_dict()
    reader, metadata = safe_reader(str(tmp_path))
    later = _added_since(model, state, metadata)
    dcp.load({"model": state}, storage_reader=reader, planner=SafeLoadPlanner())
    for tensor, value in later:
        tensor.fill_(value)
    assert int(model.quantize.updates) == 1 << 30 and "quantize.updates" not in state
    assert bool(model.quantize.initted) and "quantize.initted" not in state
    assert torch.equal(state["quantize.embedding"], old["quantize.embedding"])


def test_held_out_evaluation_scores_exactly_max_images():
    """Whole batches were scored until the limit was passed: max_images 40 at batch 32 scored 64."""
    r = recipe("mae", model={"config": ENCODER})
    r["data"]["batch_size"] = 32
    task = task_class("mae")(recipe_from_dict(r))
    assert [len(px) for px in task.heldout(torch.device("cpu"), 40)] == [32, 8]
    assert sum(len(px) for px in task.heldout(torch.device("cpu"), 64)) == 64


@pytest.mark.parametrize("name, config, key", [
    ("mae", {**ENCODER, "num_hiden_layers": 2}, "num_hiden_layers"),
    ("clip", {"vision_config": {"num_hiden_layers": 1}}, "num_hiden_layers"),
    ("vqkd", {"codebook_sise": 64}, "codebook_sise"),
])
def test_a_misspelt_model_config_key_is_refused_by_name(tmp_path, name, config, key):
    """model.config is the user's own text: a misspelt key trained the default-size model (768 wide,
    12 layers for MAE) without a word, and `tessera plan` planned it."""
    r = recipe(name, model={"config": config}, **({"teacher": TEACHER} if name == "vqkd" else {}))
    parsed = recipe_from_dict(r)
    with pytest.raises(ValueError, match=f"unknown key.*{key}"):
        task_class(parsed.task).model_config(parsed)
    with pytest.raises(ValueError, match=f"unknown key.*{key}"):
        fit(r, tmp_path)
