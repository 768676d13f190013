"""Evaluation: recall@K against a hand-worked example, zero-shot top-k against a plain loop,
and the `tessera eval` / `tessera info` commands."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml

from tessera.eval import recall_at_k, zero_shot_evaluate


def test_recall_at_k_hand_example():
    # image i pairs with text i; texts 0 and 2 share a caption: "cat" scores as its best row.
    img = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.3]]), dim=-1)
    txt = F.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.1]]), dim=-1)
    caps = ["cat", "dog", "cat"]
    r = recall_at_k(img, txt, caps, ks=(1, 2))
    sim = img @ txt.T
    best = [{c: max(float(sim[i, j]) for j in range(3) if caps[j] == c) for c in ("cat", "dog")} for i in range(3)]
    expect_i2t_1 = sum(max(best[i], key=best[i].get) == caps[i] for i in range(3)) / 3
    assert r["image_to_text_R@1"] == pytest.approx(expect_i2t_1)
    assert r["image_to_text_R@2"] == pytest.approx(1.0)  # two distinct captions: both in any top 2
    expect_t2i_1 = sum(caps[int(sim[:, j].argmax())] == caps[j] for j in range(3)) / 3
    assert r["text_to_image_R@1"] == pytest.approx(expect_t2i_1)


def test_repeated_captions_fill_no_top_k_with_copies():
    """Class-name captions: 12 images of 3 classes, each caption text 4 times. An image's top 5
    were 5 copies of the best (wrong) caption, so R@5 equalled R@1; over distinct captions the
    right one, second best, is within R@2."""
    classes = F.normalize(torch.eye(3) + 0.1, dim=-1)
    labels = torch.arange(12) % 3
    txt = classes[labels]
    img = F.normalize(classes[(labels + 1) % 3] + 0.5 * classes[labels], dim=-1)  # the right class second
    r = recall_at_k(img, txt, [f"a photo of class {int(c)}" for c in labels], ks=(1, 2, 5))
    assert r["image_to_text_R@1"] == 0.0 and r["image_to_text_R@2"] == 1.0 and r["image_to_text_R@5"] == 1.0


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(12, 4))

    def get_image_features(self, x):
        return x.flatten(1) @ self.w


def test_zero_shot_matches_plain_loop():
    torch.manual_seed(0)
    model = _Linear()
    classifier = F.normalize(torch.randn(5, 4), dim=-1)
    batches = [{"pixel_values": torch.randn(7, 3, 2, 2), "labels": torch.randint(0, 5, (7,))} for _ in range(3)]
    out = zero_shot_evaluate(model, batches, classifier)
    top1 = top3 = n = 0
    for b in batches:
        logits = F.normalize(model.get_image_features(b["pixel_values"]), dim=-1) @ classifier.T
        for row, y in zip(logits, b["labels"]):
            order = row.argsort(descending=True)
            top1 += int(order[0] == y)
            top3 += int(y in order[:5])
            n += 1
    assert out["zero_shot_top1"] == pytest.approx(top1 / n)
    assert out["zero_shot_top5"] == pytest.approx(top3 / n)
    assert int(out["confusion"].sum()) == n


def test_metrics_refuse_non_finite_scores():
    """topk ranks NaN arbitrarily: a diverged model was scored anyway (zero-shot, both retrieval
    metrics, probe features). Each now names what held NaN and in how many rows."""
    from tessera.eval import multi_caption_recall

    torch.manual_seed(0)
    model = _Linear()
    with torch.no_grad():
        model.w[0, 0] = float("nan")
    batches = [{"pixel_values": torch.randn(7, 3, 2, 2), "labels": torch.randint(0, 5, (7,))}]
    with pytest.raises(ValueError, match="zero-shot scores: 7 of 7 rows hold NaN or inf"):
        zero_shot_evaluate(model, batches, F.normalize(torch.randn(5, 4), dim=-1))
    img, txt = F.normalize(torch.randn(4, 3), dim=-1), F.normalize(torch.randn(4, 3), dim=-1)
    img[2, 1] = float("inf")
    with pytest.raises(ValueError, match="retrieval scores \\(image rows\\): 1 of 4 rows"):
        recall_at_k(img, txt, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="retrieval scores \\(image rows\\): 1 of 4 rows"):
        multi_caption_recall(img, txt, [0, 1, 2, 3])
    img[2, 1] = 0.5
    assert set(recall_at_k(img, txt, ["a", "b", "c", "d"])) >= {"image_to_text_R@1"}


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="no Fashion-MNIST")
def test_eval_cli_on_a_checkpoint(tmp_path):
    import tessera

    sys.path.insert(0, os.path.dirname(__file__))
    from test_train import tiny_recipe

    recipe = tiny_recipe()
    recipe["eval"] = {"max_images": 256, "retrieval": True}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    model = tessera.CLIPModel(recipe["model"]["config"])
    model.save_pretrained(str(tmp_path / "ckpt"))
    run = subprocess.run([sys.executable, "-m", "tessera.cli", "eval", str(tmp_path / "ckpt"), "--recipe",
                          str(tmp_path / "r.yaml")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads(run.stdout)
    assert 0.0 <= metrics["zero_shot_top1"] <= 1.0 and metrics["num_images"] >= 256
    assert "image_to_text_R@10" in metrics and "text_to_image_R@1" in metrics
    bad = subprocess.run([sys.executable, "-m", "tessera.cli", "eval", str(tmp_path / "nope"), "--recipe",
                          str(tmp_path / "r.yaml")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nope" in bad.stderr
    info = subprocess.run([sys.executable, "-m", "tessera.cli", "info"], capture_output=True, text=True, timeout=120)
    assert "ViT-B-32" in info.stdout
