"""What a run computes when the recipe or the run is not the plain case, against the plain case
as reference: accumulation across epoch ends equals the whole batch, an evaluation cut off by a
crash after its checkpoint runs on resume, a resume that changes the optimizer's parameter groups
is refused before training, and a changed recipe on resume does what the message says
(optimizer settings from the checkpoint, the schedule's shape from the recipe)."""
import json
import os
import shutil
import sys

import pytest
import torch

from tessera.train import Trainer, recipe_from_dict
from tessera.train.distributed import DistInfo
from tessera.train.trainer import RESUMED_SETTINGS

sys.path.insert(0, os.path.dirname(__file__))
import _toy_task  # noqa: E402  (registers toy_regression)


def _toy(data=None, optim=None, train=None):
    return {"task": "toy_regression",
            "data": {"samples": 256, "batch_size": 16, **(data or {})},
            "optim": {"lr": 0.01, "warmup_fraction": 0.2, "min_lr_ratio": 0.1, **(optim or {})},
            "train": {"plots": False, "steps": 20, "log_every": 1, "checkpoint_every": 10, "keep_checkpoints": 5, "threads": 1,
                      **(train or {})}}


def _fit(recipe, out, resume=False):
    r = recipe_from_dict(recipe)
    trainer = Trainer(r, _toy_task.ToyRegression(r), str(out), DistInfo(), progress=False)
    return trainer.fit(resume=resume), trainer.model


def _rows(out):
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _cut_after(run, step, into):
    """`run` as it stood when killed right after its step-`step` checkpoint."""
    shutil.copytree(run, into)
    for name in os.listdir(into / "checkpoints"):
        if int(name.split("-")[-1]) > step:
            shutil.rmtree(into / "checkpoints" / name)
    return into


def test_accumulated_batches_equal_the_whole_batch_when_epochs_do_not_divide(tmp_path):
    """90 samples: batch 16 gives 5 batches an epoch; 2 x 16 must draw the 64 samples batch 32
    draws, epoch after epoch (the odd batch joined the next epoch's first, shifting every step)."""
    steps = dict(steps=8, checkpoint_every=0)
    _, whole = _fit(_toy({"samples": 90, "batch_size": 32}, train=steps), tmp_path / "whole")
    _, accumulated = _fit(_toy({"samples": 90, "batch_size": 16}, {"accumulation_steps": 2}, steps), tmp_path / "acc")
    for (name, a), b in zip(whole.state_dict().items(), accumulated.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=name)
    losses = [[r["loss"] for r in _rows(tmp_path / run) if "lr" in r] for run in ("whole", "acc")]
    assert len(losses[0]) == 8 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    with pytest.raises(ValueError, match="fills 2 batch.*fewer than optim.accumulation_steps 3"):
        _fit(_toy({"samples": 40, "batch_size": 16}, {"accumulation_steps": 3}, steps), tmp_path / "few")


