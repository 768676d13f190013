"""Evaluation and its reports with degenerate or careless input: labels of another shape, empty or
mismatched retrieval inputs, eval flags the chosen evaluation does not read, recipe integers past
int64, a metrics log with lines that are no rows. Each was a wrong number, a bare traceback, or a
flag ignored without a word."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tessera.cli import main as cli
from tessera.eval import recall_at_k, zero_shot_evaluate
from tessera.eval.retrieval import embed_pairs


def _zero_shot(labels):
    classes = F.normalize(torch.eye(3, 8), dim=-1)
    feats = classes[torch.tensor([0, 1, 2, 0])]
    return zero_shot_evaluate(None, [{"pixel_values": torch.zeros(4), "labels": labels}], classes,
                              image_features=lambda px: feats)


def test_zero_shot_labels_are_one_per_image():
    """Labels shaped [B, 1] counted every image B times: top-5 accuracy 4.0 over 4 images."""
    assert _zero_shot(torch.tensor([0, 1, 2, 0]))["zero_shot_top1"] == 1.0
    with pytest.raises(ValueError, match=r"zero-shot: a batch's labels must be one per image \(\[4\]\), got shape "
                                         r"\[4, 1\]"):
        _zero_shot(torch.tensor([[0], [1], [2], [0]]))
    with pytest.raises(ValueError, match="got shape \\[3\\]"):
        _zero_shot(torch.tensor([0, 1, 2]))


def test_retrieval_inputs_that_do_not_pair_up_are_named():
    e = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    caps = ["a", "b", "c"]
    assert recall_at_k(e, e, caps, ks=(1,))["image_to_text_R@1"] == 1.0
    assert recall_at_k(e, e, caps, ks=[np.int64(1)])["text_to_image_R@1"] == 1.0  # numpy's integers too
    for args, kwargs, message in (((e, e[:2], caps), {}, "one row per pair .*'text_embeds': 2"),
                                  ((e, e, caps), {"image_ids": [0, 1]}, "'image_ids': 2"),
                                  ((e, e, caps), {"ks": ()}, "ks must be integers >= 1, got \\[\\]"),
                                  ((e, e, caps), {"ks": (0,)}, "got \\[0\\]"),  # R@0 read 0.0
                                  ((e, e, caps), {"ks": (-1, 5)}, "got \\[-1, 5\\]")):
        with pytest.raises(ValueError, match=message):
            recall_at_k(*args, **kwargs)
    with pytest.raises(ValueError, match="retrieval: image-caption pairs: no items to score"):
        embed_pairs(torch.nn.Linear(1, 1), [], tokenizer=None)  # was torch.cat's "expected a non-empty list"


@pytest.mark.parametrize("argv, message", [
    (["--probe", "--dtype", "int8"], "eval --probe reads the encoder alone: --dtype go with a recipe's evaluation"),
    (["--probe", "--captioning", "x.json", "--set", "eval.batch_size=2"], "--captioning, --set go with"),
    (["--data", "/tmp"], "--data go with --probe"),
    (["--probe-train", "5"], "--probe-train go with --probe"),
    (["--split", "val"], "--split go with a split file"),
    (["--recipe", ""], "--recipe: an empty value"),
    (["--probe", "--data", ""], "--data: an empty value"),
])
def test_eval_flags_the_evaluation_does_not_read_are_refused(tmp_path, capsys, argv, message):
    """`eval --probe --dtype int8` printed fp32 probe numbers; `--split` without a split file
    evaluated the recipe's data; `--recipe ""` fell back to the checkpoint's own."""
    assert cli(["eval", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_recipe_integers_past_int64_are_named(tmp_path):
    """`--set train.seed=<24 digits>` failed in C++ ("Overflow when unpacking long long") after the
    run folder was made."""
    from tessera.train import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: causal_lm\ndata: {train: t.txt, tokenizer: t.model}\n")
    with pytest.raises(ValueError, match=r"train.seed 99999999999999999999999 does not fit in int64"):
        load_recipe(str(recipe), ["train.seed=99999999999999999999999"])


def test_a_metrics_log_with_lines_that_are_no_rows_still_plots(tmp_path):
    """A torn or hand-edited line failed the plots with a bare JSONDecodeError at the end of a
    finished run (and left its trackers unclosed); a row with a loss and no lr failed with KeyError."""
    from tessera.viz import plot_training_curves, read_metrics

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0, "lr": 0.1}\n{"step": 2, "lo\n7\n{"step": 3, "loss": 1.5}\n{"loss": 1}\n')
    with pytest.warns(UserWarning) as said:
        rows = read_metrics(str(log))
    assert [r["step"] for r in rows] == [1, 3]
    assert [str(w.message).split(": ", 1)[1][:9] for w in said] == ["line 2 is", "line 3 is", "line 5 is"]
    assert plot_training_curves(rows, str(tmp_path / "loss.png")) == str(tmp_path / "loss.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "metrics.jsonl"]
