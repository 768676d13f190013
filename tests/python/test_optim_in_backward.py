"""`optim.in_backward`: AdamW applied inside backward, one parameter at a time, makes the same
update as `torch.optim.AdamW` after backward (with the LR schedule), never holds every gradient,
trains and resumes bit-exactly through the trainer and DCP, and refuses what needs every gradient
at once (global-norm clipping, accumulation, DDP). FSDP2 on 2 ranks: test_train_distributed.py."""
import copy
import json
import os
import sys

import pytest
import torch

import tessera
from tessera.train import TokenLoss, Trainer, recipe_from_dict
from tessera.train.clip_task import ClipTask
from tessera.train.config import OptimConfig
from tessera.train.distributed import DistInfo
from tessera.train.optim import build_optimizer, param_groups, warmup_cosine
from tessera.train.optim_in_backward import OptimizerInBackward

sys.path.insert(0, os.path.dirname(__file__))
import _toy_task  # noqa: E402,F401  (registers toy_regression)
from _recipes import FMNIST, tiny_recipe  # noqa: E402

needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="dataset-fashion-mnist not installed")


def _clip(seed=0):
    torch.manual_seed(seed)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    return tessera.CLIPModel({"projection_dim": 16, "text_config": {**tower, "max_position_embeddings": 8},
                              "vision_config": {**tower, "image_size": 16, "patch_size": 8}})


def _loss(model, step):
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(0, 100, (4, 8), generator=g)
    pixels = torch.randn(4, 3, 16, 16, generator=g)
    return model(input_ids=ids, pixel_values=pixels, return_loss=True).loss


def test_same_update_as_adamw_after_backward_and_one_gradient_at_a_time():
    cfg = OptimConfig(lr=3e-3, weight_decay=0.1, grad_clip=0.0, lr_scales={"vision_model": 0.5})
    ref, fused = _clip(), _clip()
    ref_opt = build_optimizer(param_groups(ref, cfg), cfg)
    inside = OptimConfig(**{**cfg.__dict__, "in_backward": True})
    opt = build_optimizer(param_groups(fused, inside), inside)
    assert isinstance(opt, OptimizerInBackward)
    ref_sched, sched = warmup_cosine(ref_opt, 5, 2), warmup_cosine(opt, 5, 2)

    params = [p for p in fused.parameters() if p.requires_grad]
    held = []  # gradients alive whenever one arrives; runs after the optimizer's own hook
    for p in params:
        p.register_post_accumulate_grad_hook(lambda _: held.append(sum(q.grad is not None for q in params)))
    for step in range(5):
        _loss(ref, step).backward()
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)
        ref_sched.step()
        _loss(fused, step).backward()
        opt.step()  # nothing left to update: every gradient was used and freed in backward
        sched.step()
        assert all(p.grad is None for p in params)
    assert held and max(held) == 0, max(held)  # each freed as soon as it was used
    start = dict(_clip().named_parameters())
    for (name, a), b in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-7, msg=name)
        assert not torch.equal(b, start[name]), f"{name} did not change"
    # The state a checkpoint holds is AdamW's: same keys and moments per parameter.
    a, b = ref_opt.state_dict()["state"], opt.state_dict()["state"]
    assert len(b) == len(params)
    for pa, pb in zip(ref.parameters(), fused.parameters()):
        sa, sb = ref_opt.state[pa], opt.state[pb]
        assert sa.keys() == sb.keys()
        torch.testing.assert_close(sb["exp_avg_sq"], sa["exp_avg_sq"], rtol=0, atol=1e-9)
    assert a.keys() == b.keys()
    assert opt.state_dict()["param_groups"] == ref_opt.state_dict()["param_groups"]  # same groups, same LRs


def test_checkpoints_load_across_both_ways_of_stepping():
    """The state_dict has the plain optimizer's layout, so a state written by one loads into the
    other and training continues with the same update."""
    cfg = OptimConfig(lr=1e-2, grad_clip=0.0)
    inside = OptimConfig(**{**cfg.__dict__, "in_backward": True})
    for written, read in ((cfg, inside), (inside, cfg)):
        model = _clip()
        opt = build_optimizer(param_groups(model, written), written)
        for step in range(2):
            _loss(model, step).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
        runs = []
        for how in (written, read):
            other = _clip(seed=1)
            other.load_state_dict(saved_model)
            other_opt = build_optimizer(param_groups(other, how), how)
            other_opt.load_state_dict(copy.deepcopy(saved_opt))
            _loss(other, 2).backward()
            other_opt.step()
            runs.append(other)
        for (name, a), b in zip(runs[0].named_parameters(), runs[1].parameters()):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-7, msg=name)


def _toy(tmp_path, **optim):
    recipe = recipe_from_dict({"task": "toy_regression", "data": {"samples": 256, "batch_size": 16},
                               "optim": {"lr": 0.05, "warmup_fraction": 0.2, "weight_decay": 0.01, "grad_clip": 0.0,
                                         **optim},
                               "train": {"plots": False, "steps": 12, "log_every": 4, "checkpoint_every": 0, "threads": 1}})
    trainer = Trainer(recipe, _toy_task.ToyRegression(recipe), str(tmp_path), DistInfo(), progress=False)
    summary = trainer.fit()
    return summary, trainer.model


