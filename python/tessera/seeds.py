"""Seeds of the per-step random streams (captions from templates, BLIP-2's ITM negatives, Sugar's
points, MIM masks), derived from (seed, step, index) — the index a sample's, never a rank's — so
that a resumed run draws what an uninterrupted one would, on any number of ranks."""


def stream_seed(seed: int, step: int, index: int, stride: int) -> int:
    """(seed * 1,000,003 + step) * stride + index, folded into torch's seed range: a large
    `train.seed` (a date such as 20241101) overflowed `Generator.manual_seed` at the first step.
    Values below 2^63 are unchanged, so earlier runs draw what they drew."""
    return ((seed * 1_000_003 + step) * stride + index) % (1 << 63)


def sample_seed(seed: int, step: int, sample: int, stream: int) -> int:
    """A 63-bit seed for one sample's draw at one step (its mask, its caption template): a hash of
    the four, since a sample's dataset index (or a shard key's 63-bit digest) has no bound that a
    linear stride like stream_seed's could stay above (index i at step s would share the draw of
    index i - stride at step s + 1)."""
    import hashlib

    packed = b"".join(int(v % (1 << 64)).to_bytes(8, "little") for v in (seed, step, sample, stream))
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little") >> 1
