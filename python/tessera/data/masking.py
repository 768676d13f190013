"""Block-wise masking for masked image modeling (Bao et al. 2021, BEiT, Algorithm 1): rectangles
of at least `min_num_patches` patches with aspect ratio in [min_aspect, 1/min_aspect] are masked
until `num_masking_patches` are; as in BEiT v2, the count is then made exact (a few patches
unmasked or masked at random) so every sample in a batch has the same number of masked patches.

    gen = BlockMaskGenerator((14, 14), num_masking_patches=75, min_num_patches=16, seed=0)
    mask = gen(batch=8)          # torch.bool [8, 196], row-major patches, 75 True per row
"""
from __future__ import annotations

import math
import random
from typing import Optional, Tuple, Union

import torch


class BlockMaskGenerator:
    def __init__(self, input_size: Union[int, Tuple[int, int]], num_masking_patches: int, min_num_patches: int = 16,
                 max_num_patches: Optional[int] = None, min_aspect: float = 0.3, max_aspect: Optional[float] = None,
                 exact: bool = True, seed: Optional[int] = None):
        self.height, self.width = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        total = self.height * self.width
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"input_size must be a positive patch grid, got {input_size!r}")
        if not 0 < num_masking_patches <= total:
            raise ValueError(f"num_masking_patches must be in [1, {total}] for a {self.height}x{self.width} grid, "
                             f"got {num_masking_patches}")
        if min_num_patches < 1:
            raise ValueError(f"min_num_patches must be >= 1, got {min_num_patches}")
        if not 0 < min_aspect <= 1:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        self.num_masking_patches = int(num_masking_patches)
        self.min_num_patches = int(min_num_patches)
        self.max_num_patches = int(max_num_patches or num_masking_patches)
        max_aspect = max_aspect or 1.0 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.exact = exact
        self.rng = random.Random(seed)

    @classmethod
    def from_ratio(cls, input_size, mask_ratio: float, **kwargs) -> "BlockMaskGenerator":
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        return cls((h, w), max(1, round(mask_ratio * h * w)), **kwargs)

    def __repr__(self) -> str:
        return (f"BlockMaskGenerator({self.height}x{self.width}, masked={self.num_masking_patches}, "
                f"block>={self.min_num_patches}, aspect=[{math.exp(self.log_aspect[0]):.2f}, "
                f"{math.exp(self.log_aspect[1]):.2f}])")

    def add_block(self, mask: torch.Tensor, max_patches: int) -> int:
        """Masks one rectangle that adds at most `max_patches` new patches (10 tries, as BEiT);
        returns how many it added."""
        rng = self.rng
        for _ in range(10):
            area = rng.uniform(self.min_num_patches, max_patches)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if w < self.width and h < self.height:
                top, left = rng.randint(0, self.height - h), rng.randint(0, self.width - w)
                block = mask[top:top + h, left:left + w]
                added = h * w - int(block.sum())
                if 0 < added <= max_patches:
                    block.fill_(True)
                    return added
        return 0

    def sample(self) -> torch.Tensor:
        """One mask, torch.bool [height, width]."""
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        count = 0
        while count < self.num_masking_patches:
            added = self.add_block(mask, min(self.num_masking_patches - count, self.max_num_patches))
            if added == 0:
                break
            count += added
        if self.exact and count != self.num_masking_patches:  # top up with single patches at random
            free = (~mask).flatten().nonzero().flatten().tolist()
            for i in self.rng.sample(free, self.num_masking_patches - count):
                mask.view(-1)[i] = True
        return mask

    def __call__(self, batch: int = 1) -> torch.Tensor:
        """torch.bool [batch, height * width] (row-major patches, the order of BEiT's `bool_masked_pos`)."""
        return torch.stack([self.sample().flatten() for _ in range(batch)])