def test_token_loss_run_equals_the_step_after_backward(tmp_path):
    """The toy task's loss is a TokenLoss, which the trainer normally rescales after backward."""
    plain_summary, plain = _toy(tmp_path / "plain")
    summary, fused = _toy(tmp_path / "fused", in_backward=True)
    for (name, a), b in zip(plain.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)
    assert summary["final_loss"] == pytest.approx(plain_summary["final_loss"], rel=1e-5)
    assert summary["final_loss"] < summary["first_loss"], summary
    rows = [[json.loads(line) for line in open(tmp_path / run / "metrics.jsonl")] for run in ("plain", "fused")]
    assert [sorted(r) for r in rows[0]] == [sorted(r) for r in rows[1]]  # an LR per group, not per parameter
    lrs = [[r["lr_1"] for r in run if "lr" in r] for run in rows]
    assert lrs[0] and lrs[0] == lrs[1]


@needs_fmnist
def test_clip_recipe_trains_and_resumes_bit_exactly(tmp_path):
    recipe = tiny_recipe(steps=8, checkpoint_every=4)
    recipe["optim"].update(in_backward=True, grad_clip=0.0)
    recipe["eval"]["max_images"] = 64

    def fit(out, resume=False, task_cls=ClipTask):
        r = recipe_from_dict(recipe)
        trainer = Trainer(r, task_cls(r), str(out), DistInfo(), progress=False)
        return trainer.fit(resume=resume), trainer.model

    plain_recipe = tiny_recipe(steps=8, checkpoint_every=0)
    plain_recipe["optim"].update(grad_clip=0.0)
    plain_recipe["eval"]["max_images"] = 64
    r = recipe_from_dict(plain_recipe)
    plain = Trainer(r, ClipTask(r), str(tmp_path / "plain"), DistInfo(), progress=False)
    plain.fit()
    start = Trainer(r, ClipTask(r), str(tmp_path / "start"), DistInfo(), progress=False)
    start.setup()

    _, full = fit(tmp_path / "full")
    for (name, a), b, s in zip(plain.model.named_parameters(), full.parameters(), start.model.parameters()):
        if a.requires_grad:
            assert not torch.equal(b, s), f"{name} did not change"
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)

    class Crash(ClipTask):
        def compute_loss(self, wrapped, model, batch, step):
            if step == 6:
                raise KeyboardInterrupt
            return super().compute_loss(wrapped, model, batch, step)

    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "cut", task_cls=Crash)
    _, resumed = fit(tmp_path / "cut", resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]

    # A run checkpointed stepping after backward resumes stepping inside it (and the DCP shards agree).
    plain_recipe["train"]["checkpoint_every"] = 4
    r = recipe_from_dict(plain_recipe)
    with pytest.raises(KeyboardInterrupt):
        Trainer(r, Crash(r), str(tmp_path / "switch"), DistInfo(), progress=False).fit()
    _, switched = fit(tmp_path / "switch", resume=True)
    for (name, x), y in zip(full.named_parameters(), switched.parameters()):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("optim, message", [
    ({}, r"optim.in_backward needs grad_clip: 0 .*got grad_clip 1.0"),
    ({"grad_clip": 0.0, "accumulation_steps": 2}, r"optim.in_backward needs accumulation_steps: 1.*got 2"),
])
def test_what_needs_every_gradient_is_refused(optim, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_dict({"task": "toy_regression", "optim": {"in_backward": True, **optim}})


def test_ddp_is_refused(tmp_path):
    recipe = recipe_from_dict({"task": "toy_regression", "optim": {"in_backward": True, "grad_clip": 0.0},
                               "train": {"plots": False, "strategy": "ddp"}})
    trainer = Trainer(recipe, _toy_task.ToyRegression(recipe), str(tmp_path), DistInfo(world_size=2), progress=False)
    with pytest.raises(ValueError, match="optim.in_backward on 2 processes needs train.strategy: fsdp2 .ddp"):
        trainer.setup()


@needs_fmnist
def test_blip2_stage1_mixed_loss_and_three_forwards_per_step(tmp_path):
    """BLIP-2 stage 1: a MixedLoss (ITG tokens plus ITC and ITM means) over three Q-Former passes
    a step, one backward: each parameter is stepped once, as after backward."""
    from tessera.train import build_task

    from _recipes import blip2_recipe

    def run(out, **optim):
        values = blip2_recipe("ddp", 16)
        values["optim"].update(grad_clip=0.0, **optim)
        values["train"]["checkpoint_every"] = 0
        r = recipe_from_dict(values)
        trainer = Trainer(r, build_task(r), str(out), DistInfo(), progress=False)
        trainer.fit()
        return trainer.model, [json.loads(line) for line in open(out / "metrics.jsonl") if '"itc"' in line]

    plain, plain_rows = run(tmp_path / "plain")
    inside, rows = run(tmp_path / "inside", in_backward=True)
    for key in ("loss", "itc", "itm", "itg"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in plain_rows], rel=1e-5), key
    for (name, a), b in zip(plain.named_parameters(), inside.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("in_backward", [False, True])
def test_a_step_without_tokens_is_refused_either_way(tmp_path, in_backward):
    class NoTokens(_toy_task.ToyRegression):
        def compute_loss(self, wrapped, model, batch, step):
            return {"loss": TokenLoss(wrapped(batch["x"]).sum() * 0, 0)}

    recipe = recipe_from_dict({"task": "toy_regression", "optim": {"grad_clip": 0.0, "in_backward": in_backward},
                               "train": {"plots": False, "steps": 2, "checkpoint_every": 0, "threads": 1}})
    trainer = Trainer(recipe, NoTokens(recipe), str(tmp_path), DistInfo(), progress=False)
    with pytest.raises(ValueError, match="step 0: the TokenLoss count over the whole step is 0.0; no item to average"):
        trainer.fit()
