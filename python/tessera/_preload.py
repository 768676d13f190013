"""Loads Debian's SentencePiece libraries so that they bind their own symbols before LibTorch's.

libsentencepiece bundles a minimal absl whose `FLAGS_minloglevel` (a 32-byte flag object) has the
name of c10's 4-byte int flag. Loaded as a dependency of tessera's extension, after LibTorch, the
library's relocations bind that name to c10's copy and its static initialiser constructs the object
over c10's memory: it switches on `caffe2_use_fatal_for_enforce` (every failed enforce, an
out-of-memory allocation included, then aborts the process instead of raising) and marks a c10
function-local static as initialised. Opened first with RTLD_DEEPBIND, each library looks in itself
before the global scope; the extension's dependency on it then reuses that copy (tests/python/
test_native_libraries.py checks c10's flags and that an out-of-memory allocation still raises)."""
from __future__ import annotations

import ctypes
import os
import warnings

LIBRARIES = ("libsentencepiece.so.0", "libsentencepiece_train.so.0")


def load_deepbound() -> None:
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    if not deepbind:
        return
    # A preloaded allocator (tcmalloc, jemalloc) or sanitizer must interpose malloc everywhere; a
    # deep-bound library would bind glibc's first. There the libraries load as plain dependencies.
    if os.environ.get("LD_PRELOAD", "").strip():
        warnings.warn("LD_PRELOAD is set: SentencePiece is not isolated from LibTorch's flags, and an "
                      "out-of-memory error may abort the process instead of raising (tessera/_preload.py)",
                      stacklevel=3)
        return
    for name in LIBRARIES:
        try:
            ctypes.CDLL(name, mode=os.RTLD_NOW | os.RTLD_LOCAL | deepbind)
        except OSError:
            warnings.warn(f"{name} is not on the loader's search path: the extension loads it through its "
                          "RUNPATH, without isolation from LibTorch's flags (tessera/_preload.py)", stacklevel=3)
            return
