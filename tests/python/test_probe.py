"""Linear probe and k-NN against plain formulas, and the raw-pixel floor on Fashion-MNIST."""
import os

import pytest
import torch
import torch.nn.functional as F

from tessera.eval import knn, linear_probe, run_probe


def test_knn_equals_a_brute_force_vote():
    g = torch.Generator().manual_seed(0)
    train_x, train_y = torch.randn(60, 5, generator=g), torch.randint(0, 3, (60,), generator=g)
    test_x, test_y = torch.randn(15, 5, generator=g), torch.randint(0, 3, (15,), generator=g)
    a, b = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    predicted = []
    for row in b:
        sims = a @ row
        top = sims.argsort(descending=True)[:7]
        votes = [sum(float(torch.exp(sims[i] / 0.1)) for i in top if int(train_y[i]) == c) for c in range(3)]
        predicted.append(max(range(3), key=lambda c: votes[c]))
    expect = float((torch.tensor(predicted) == test_y).float().mean())
    assert knn(train_x, train_y, test_x, test_y, k=7, temperature=0.1) == pytest.approx(expect)


def test_linear_probe_separates_separable_classes_and_not_noise():
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(4, 16, generator=g) * 4
    y = torch.randint(0, 4, (400,), generator=g)
    x = centers[y] + torch.randn(400, 16, generator=g)
    assert linear_probe(x[:300], y[:300], x[300:], y[300:]) > 0.97
    noise = torch.randn(400, 16, generator=g)
    assert linear_probe(noise[:300], y[:300], noise[300:], y[300:]) < 0.45


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="no Fashion-MNIST")
def test_raw_pixels_are_a_real_floor():
    result = run_probe("pixels", train_images=1000, test_images=300)
    assert 0.65 < result["linear_probe"] < 0.95 and 0.6 < result["knn"] < 0.95, result


def test_unknown_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder"):
        run_probe(str(tmp_path))
