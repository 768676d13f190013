"""What a mid-epoch resume of a shard stream costs before it serves its first sample: the samples
before the saved position are replayed (the shuffle buffer's draws must repeat). Before stop 40
every one was read whole; now a plain tar's are replayed from their headers and only the served
samples' bytes are read. Same run, both ways (`headers_only` on and off).

    python benchmarks/shard_resume.py [--samples 2000] [--kb 200] [--buffer 100]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import tessera.data.webdataset as W
from tessera.data.shards import write_shards


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--kb", type=int, default=200, help="bytes per sample's image, in kB")
    p.add_argument("--buffer", type=int, default=100)
    a = p.parse_args()
    blob = os.urandom(a.kb * 1000)
    with tempfile.TemporaryDirectory() as d:
        pattern = write_shards(d, ((f"{i:06d}", [("jpg", blob), ("txt", b"c")]) for i in range(a.samples)),
                               maxcount=200)
        print(f"{a.samples} samples of {a.kb} kB in shards of 200, shuffle buffer {a.buffer} (page cache warm)")
        read = {"bytes": 0}
        tar_samples, read_members = W.tar_samples, W.read_members

        def counted_tar(*args, **kw):  # member bytes the reader hands out
            for s in tar_samples(*args, **kw):
                read["bytes"] += sum(len(v) for k, v in s.items() if isinstance(v, bytes))
                yield s

        def counted_read(sample, files):  # bytes read for a sample served
            out = read_members(sample, files)
            read["bytes"] += sum(r.size for r in sample.values() if isinstance(r, W.MemberRef))
            return out

        W.tar_samples, W.read_members = counted_tar, counted_read
        original = W.ShardStream._samples
        for position in (a.samples // 2, a.samples - 10):
            got = {}
            for lazy in (False, True):
                if not lazy:  # the stop-39 behaviour: replay with every member's bytes
                    W.ShardStream._samples = lambda self, w, n, pr, headers_only=False: original(self, w, n, pr, False)
                st = W.ShardStream(pattern, shuffle_buffer=a.buffer, seed=0)
                st.load_state_dict({"epoch": 0, "position": position})
                read["bytes"] = 0
                t = time.perf_counter()
                next(iter(st))
                got[lazy] = (time.perf_counter() - t, read["bytes"] / 2 ** 20)
                W.ShardStream._samples = original
            (t0, b0), (t1, b1) = got[False], got[True]
            print(f"resume at sample {position:5d}: whole replay {b0:7.1f} MiB in {t0:.3f} s, headers only "
                  f"{b1:5.2f} MiB in {t1:.3f} s ({b0 / max(b1, 1e-9):.0f}x fewer bytes, {t0 / t1:.1f}x faster)")


if __name__ == "__main__":
    main()
