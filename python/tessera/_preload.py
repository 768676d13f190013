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

LIBRARIES = ("libsentencepiece.so.0", "libsentencepiece_train.so.0")


def load_deepbound() -> None:
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    # AddressSanitizer refuses RTLD_DEEPBIND (it must interpose malloc everywhere).
    if not deepbind or "asan" in os.environ.get("LD_PRELOAD", ""):
        return
    for name in LIBRARIES:
        try:
            ctypes.CDLL(name, mode=os.RTLD_NOW | os.RTLD_LOCAL | deepbind)
        except OSError:
            pass  # not on the loader's search path: the extension finds it through its RUNPATH
