"""Tasks: a task defined outside tessera trains through `tessera train` unchanged; token-weighted
accumulation gives the whole batch's gradient; a forward around the wrapper is caught; parameter
groups (no decay, layer-wise LR decay, per-module LR)."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from tessera.train import Trainer, recipe_from_dict
from tessera.train.distributed import DistInfo
from tessera.train.optim import param_groups

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import _toy_task  # noqa: E402  (registers toy_regression)

TOY = {"task": "toy_regression", "data": {"samples": 256, "batch_size": 16},
       "optim": {"lr": 0.05, "warmup_fraction": 0.0, "weight_decay": 0.0},
       "train": {"plots": False, "steps": 60, "log_every": 10, "checkpoint_every": 30, "threads": 1}}


def test_outside_task_trains_through_the_cli(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(TOY))
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "tessera.cli", "train", str(path), "--import", "_toy_task",
                          "--out", str(tmp_path / "run"), "--quiet"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["final_loss"] < 0.2 * summary["first_loss"], summary
    assert summary["eval_mse"] < 0.2 * summary["first_loss"], summary
    assert (tmp_path / "run" / "checkpoints" / "step-00000060" / "model.safetensors").exists()
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert all(r["tokens"] > 16 for r in rows if "tokens" in r)  # counts, not samples

    ev = subprocess.run([sys.executable, "-m", "tessera.cli", "eval", str(tmp_path / "run" / "checkpoints" / "step-00000060"),
                         "--recipe", str(path), "--import", "_toy_task"], env=env, capture_output=True, text=True,
                        timeout=120)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["eval_mse"] == pytest.approx(summary["eval_mse"], rel=1e-5)

    unknown = subprocess.run([sys.executable, "-m", "tessera.cli", "train", str(path), "--out", str(tmp_path / "x")],
                             env=env, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "unknown task 'toy_regression'" in unknown.stderr and "--import" in unknown.stderr


def test_tessera_tasks_are_found_by_their_file_names():
    """`train/<name>_task.py` is imported when a recipe names `<name>`, and only then; listing
    imports every one."""
    code = ("import json, sys; from tessera.train.tasks import task_class, list_tasks; task_class('mae'); "
            "print(json.dumps(sorted(m for m in sys.modules if m.endswith('_task')))); print(json.dumps(list_tasks()))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    imported, tasks = map(json.loads, run.stdout.splitlines()[-2:])
    assert imported == ["tessera.train.image_task", "tessera.train.mae_task"]
    assert {"beit", "causal_lm", "clip", "llava", "mae", "mim_features", "vqkd"} <= set(tasks)


def _trainer(tmp_path, accumulation: int, task_cls=_toy_task.ToyRegression):
    recipe = recipe_from_dict({**TOY, "optim": {**TOY["optim"], "accumulation_steps": accumulation}})
    trainer = Trainer(recipe, task_cls(recipe), str(tmp_path), DistInfo(), progress=False)
    trainer.setup()
    return trainer


def _micro_batches():
    t = _toy_task.toy_tensors(16, 6, 8, seed=3)
    # Four micro-batches of 4 rows with different numbers of valid tokens.
    counts = [int(t["mask"][i:i + 4].sum()) for i in range(0, 16, 4)]
    assert len(set(counts)) > 1, counts
    return t, [{k: v[i:i + 4] for k, v in t.items()} for i in range(0, 16, 4)]


def test_token_weighted_accumulation_gives_the_whole_batch_gradient(tmp_path):
    whole, micro = _micro_batches()
    trainer = _trainer(tmp_path, accumulation=4)
    terms, finite, samples = trainer.accumulate(iter(micro), step=0)
    assert finite and samples == 16 and terms["tokens"] == int(whole["mask"].sum())
    got = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}

    model = trainer.model
    model.zero_grad()
    err = (model(whole["x"]) - whole["y"]).pow(2).sum(-1)[whole["mask"]]
    err.mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-5, atol=1e-6, msg=n)
    assert terms["loss"] == pytest.approx(float(err.detach().mean()), rel=1e-6)

    # The mean of per-micro-batch means (what averaging losses would do) is a different gradient.
    model.zero_grad()
    sum(((model(b["x"]) - b["y"]).pow(2).sum(-1)[b["mask"]].mean() / 4) for b in micro).backward()
    assert not torch.allclose(model.proj.weight.grad, got["proj.weight"], rtol=1e-3)


class _ToyMixed(_toy_task.ToyRegression):
    """A token loss plus 0.7 x a mean term (BLIP-2 stage 1's ITG + ITC/ITM, Sugar's L_g + alpha L_d)."""

    def count_tokens(self, batch, step):
        return int(batch["mask"].sum())

    def compute_loss(self, wrapped, model, batch, step):
        from tessera.train import MixedLoss, TokenLoss

        out = wrapped(batch["x"])
        err = (out - batch["y"]).pow(2).sum(-1)[batch["mask"]]
        return {"loss": MixedLoss(TokenLoss(err.sum(), err.numel()), {"aux": (0.7, out.pow(2).mean())})}


def test_mixed_loss_accumulation_is_the_token_mean_plus_the_mean_of_micro_batch_terms(tmp_path):
    """The step's gradient: the whole batch's token mean (each token weighs the same), plus the
    weighted mean over micro-batches of each micro-batch's mean term."""
    whole, micro = _micro_batches()
    trainer = _trainer(tmp_path, accumulation=4, task_cls=_ToyMixed)
    terms, finite, samples = trainer.accumulate(iter(micro), step=0)
    got = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    model = trainer.model
    model.zero_grad()
    err = (model(whole["x"]) - whole["y"]).pow(2).sum(-1)[whole["mask"]]
    want = err.mean() + 0.7 * sum(model(b["x"]).pow(2).mean() for b in micro) / 4
    want.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-5, atol=1e-6, msg=n)
    assert terms["loss"] == pytest.approx(float(want.detach()), rel=1e-6)


