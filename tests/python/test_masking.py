"""Block-wise masking (BEiT's Algorithm 1): exact ratio, rectangles of the configured size and
aspect, reproducible from a seed, spatially clustered unlike uniform random masking."""
import math

import pytest
import torch

from tessera.data import BlockMaskGenerator


def test_every_mask_has_exactly_the_target_count():
    gen = BlockMaskGenerator((14, 14), num_masking_patches=75, min_num_patches=16, seed=0)
    masks = gen(batch=64)
    assert masks.shape == (64, 196) and masks.dtype == torch.bool
    assert masks.sum(1).tolist() == [75] * 64
    assert BlockMaskGenerator.from_ratio(7, 0.4, min_num_patches=4).num_masking_patches == 20


def test_one_block_is_a_rectangle_of_allowed_size_and_aspect():
    gen = BlockMaskGenerator((14, 14), num_masking_patches=75, min_num_patches=16, seed=1)
    lo, hi = math.exp(gen.log_aspect[0]), math.exp(gen.log_aspect[1])
    for _ in range(200):
        mask = torch.zeros(14, 14, dtype=torch.bool)
        added = gen.add_block(mask, 75)
        assert 0 < added <= 75 and added == int(mask.sum())
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert h * w == added, "the masked patches fill their bounding box"
        # target area >= 16 and aspect in [0.3, 1/0.3] before rounding each side to an integer
        assert (math.sqrt(h * w) + 1) ** 2 >= 16
        assert (h - 0.5) / (w + 0.5) <= hi and (h + 0.5) / (w - 0.5) >= lo


def test_blocks_are_clustered_unlike_uniform_masking():
    def neighbour_fraction(masks):  # of masked patches, how many have a masked right neighbour
        m = masks.view(-1, 14, 14)
        return float((m[:, :, :-1] & m[:, :, 1:]).sum() / m[:, :, :-1].sum())

    block = BlockMaskGenerator(14, 75, seed=2)(batch=64)
    uniform = torch.rand(64, 196).argsort(1).argsort(1) < 75
    assert neighbour_fraction(block) > neighbour_fraction(uniform) + 0.3


def test_seed_reproduces_and_calls_differ():
    a, b = BlockMaskGenerator(14, 75, seed=3), BlockMaskGenerator(14, 75, seed=3)
    first = a(batch=4)
    assert torch.equal(first, b(batch=4))
    assert not torch.equal(first, a(batch=4))


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_size=0, num_masking_patches=1), "positive patch grid"),
    (dict(input_size=4, num_masking_patches=17), r"num_masking_patches must be in \[1, 16\]"),
    (dict(input_size=4, num_masking_patches=4, min_num_patches=0), "min_num_patches"),
    (dict(input_size=4, num_masking_patches=4, min_aspect=2.0), "min_aspect"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockMaskGenerator(**kwargs)