def test_an_evaluation_cut_off_after_its_checkpoint_runs_on_resume(tmp_path):
    recipe = _toy(train={"eval_every": 10})
    _fit(recipe, tmp_path / "full")
    evaluated = [r["step"] for r in _rows(tmp_path / "full") if "eval_mse" in r]
    assert evaluated == [10, 20]
    cut = _cut_after(tmp_path / "full", 10, tmp_path / "cut")  # killed during step 10's evaluation
    rows = [r for r in _rows(cut) if "eval_mse" not in r or r["step"] != 10]
    (cut / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _fit(recipe, cut, resume=True)
    assert [r["step"] for r in _rows(cut) if "eval_mse" in r] == [10, 20]
    done = _cut_after(tmp_path / "full", 10, tmp_path / "done")  # its evaluation finished: not run twice
    _fit(recipe, done, resume=True)
    assert [r["step"] for r in _rows(done) if "eval_mse" in r] == [10, 20]


def test_a_resume_that_changes_the_parameter_groups_is_refused_before_training(tmp_path):
    _fit(_toy(train={"steps": 10}), tmp_path)
    for optim in ({"weight_decay": 0.0}, {"lr_scales": {"proj": 10.0}}):  # merges the groups / adds one
        with pytest.raises(ValueError, match=r"the recipe's optimizer has \d parameter group\(s\), the checkpoint's 2"):
            _fit(_toy(optim=optim), tmp_path, resume=True)


def test_a_changed_recipe_on_resume_does_what_the_message_says(tmp_path, capsys):
    _fit(_toy(), tmp_path / "full")
    lrs = {r["step"]: r["lr"] for r in _rows(tmp_path / "full") if "lr" in r}
    changed_lr = _cut_after(tmp_path / "full", 10, tmp_path / "lr")
    capsys.readouterr()
    _fit(_toy(optim={"lr": 0.5}), changed_lr, resume=True)
    out = capsys.readouterr().out
    assert "optim.lr: 0.01 -> 0.5" in out and RESUMED_SETTINGS in out
    assert {r["step"]: r["lr"] for r in _rows(changed_lr) if "lr" in r} == lrs  # the checkpoint's lr stays
    flat = _cut_after(tmp_path / "full", 10, tmp_path / "flat")
    _fit(_toy(optim={"min_lr_ratio": 1.0}), flat, resume=True)  # the schedule's shape is the recipe's
    after = {r["step"]: r["lr"] for r in _rows(flat) if "lr" in r}
    assert all(after[s] == lrs[s] for s in range(1, 12)) and all(after[s] == pytest.approx(0.01) for s in range(12, 21))
    assert lrs[20] < 0.005


def test_model_config_beside_a_checkpoint_is_applied(tmp_path):
    """`model.pretrained` with `model.config` built the checkpoint's config and dropped the rest."""
    from tessera.train.clip_task import ClipTask

    from _recipes import FMNIST, tiny_recipe

    if not os.path.isdir(FMNIST):
        pytest.skip("dataset-fashion-mnist not installed")
    r = recipe_from_dict(tiny_recipe())
    ClipTask(r).build_model().save_pretrained(str(tmp_path / "start"))
    tuned = tiny_recipe()
    tuned["model"] = {"pretrained": str(tmp_path / "start"), "config": {"vision_config": {"attention_dropout": 0.1}}}
    model = ClipTask(recipe_from_dict(tuned)).build_model()
    assert model.config["vision_config"]["attention_dropout"] == 0.1
    tuned["model"]["config"] = {"vision_config": {"atention_dropout": 0.1}}
    with pytest.raises(ValueError, match="unknown key 'atention_dropout'"):
        ClipTask(recipe_from_dict(tuned)).build_model()


@pytest.mark.parametrize("name, hf_config", [
    ("CLIPModel", "CLIPConfig"), ("LlamaForCausalLM", "LlamaConfig"), ("ViTMAEForPreTraining", "ViTMAEConfig"),
    ("BeitForMaskedImageModeling", "BeitConfig"), ("LlavaForConditionalGeneration", "LlavaConfig"),
    ("Blip2ForConditionalGeneration", "Blip2Config"),
])
def test_a_whole_config_json_passes_the_key_check_and_a_typo_does_not(name, hf_config):
    """model.config keys are strict, but the keys transformers writes into every config.json
    (dtype, use_cache, transformers_version, a tower's projection_dim, ...) are not typos."""
    import json

    import tessera
    from tessera.models.pretrained import check_override_keys

    transformers = pytest.importorskip("transformers")
    kwargs = {"text_config": {"model_type": "llama"}} if hf_config == "Blip2Config" else {}
    config = json.loads(getattr(transformers, hf_config)(**kwargs).to_json_string())
    cls = getattr(tessera, name)
    check_override_keys(cls, cls.resolve_config(config), config)
    nested = next((k for k in config if k.endswith("_config")), None)
    typo = {**config, nested: {**config[nested], "num_hiden_layers": 1}} if nested else {**config, "num_hiden_layers": 1}
    with pytest.raises(ValueError, match="unknown key 'num_hiden_layers'"):
        check_override_keys(cls, cls.resolve_config(config), typo)


def test_groups_resumed_off_a_multiple_of_the_accumulation_end_with_the_epoch():
    """A resume starts a step, so a group, even at a position that is no multiple of A (A changed
    on resume, another world size, a checkpoint from before groups ended with the epoch): groups
    counted from the epoch's start spanned every later epoch end."""
    from tessera.train.loaders import TensorLoader
    from tessera.train.data_stream import batch_stream

    def groups(loader, steps):
        stream = batch_stream(loader, 2)
        return [[int(next(stream)["x"][0]) // 2 for _ in range(2)] for _ in range(steps)]

    data = {"x": torch.arange(10)}  # 5 batches of 2 an epoch
    assert groups(TensorLoader(data, batch_size=2, shuffle=False), 4) == [[0, 1], [2, 3], [0, 1], [2, 3]]
    resumed = TensorLoader(data, batch_size=2, shuffle=False)
    resumed.load_state_dict({**resumed.state_dict(), "batches": 1})
    assert groups(resumed, 4) == [[1, 2], [3, 4], [0, 1], [2, 3]]


def test_fsdp2_is_refused_for_steps_that_leave_a_module_out_unless_the_task_runs_it(tmp_path):
    """A rank that skips a sharded module skips its FSDP2 collectives, so the ranks pair them up
    wrongly (gloo aborts; NCCL hangs). Refused before any collective, naming the way out."""
    class Skipping(_toy_task.ToyRegression):
        def leaves_parameters_unused(self):
            return True

    r = recipe_from_dict(_toy(train={"strategy": "fsdp2"}))
    trainer = Trainer(r, Skipping(r), str(tmp_path), DistInfo(rank=0, world_size=2), progress=False)
    with pytest.raises(ValueError, match="train.strategy=fsdp2: .* use train.strategy=ddp"):
        trainer.setup()
    Skipping.pads_unused_under_fsdp2 = True  # LLaVA's idle image row (test_llava_task.py)
    with pytest.raises(Exception) as e:  # past the check: wrapping needs the process group
        trainer.setup()
    assert "train.strategy=fsdp2" not in str(e.value)


def test_a_task_that_rewrites_compute_loss_does_not_inherit_the_fsdp2_padding_promise():
    """SugarTask inherited LlavaTask's pads_unused_under_fsdp2 while its own compute_loss added no
    idle image row, so FSDP2 was not refused and a text-only rank aborted the run in gloo. The
    promise holds only for the compute_loss of the class that made it: not for a subclass's, a
    mixin's or an instance's own."""
    from tessera.train.llava_task import LlavaTask
    from tessera.train.sugar_task import SugarTask
    from tessera.train.tasks import pads_unused

    class Own(LlavaTask):
        def compute_loss(self, wrapped, model, batch, step):
            return super().compute_loss(wrapped, model, batch, step)

    class Kept(LlavaTask):
        pass

    class Mixin:
        def compute_loss(self, wrapped, model, batch, step):
            return {}

    class Mixed(Mixin, LlavaTask):
        pass

    def made(cls):
        return object.__new__(cls)  # the rule reads classes only: no data needed

    assert pads_unused(made(LlavaTask)) and pads_unused(made(Kept)) and pads_unused(made(SugarTask))
    assert not pads_unused(made(Own)) and not pads_unused(made(Mixed))
    patched = made(Kept)
    patched.compute_loss = lambda *a: {}
    assert not pads_unused(patched)


def test_every_loss_that_couples_a_batch_says_so_under_accumulation():
    """Only CLIP warned that accumulated micro-batches are separate batches; BLIP-2's ITC/ITM and
    Sugar's L_d are coupled the same way (and `tessera plan` split their batches freely)."""
    from tessera.train.blip2_task import Blip2PretrainTask
    from tessera.train.clip_task import ClipTask
    from tessera.train.sugar_task import SugarTask

    assert all(t.batch_coupled for t in (ClipTask, Blip2PretrainTask, SugarTask))
    assert not _toy_task.ToyRegression.batch_coupled

    class Coupled(_toy_task.ToyRegression):
        batch_coupled = "the toy loss compares rows"

    r = recipe_from_dict(_toy(optim={"accumulation_steps": 2}))
    with pytest.warns(UserWarning, match=r"optim.accumulation_steps 2: the toy loss compares rows, so each "
                                         r"micro-batch of \d+ is its own batch"):
        Coupled(r)


class _NanOnce(_toy_task.ToyRegression):
    """A NaN loss on the first micro-batch of the third step (`step` counts from 0)."""

    def compute_loss(self, wrapped, model, batch, step):
        out = super().compute_loss(wrapped, model, batch, step)
        if step == 2:
            from tessera.train.tasks import TokenLoss

            out["loss"] = TokenLoss(out["loss"].sum * float("nan"), out["loss"].count)
        return out


def test_a_skipped_step_still_takes_its_micro_batches_so_a_resume_is_exact(tmp_path):
    """A non-finite first micro-batch ended the step without drawing the second: the loader's
    position left the multiple of A, and a resume from a later checkpoint drew the next epoch's
    groups from other boundaries (its losses parted from the uninterrupted run's at step 17)."""
    recipe = _toy({"samples": 256, "batch_size": 8}, {"accumulation_steps": 2, "warmup_fraction": 0.0},
                  {"steps": 24, "checkpoint_every": 4, "keep_checkpoints": 10})

    def fit(out, resume=False):
        r = recipe_from_dict(recipe)
        return Trainer(r, _NanOnce(r), str(out), DistInfo(), progress=False).fit(resume=resume)

    fit(tmp_path / "whole")
    fit(_cut_after(tmp_path / "whole", 4, tmp_path / "resumed"), resume=True)
    whole, resumed = ([(r["step"], r.get("loss")) for r in _rows(tmp_path / d) if "lr" in r or "skipped" in r]
                      for d in ("whole", "resumed"))
    assert [s for s, loss in whole if loss is None] == [3]  # the skipped step, before the resumed checkpoint
    assert len(whole) == 24 and resumed == whole


def test_a_resume_that_moves_parameters_between_groups_is_refused(tmp_path):
    """lr_scales moved from the text tower to the vision tower keeps 4 groups, so the count check
    passed: groups came back by parameter name and base LRs by position, and a layer's weight and
    bias trained at different scales."""
    from _recipes import FMNIST, tiny_recipe
    from tessera.train.clip_task import ClipTask

    if not os.path.isdir(FMNIST):
        pytest.skip("dataset-fashion-mnist not installed")

    def fit(scales, resume=False):
        r = tiny_recipe(steps=4, checkpoint_every=2)
        r["optim"]["lr_scales"] = scales
        r["eval"] = {"zero_shot": False}
        r = recipe_from_dict(r)
        return Trainer(r, ClipTask(r), str(tmp_path), DistInfo(), progress=False).fit(resume=resume)

    fit({"text_model": 10.0})
    with pytest.raises(ValueError, match=r"parameter '\w+_model\..*' \(\d+ in all\) was trained in optimizer group \d, "
                                         r"the recipe puts it in group \d: optim.lr_scales"):
        fit({"vision_model": 10.0}, resume=True)
    assert fit({"text_model": 10.0}, resume=True)["train_steps"] == 4  # the same recipe resumes


class _InfGradOnce(_toy_task.ToyRegression):
    """A finite loss whose gradient for proj.weight is infinite (sqrt at 0), at the third step."""

    def compute_loss(self, wrapped, model, batch, step):
        out = super().compute_loss(wrapped, model, batch, step)
        if step == 2:
            from tessera.train.tasks import TokenLoss

            w = model.proj.weight
            out["loss"] = TokenLoss(out["loss"].sum + (w.sum() - w.sum().detach()).sqrt(), out["loss"].count)
        return out


@pytest.mark.parametrize("in_backward", [False, True])
def test_an_infinite_gradient_moves_no_weight_to_nan_even_stepping_inside_backward(tmp_path, in_backward):
    """optim.in_backward stepped each parameter as its gradient arrived, inf included: the weights
    went NaN, every later step diverged, and so did every resume."""
    r = recipe_from_dict(_toy(optim={"in_backward": in_backward, "grad_clip": 0.0},
                              train={"steps": 6, "checkpoint_every": 0}))
    trainer = Trainer(r, _InfGradOnce(r), str(tmp_path), DistInfo(), progress=False)
    summary = trainer.fit()
    skipped = [row for row in _rows(tmp_path) if row.get("skipped")]
    assert [row["step"] for row in skipped] == [3] and summary["skipped_steps"] == 1
    assert skipped[0]["reason"].startswith("non-finite gradient")
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())
    assert summary["final_loss"] == summary["final_loss"] and summary["train_steps"] == 6


def test_a_run_gives_back_the_thread_count_it_found(tmp_path):
    """train.threads set torch's thread count for good: a notebook ran single-threaded after fit()."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _fit(_toy(train={"steps": 2, "checkpoint_every": 0, "threads": 1}), tmp_path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
