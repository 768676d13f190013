"""Seeds of the per-step random streams (captions from templates, BLIP-2's ITM negatives, Sugar's
points, MIM masks), derived from (seed, step, index) so that a resumed run draws what an
uninterrupted one would, on any number of ranks."""


def stream_seed(seed: int, step: int, index: int, stride: int) -> int:
    """(seed * 1,000,003 + step) * stride + index, folded into torch's seed range: a large
    `train.seed` (a date such as 20241101) overflowed `Generator.manual_seed` at the first step.
    Values below 2^63 are unchanged, so earlier runs draw what they drew."""
    return ((seed * 1_000_003 + step) * stride + index) % (1 << 63)