def test_forward_around_the_wrapper_is_an_error(tmp_path):
    class Bypass(_toy_task.ToyRegression):
        def compute_loss(self, wrapped, model, batch, step):
            err = (model(batch["x"]) - batch["y"]).pow(2).sum(-1)
            return {"loss": err.mean()}

    _, micro = _micro_batches()
    trainer = _trainer(tmp_path, accumulation=1, task_cls=Bypass)
    with pytest.raises(RuntimeError, match="called the wrapped model 0 times.*exactly once"):
        trainer.accumulate(iter(micro), step=0)


def test_param_groups_decay_layer_decay_and_module_lr():
    import tessera
    from tessera.train.config import OptimConfig

    model = tessera.CLIPModel({"projection_dim": 8,
                               "text_config": {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
                                               "num_attention_heads": 2, "max_position_embeddings": 8},
                               "vision_config": {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
                                                 "num_attention_heads": 2, "image_size": 8, "patch_size": 4}})
    cfg = OptimConfig(lr=1.0, weight_decay=0.1, layer_decay=0.5, lr_scales={"visual_projection": 10.0})
    groups = param_groups(model, cfg, num_layers=2)
    names = {id(p): n for n, p in model.named_parameters()}
    where = {names[id(p)]: g for g in groups for p in g["params"]}
    assert len(where) == len(names)
    assert where["text_model.embeddings.token_embedding.weight"]["weight_decay"] == 0.0
    assert where["vision_model.encoder.layers.0.layer_norm1.weight"]["weight_decay"] == 0.0
    assert where["vision_model.encoder.layers.0.mlp.fc1.bias"]["weight_decay"] == 0.0
    assert where["logit_scale"]["weight_decay"] == 0.0
    assert where["vision_model.encoder.layers.0.mlp.fc1.weight"]["weight_decay"] == 0.1
    assert where["vision_model.embeddings.patch_embedding.weight"]["weight_decay"] == 0.1  # a projection
    assert where["vision_model.embeddings.position_embedding.weight"]["weight_decay"] == 0.0
    # BEiT's rule: lr * decay ** (layers + 1 - layer_id); embeddings id 0, layer i id i + 1.
    assert where["vision_model.embeddings.patch_embedding.weight"]["lr"] == pytest.approx(0.5 ** 3)
    assert where["vision_model.encoder.layers.0.mlp.fc1.weight"]["lr"] == pytest.approx(0.5 ** 2)
    assert where["vision_model.encoder.layers.1.mlp.fc1.weight"]["lr"] == pytest.approx(0.5)
    assert where["visual_projection.weight"]["lr"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="no parameter name starts with visual_proj_typo"):
        param_groups(model, OptimConfig(lr_scales={"visual_proj_typo": 2.0}), num_layers=2)


def test_checkpointing_a_model_without_support_is_a_clear_error(tmp_path):
    recipe = recipe_from_dict({**TOY, "model": {"gradient_checkpointing": True}})
    trainer = Trainer(recipe, _toy_task.ToyRegression(recipe), str(tmp_path), DistInfo(), progress=False)
    with pytest.raises(ValueError, match="ToyModel has no set_gradient_checkpointing"):
        trainer.setup()


def test_end_of_run_summary_prints_every_task_metric():
    """The CLI's closing lines show what the task's final evaluation reported, not CLIP's keys only."""
    from tessera.cli import _format_summary

    text = _format_summary({"train_steps": 300, "first_loss": 1.01, "final_loss": 0.08, "world_size": 1,
                            "strategy": "single", "eval_rec_loss": 0.0833, "codes_used": 0.98, "perplexity": 196.5,
                            "note": "text is left out", "seconds": 70.7}, "runs/x")
    rows = [line.split()[0] for line in text.splitlines()[2:]]
    assert rows == ["train_steps", "first_loss", "final_loss", "eval_rec_loss", "codes_used", "perplexity", "seconds"]
    assert "codes_used           0.9800" in text


