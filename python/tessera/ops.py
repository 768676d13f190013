"""Alignment primitives over the C++ autograd ops in csrc/tessera/ops: soft-DTW (Cuturi &
Blondel 2017), the global alignment kernel (Cuturi 2007), and Sugar's triple-kernel slice cost.

    cost = torch.cdist(x, y) ** 2                       # [B, N, M]
    d = tessera.ops.soft_dtw(cost, gamma=0.1)            # [B], differentiable in cost
    k = tessera.ops.gak(x, y, sigma=2.0)                 # normalised GAK, [B]

Per-pair lengths are a pair `(x_lengths, y_lengths)` of int [B]: pair b then reads its result at
R[x_lengths[b], y_lengths[b]] and ignores the padding beyond, as if called unpadded.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import _C

Lengths = Optional[Tuple[Union[torch.Tensor, Sequence[int]], Union[torch.Tensor, Sequence[int]]]]

__all__ = ["soft_dtw", "gak", "gak_from_cost", "triple_kernel_cost", "decode_linear", "linear",
           "onednn_linear", "attention", "cpu_attention_in_fp32"]


def _pair(lengths: Lengths, fn: str):
    if lengths is None:
        return None, None
    if not isinstance(lengths, (tuple, list)) or len(lengths) != 2:
        raise ValueError(f"{fn}: lengths must be a pair (x_lengths, y_lengths), got {type(lengths).__name__}")
    if any(t is None for t in lengths):
        raise ValueError(f"{fn}: lengths needs both x_lengths and y_lengths (lengths=None: every step counts)")
    return tuple(torch.as_tensor(t) if not isinstance(t, torch.Tensor) else t for t in lengths)


def _number(value, fn: str, name: str) -> float:
    """A real number (a 0-d tensor or array too); a bool (gamma=True) or a string was coerced or
    failed deep inside."""
    if isinstance(value, torch.Tensor) and value.requires_grad:  # .item() cut it from the graph without a word
        raise TypeError(f"{fn}: {name} is a tensor that requires grad, but no gradient flows to {name} (a constant "
                        f"here, as in tslearn and pysdtw): pass {name}.item()")
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _flag(value, fn: str, name: str) -> bool:
    """A bool (numpy's too); normalized="false" was read as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def soft_dtw(cost: torch.Tensor, gamma: float = 1.0, lengths: Lengths = None) -> torch.Tensor:
    """Soft-DTW value of each cost matrix: [B, N, M] -> [B] ([N, M] -> 0-d).

    R[i, j] = cost[i, j] + softmin_gamma(R[i-1, j-1], R[i-1, j], R[i, j-1]), R[0, 0] = 0, where
    softmin_gamma(v) = -gamma log sum exp(-v / gamma). `gamma=0` is hard DTW: its gradient is the
    optimal path, ties going to the first minimum in the order diagonal, (i-1, j), (i, j-1). The
    backward is the expected alignment (the soft path) times the incoming gradient.
    """
    x_len, y_len = _pair(lengths, "soft_dtw")
    return _C.ops.soft_dtw(cost, _number(gamma, "soft_dtw", "gamma"), x_len, y_len)


def _bandwidth(sigma, delta, fn: str) -> Tuple[Optional[float], float]:
    if sigma is not None and delta is not None:
        raise ValueError(f"{fn}: give sigma or delta, not both")
    return (None if sigma is None else _number(sigma, fn, "sigma"),
            1.0 if delta is None else _number(delta, fn, "delta"))


def gak(x: torch.Tensor, y: torch.Tensor, sigma: Optional[float] = None, delta: Optional[float] = None,
        normalized: bool = True, lengths: Lengths = None) -> torch.Tensor:
    """Global alignment kernel of x [B, N, D] and y [B, M, D] (or unbatched [N, D], [M, D]).

    K = sum over alignments of prod exp(-phi_sigma), phi_sigma = phi/(2 sigma^2) + log(2 - exp(-phi/(2 sigma^2))),
    phi the squared Euclidean distance; computed as exp(-soft_dtw(phi_sigma, gamma=1)). `sigma`
    fixes the bandwidth (tslearn's `sigma`); otherwise sigma = delta * sqrt((n + m) / 2) for each
    pair (delta defaults to 1). `normalized` returns K(x, y) / sqrt(K(x, x) K(y, y)).
    """
    x_len, y_len = _pair(lengths, "gak")
    return _C.ops.gak(x, y, *_bandwidth(sigma, delta, "gak"), _flag(normalized, "gak", "normalized"), x_len, y_len)


def gak_from_cost(xy: torch.Tensor, xx: Optional[torch.Tensor] = None, yy: Optional[torch.Tensor] = None,
                  sigma: Optional[float] = None, delta: Optional[float] = None, normalized: bool = True,
                  lengths: Lengths = None) -> torch.Tensor:
    """GAK from precomputed local costs phi (e.g. `triple_kernel_cost`): xy [B, N, M]; the
    normalised form also needs xx [B, N, N] and yy [B, M, M]."""
    x_len, y_len = _pair(lengths, "gak_from_cost")
    return _C.ops.gak_from_cost(xy, xx, yy, *_bandwidth(sigma, delta, "gak_from_cost"),
                                _flag(normalized, "gak_from_cost", "normalized"), x_len, y_len)


def triple_kernel_cost(x_first: torch.Tensor, x_second: torch.Tensor, x_is_image: torch.Tensor,
                       y_first: torch.Tensor, y_second: torch.Tensor, y_is_image: torch.Tensor) -> torch.Tensor:
    """Sugar's triple kernel as a local cost [B, N, M]. A slice is two blocks, compared by the
    squared distance of their L2-normalised forms: two images or two texts compare their first
    blocks (an image-only or text-only encoder: DINOv2, BGE in the paper), an image and a text
    their second (CLIP). first [B, N, Df] (zero-pad the narrower modality), second [B, N, Ds],
    is_image bool (or 0/1 integer) [B, N]; likewise for y. A zero block is normalised as
    `F.normalize` does (it stays zero: distance 1 to any other block, 0 to another zero one).
    Distances below 1e-2 are summed directly in float64; their gradient is the matmul form's (in
    float32 it carries that form's rounding: ~1e-3 relative at a distance of 1e-8, 0 where it
    rounds to 0)."""
    return _C.ops.triple_kernel_cost(x_first, x_second, x_is_image, y_first, y_second, y_is_image)


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """`x @ weight.T + bias` for decoding: at most 8 rows of x against a bf16 weight (x bf16 or
    fp32) or an fp32 one (x fp32), accumulated in fp32, the weight streamed once at close to the
    memory's rate (LibTorch's GEMM reads it at a quarter of that for one row). tessera's linear
    layers and LM heads use it by themselves when decoding without autograd or autocast."""
    return _C.ops.decode_linear(x, weight, bias, out_dtype)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`torch.nn.functional.linear` as tessera's layers compute it: fp32 inference on CPU with 128+
    rows and both weight sides 256+ goes through oneDNN (LibTorch's `mkldnn::_linear_pointwise`,
    0.5-0.85x MKL's time on AMD CPUs at those sizes); everything else (gradients of either mode,
    other dtypes and devices, autocast, tensor subclasses such as DTensor, dispatch modes) through
    torch's own linear. Results agree with torch's to fp32 rounding."""
    return _C.ops.linear(x, weight, bias)


class _Switch:
    """A process-wide switch of the C++ core, as a call or, to A/B-compare, a context manager that
    restores the previous setting."""
    _get = _set = None  # staticmethods of the subclass

    def __init__(self, on: bool):
        self.previous = self._get()
        self._set(bool(on))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._set(self.previous)

    @classmethod
    def enabled(cls) -> bool:
        return cls._get()


class onednn_linear(_Switch):
    """Turns the oneDNN path on or off for this process (default on; TESSERA_ONEDNN_LINEAR=0 starts
    it off):

        with tessera.ops.onednn_linear(False):
            reference = model(x)"""
    _get = staticmethod(_C.ops.onednn_linear_enabled)
    _set = staticmethod(_C.ops.set_onednn_linear_enabled)

    @staticmethod
    def applies(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> bool:
        return _C.ops.onednn_linear_applies(x, weight, bias)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None,
              causal: bool = False, dropout_p: float = 0.0, scale: Optional[float] = None) -> torch.Tensor:
    """The attention every tessera layer calls: q [B, H, Q, D], k/v [B, Hkv, K, D] (grouped-query
    when Hkv < H), an additive float or a boolean mask (True: attend, as SDPA's) broadcastable to
    [B, H, Q, K], `causal` aligned to the last key (a KV cache's layout). That is
    `torch.nn.functional.scaled_dot_product_attention` with the backend rules of the C++ core:
    decoding steps take tessera's own kernel, and on a CPU reduced-precision calls compute in fp32
    where that is faster (`cpu_attention_in_fp32`)."""
    return _C.ops.attention(q, k, v, mask, bool(causal), float(dropout_p), scale)


class cpu_attention_in_fp32(_Switch):
    """On a CPU without a bf16/fp16 matrix unit, ATen's attention is slower in bf16 than in fp32 for
    the backward over at most 320 keys (1.4-2x at 32-128 keys), and slower in fp16 everywhere. Such
    calls run SDPA on fp32 copies and round the output back (default on); off keeps each call in
    its own dtype:

        with tessera.ops.cpu_attention_in_fp32(False):
            loss_bf16_kernels = step(batch)"""
    _get = staticmethod(_C.ops.cpu_attention_in_fp32)
    _set = staticmethod(_C.ops.set_cpu_attention_in_fp32)

    @staticmethod
    def applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> bool:
        return _C.ops.attention_runs_in_fp32(q, k, v, float(dropout_p))
