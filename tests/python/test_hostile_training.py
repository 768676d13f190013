"""Hostile input to training itself (issue 14): data that cannot fill a batch never hangs, and a
step with a non-finite loss or gradient changes no state. The other classes of hostile input
are in test_hostile_input.py."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
import torch

import tessera
from tessera.train import Task, TensorLoader, TokenLoss, recipe_from_dict, register_task
from tessera.train.conversation_data import check_sample, read_samples
from tessera.train.data_stream import batch_stream
from tessera.train.trainer import Trainer
from _tiny_llama import LLAMA


# ---- class: data that cannot fill a batch never hangs ----------------------------------------
@dataclass
class TinyData:
    samples: int = 3
    batch_size: int = 8
    nan: bool = False


@register_task("hostile_tiny")
class TinyTask(Task):
    """A linear model on `samples` rows; `nan` makes its loss non-finite; its model keeps a buffer
    that every forward changes in place (like VQ-KD's EMA codebook)."""

    sections = {"data": TinyData}

    def build_model(self):
        model = torch.nn.Linear(4, 1)
        model.register_buffer("ema", torch.zeros(4))
        model.register_forward_pre_hook(lambda m, args: m.ema.mul_(0.5).add_(args[0].mean(0)))
        return model

    def train_loader(self, rank, world_size):
        d = self.recipe.data
        x = torch.randn(d.samples, 4, generator=torch.Generator().manual_seed(0))
        if d.nan:
            x[0, 0] = float("nan")
        return TensorLoader({"x": x}, d.batch_size, rank=rank, world_size=world_size)

    def compute_loss(self, wrapped, model, batch, step):
        y = wrapped(batch["x"])
        return {"loss": TokenLoss(y.pow(2).sum(), y.numel())}


def _tiny_recipe(**data):
    return recipe_from_dict({"task": "hostile_tiny", "data": data,
                             "train": {"plots": False, "steps": 2, "checkpoint_every": 0, "log_every": 1, "threads": 1}})


def test_training_data_smaller_than_one_batch_is_an_error_naming_the_counts(tmp_path):
    recipe = _tiny_recipe(samples=3, batch_size=8)
    trainer = Trainer(recipe, TinyTask(recipe), str(tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"cannot fill one batch: 3 sample\(s\).*batch_size 8"):
        trainer.fit()


def test_a_text_file_smaller_than_one_batch_is_refused_by_the_lm_task(tmp_path):
    from tessera.text import train_sentencepiece
    from tessera.train import build_task

    train_sentencepiece([f"sample line {i} with words" for i in range(200)], str(tmp_path / "sp.model"), vocab_size=320)
    (tmp_path / "text.txt").write_text("one document\nanother one\n")
    recipe = recipe_from_dict({"task": "causal_lm", "model": {"config": {**LLAMA, "vocab_size": 320}},
                               "data": {"train": str(tmp_path / "text.txt"), "tokenizer": str(tmp_path / "sp.model"),
                                        "batch_size": 4},
                               "train": {"plots": False, "steps": 1, "checkpoint_every": 0, "threads": 1}})
    trainer = Trainer(recipe, build_task(recipe), str(tmp_path / "run"), progress=False)
    with pytest.raises(ValueError, match=r"cannot fill one batch: 2 sample\(s\)"):
        trainer.fit()


def test_an_epoch_that_yields_nothing_stops_the_stream():
    class Empty(TensorLoader):
        def __len__(self):  # a loader whose length promises batches it cannot make
            return 1

        def __iter__(self):
            return iter(())

    loader = Empty({"x": torch.zeros(2, 1)}, batch_size=1)
    with pytest.raises(RuntimeError, match="produced no batch"):
        next(batch_stream(loader))


def test_empty_conversation_data_is_refused(tmp_path):
    for name, text in (("empty.json", ""), ("list.json", "[]"), ("blank.jsonl", "\n\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=f"{name}: (the file is empty|no conversation samples)"):
            read_samples(str(tmp_path / name))
    (tmp_path / "bad.jsonl").write_bytes(b'{"conversations": []}\n\xff\xfe\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: not UTF-8 text \(byte 22"):
        read_samples(str(tmp_path / "bad.jsonl"))


def test_conversation_turns_must_alternate_starting_with_the_user():
    turns = [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}, {"from": "gpt", "value": "c"}]
    with pytest.raises(ValueError, match=r"sample 0 \(id 'x'\): turn 1: from 'human'.*alternate"):
        check_sample({"id": "x", "conversations": turns}, "d.json: sample 0")
    with pytest.raises(ValueError, match=r"the only turn is from gpt"):
        check_sample({"conversations": turns[2:]}, "d.json: sample 0")
    # The id is named once, however the caller named the sample.
    with pytest.raises(ValueError) as e:
        check_sample({"id": "x", "conversations": turns}, "d.json: sample 0 (id 'x')")
    assert str(e.value).count("'x'") == 1


def test_a_leading_gpt_turn_is_left_out_as_llava_does(tmp_path, shared_dir):
    """LLaVA's preprocess_v1 drops a first turn that is not the human's and trains the rest; it
    was refused here."""
    from tessera import chat
    from tessera.text import SentencePieceTokenizer
    from tessera.train.conversation_data import prepare_sample

    tok = SentencePieceTokenizer(str(shared_dir / "assets" / "llama2c_tokenizer.model"), special_tokens=["<image>"])
    rest = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A bag."}]
    lead = [{"from": "gpt", "value": "Hello."}] + rest
    assert check_sample({"conversations": lead}, "d.json: sample 0") == 1
    with pytest.raises(ValueError, match=r"turn 2: from 'human'.*should be the gpt turn"):
        check_sample({"conversations": lead[:2] + rest[:1]}, "d.json: sample 0")
    args = (chat.load_template("v1"), tok, tok.special_tokens["<image>"], 2, 64, str(tmp_path), False)
    assert prepare_sample({"image": "a.png", "conversations": lead}, "s", *args) == \
        prepare_sample({"image": "a.png", "conversations": rest}, "s", *args)


def test_images_outside_the_data_root_and_non_images_are_refused(tmp_path):
    from tessera.train.conversation_data import check_image_file, image_paths

    root = tmp_path / "root"
    root.mkdir()
    for path in ("../secret.png", "/etc/passwd", "a/../../x.png"):
        with pytest.raises(ValueError, match="leaves the image folder"):
            image_paths({"image": path}, str(root), "d.json: sample 2")
    assert image_paths({"image": ["a/b.png"]}, str(root)) == [str(root / "a" / "b.png")]
    (root / "notes.png").write_text("not an image at all")
    with pytest.raises(ValueError, match=r"notes.png' is not a JPEG, PNG or WebP image \(it starts with 6e 6f 74"):
        check_image_file(str(root / "notes.png"), "d.json: sample 2")


# ---- class: a step with a non-finite loss changes no state -----------------------------------
def test_non_finite_step_leaves_parameters_buffers_and_optimizer_untouched(tmp_path):
    recipe = _tiny_recipe(samples=8, batch_size=8, nan=True)
    trainer = Trainer(recipe, TinyTask(recipe), str(tmp_path), progress=False)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batch = next(iter(trainer.task.train_loader(0, 1)))
    terms, finite, _ = trainer.train_step(iter([batch]), 0)
    assert not finite
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the forward's in-place EMA was put back
    assert not trainer.optimizer.state  # no Adam moment was created


@register_task("hostile_nan_gradient")
class NaNGradientTask(TinyTask):
    """A finite loss (0) whose gradient is NaN: d sqrt(y^2) / dy at y = 0 is 0 * inf."""

    def compute_loss(self, wrapped, model, batch, step):
        y = wrapped(batch["x"]) * 0
        return {"loss": y.pow(2).sqrt().mean()}


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_a_non_finite_gradient_is_a_skipped_step(tmp_path, grad_clip):
    """Only the loss was checked: clipping scaled every gradient by NaN (or AdamW took it as it
    was) and wrote NaN into every weight; the run diverged steps later."""
    recipe = recipe_from_dict({"task": "hostile_nan_gradient", "data": {"samples": 8, "batch_size": 8},
                               "optim": {"grad_clip": grad_clip},
                               "train": {"plots": False, "steps": 1, "checkpoint_every": 0, "threads": 1}})
    trainer = Trainer(recipe, NaNGradientTask(recipe), str(tmp_path), progress=False)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batch = next(iter(trainer.task.train_loader(0, 1)))
    _, finite, _ = trainer.train_step(iter([batch]), 0)
    assert not finite and trainer.skip_reason == "non-finite gradient"
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert not trainer.optimizer.state


@register_task("hostile_nan_last")
class NaNLastStepTask(TinyTask):
    def compute_loss(self, wrapped, model, batch, step):
        out = super().compute_loss(wrapped, model, batch, step)
        if step == self.recipe.train.steps - 1:
            out["loss"] = TokenLoss(out["loss"].sum * float("nan"), out["loss"].count)
        return out


def test_a_skipped_last_step_still_saves_the_run_and_logs_what_each_step_used(tmp_path):
    """The last step's checkpoint was written only after a finite step: a run whose last step was
    skipped ended without it (and final_loss None); logged rows showed the next step's lr."""
    recipe = recipe_from_dict({"task": "hostile_nan_last", "data": {"samples": 8, "batch_size": 8},
                               "optim": {"lr": 1.0, "warmup_fraction": 0.05, "grad_clip": 0},
                               "train": {"steps": 4, "checkpoint_every": 100, "log_every": 1, "threads": 1}})
    summary = Trainer(recipe, NaNLastStepTask(recipe), str(tmp_path), progress=False).fit()
    assert os.path.isdir(tmp_path / "checkpoints" / "step-00000004")
    assert (tmp_path / "loss.png").stat().st_size > 0  # the generic task's curves, over a skipped step's row
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if r.get("skipped")] == [4]
    assert summary["final_loss"] == next(r["loss"] for r in rows if r.get("step") == 3 and "loss" in r)
    # warmup_fraction 0.05 of 4 steps is one warmup step (rounded up, as transformers): step 1 runs
    # at the peak's 1/1; then the cosine from the peak. Each row logs the rate its step used.
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs[0] == pytest.approx(1.0) and lrs[1] == pytest.approx(1.0) and lrs[2] < 1.0


VQKD_TINY = dict(encoder_config=dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=4, intermediate_size=64),
                 codebook_size=16, codebook_dim=8, teacher_dim=12)


@register_task("hostile_vqkd")
class VqkdTask(TinyTask):
    def build_model(self):
        return tessera.VQKD(VQKD_TINY).train()

    def compute_loss(self, wrapped, model, batch, step):
        return {"loss": wrapped(batch["px"], target=batch["target"]).loss}


def test_vqkd_codebook_survives_a_nan_batch(tmp_path):
    """The EMA update runs inside VQ-KD's forward; the trainer puts it back when the loss is NaN."""
    recipe = recipe_from_dict({"task": "hostile_vqkd", "train": {"plots": False, "steps": 1, "checkpoint_every": 0, "threads": 1}})
    trainer = Trainer(recipe, VqkdTask(recipe), str(tmp_path), progress=False)
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    px = torch.randn(2, 3, 16, 16)
    px[0, 0, 0, 0] = float("nan")
    _, finite, _ = trainer.train_step(iter([{"px": px, "target": torch.randn(2, 16, 12)}]), 0)
    assert not finite
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert not changed, changed