def test_yaml_reads_exponents_as_numbers_and_refuses_a_key_given_twice(tmp_path):
    """YAML 1.1 read 1e-06 as text (the README's own `--set optim.lr=5e-4` was refused), and
    safe_load kept the last of two equal keys silently (a second `optim:` dropped the first's lr).
    A run's recipe.json (JSON) loads as it was written; a quoted number is named with a hint."""
    from tessera.train import load_recipe

    recipe = tmp_path / "r.yaml"
    data = '"data": {"train": "t.txt", "tokenizer": "t.model"}'
    recipe.write_text("{task: causal_lm, " + data + ", optim: {eps: 1e-06, lr: 5E-4}}\n")
    loaded = load_recipe(str(recipe), ["optim.weight_decay=1e-2", "optim.grad_clip=2"])
    assert (loaded.optim.eps, loaded.optim.lr, loaded.optim.weight_decay, loaded.optim.grad_clip) == (1e-06, 5e-4, 0.01, 2)
    (tmp_path / "recipe.json").write_text('{"task": "causal_lm", ' + data + ', "optim": {"eps": 1e-06}}')
    assert load_recipe(str(tmp_path / "recipe.json"), []).optim.eps == 1e-06
    with pytest.raises(ValueError, match=r"optim.eps: expected a number, got '1e-06' .*without quotes"):
        load_recipe(str(recipe), ["optim.eps='1e-06'"])
    for text, key, lines in (("task: causal_lm\noptim:\n  lr: 0.5\noptim:\n  weight_decay: 0.0\n", "optim", "2 and 4"),
                             ("task: causal_lm\noptim:\n  lr: 0.5\n  lr: 0.1\n", "lr", "3 and 4")):
        recipe.write_text(text)
        with pytest.raises(ValueError, match=rf"invalid YAML: key '{key}' is given twice in one mapping \(lines {lines}\)"):
            load_recipe(str(recipe))
    recipe.write_text("task: causal_lm\n" + "data: {train: t.txt, tokenizer: t.model}\n"
                      "optim: {<<: {lr: 0.1, eps: 1.0e-8}, lr: 0.5}\n")  # a merge's key may be overridden
    assert load_recipe(str(recipe)).optim.lr == 0.5


def test_aliases_that_would_expand_a_recipe_without_end_are_refused(tmp_path):
    """Nested aliases (400 bytes, "billion laughs") loaded in milliseconds, then stalled the run for
    hours as the recipe was written out, each alias copied; one naming its own node never ended.
    Aliases as recipes use them (a shared section, a merge) still read."""
    from tessera.train import load_recipe
    from tessera.train.config import recipe_to_dict

    recipe, head = tmp_path / "r.yaml", "task: clip\nmodel:\n  config:\n    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    recipe.write_text(head + "".join(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)))
    with pytest.raises(ValueError, match=r"r.yaml: invalid YAML: it holds more than 200000 values once its aliases are copied out"):
        load_recipe(str(recipe))
    recipe.write_text("task: clip\nmodel:\n  config: &c {a: [1, *c]}\n")
    with pytest.raises(ValueError, match=r"an alias refers to the node that holds it"):
        load_recipe(str(recipe))
    recipe.write_text(head + "    a1: &a1 [*a0, *a0]\n    a2: {<<: {b: *a1}, c: *a1}\n")
    config = recipe_to_dict(load_recipe(str(recipe)))["model"]["config"]
    assert config["a2"] == {"b": [["x"] * 10] * 2, "c": [["x"] * 10] * 2}


def test_recipes_read_yaml_12_scalars_and_name_what_they_cannot_read(tmp_path):
    """YAML 1.1 (PyYAML) read 010 as 8, 1:30 as 90 and yes/on as true, took -.5 for text and failed
    on `._`; a --set value that was not YAML, an empty file or a numeric section ended in a traceback."""
    from tessera.train import load_recipe
    from tessera.train.recipe_yaml import load_yaml

    assert load_yaml("a: 010\nb: 1:30\nc: yes\nd: on\ne: -.5\nf: +.5e-3\ng: ._\nh: 0x1F\ni: 0o17\nj: 1_000\nk: TRUE") == \
        {"a": 10, "b": "1:30", "c": "yes", "d": "on", "e": -0.5, "f": 0.0005, "g": "._", "h": 31, "i": 15, "j": 1000,
         "k": True}
    with pytest.raises(Exception, match="key 'x' is given twice"):
        load_yaml("m: {<<: {x: 1, x: 2}}")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: causal_lm\ndata: {train: t.txt, tokenizer: t.model}\n")
    with pytest.raises(ValueError, match=r"override 'optim.lr=\[1': its value is not valid YAML"):
        load_recipe(str(recipe), ["optim.lr=[1"])
    for text, message in (("", "the recipe is empty"), ("# nothing\n", "the recipe is empty"),
                          ("1: x\ntask: causal_lm\n", "unknown section"), ("a:" + " [" * 5000, "nested too deeply|invalid YAML")):
        recipe.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_recipe(str(recipe))
