"""What the CUDA tests (test_cuda.py, test_cuda_trainer.py) share: the device under test, the
marks that skip them without one, the tolerances, and comparisons relative to a tensor's scale.

TESSERA_TEST_DEVICE=cpu runs them with the CPU standing in for the device (CPU against CPU, NCCL
replaced by Gloo), so the tests and their assertions can be checked on a machine without a GPU.
"""
import os
import pathlib
from typing import Dict, Optional

import pytest
import torch

DEVICE = os.environ.get("TESSERA_TEST_DEVICE", "cuda")
CPU_MODE = DEVICE == "cpu"
ROOT = pathlib.Path(__file__).resolve().parents[2]

CUDA_MARKS = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE not in ("cuda", "cpu"), reason="TESSERA_TEST_DEVICE must be cuda or cpu"),
              pytest.mark.skipif(not CPU_MODE and not torch.cuda.is_available(),
                                 reason="needs a CUDA device (TESSERA_TEST_DEVICE=cpu runs these tests on the CPU)")]

FP32_REL = 1e-4        # device vs CPU, fp32: max |diff| <= FP32_REL x max |CPU value|
GRAD_FLOOR = 1e-2      # a gradient's scale is at least GRAD_FLOOR x the largest gradient of the model
BF16_REL = 5e-2        # bf16 autocast vs fp32 (same device): max |diff| <= BF16_REL x max |fp32 value|
BF16_GRAD_COS = 0.98   # cosine between the bf16 and fp32 gradients (all parameters as one vector)
TRAIN_LOSS_REL = 1e-3  # trainer losses, device vs CPU, after a few AdamW steps
TRAIN_WEIGHT_REL = 1e-2  # final weights' difference, against the norm of the last 4 steps' update


@pytest.fixture(autouse=True, scope="module")
def exact_fp32():
    """No TF32 in matmuls or convolutions (patch embeddings): fp32 on the device means fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def max_diff_within(got: torch.Tensor, want: torch.Tensor, rel: float, scale: Optional[float] = None) -> tuple:
    """(ok, max |diff|, allowed): |got - want| <= rel x scale, scale defaulting to max |want|."""
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = want.abs().max().item() if scale is None else scale
    err = (got - want).abs().max().item() if want.numel() else 0.0
    allowed = rel * scale
    return err <= allowed and torch.isfinite(got).all().item(), err, allowed


def assert_scaled_close(got, want, rel, what, scale=None):
    ok, err, allowed = max_diff_within(got, want, rel, scale)
    assert ok, f"{what}: max |diff| {err:.3g} > allowed {allowed:.3g} ({rel:g} x scale)"


def assert_grads_close(got: Dict[str, torch.Tensor], want: Dict[str, torch.Tensor], rel: float):
    assert got.keys() == want.keys()
    largest = max(g.abs().max().item() for g in want.values())
    assert largest > 0, "no gradient reached the parameters"
    for name, g in want.items():
        # Relative to the gradient's own scale, with a floor: some gradients are zero in exact
        # arithmetic (an attention key's bias) and hold only rounding noise on each device.
        scale = max(g.abs().max().item(), GRAD_FLOOR * largest)
        assert_scaled_close(got[name], g, rel, f"grad {name}", scale)

