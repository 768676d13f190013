"""The native libraries tessera's extension loads leave LibTorch's state as they found it.
Reference: a process with torch alone. Debian's libsentencepiece defines a flag object with the
name of c10's `FLAGS_minloglevel`; bound to c10's copy it overwrote c10's flags, and an
out-of-memory allocation aborted the whole process instead of raising (python/tessera/_preload.py)."""
import subprocess
import sys

PROBE = r"""
import ctypes, os, sys, torch
c10 = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
flags = [ctypes.c_int.in_dll(c10, "FLAGS_minloglevel"), ctypes.c_bool.in_dll(c10, "FLAGS_caffe2_use_fatal_for_enforce")]
before = [f.value for f in flags]
if sys.argv[1] == "tessera":
    import tessera
    tessera.SentencePieceTokenizer  # the SentencePiece libraries are loaded with the extension
after = [f.value for f in flags]
print("flags intact" if after == before else f"flags changed: {after}")
try:
    torch.empty(2, 5 * 10**11, dtype=torch.long)
except RuntimeError as e:
    print("raised:", str(e)[:40])
"""


def _run(which):
    return subprocess.run([sys.executable, "-c", PROBE, which], capture_output=True, text=True, timeout=120)


def test_importing_tessera_leaves_c10s_flags_and_out_of_memory_errors_as_torch_alone():
    alone, with_tessera = _run("torch"), _run("tessera")
    assert alone.returncode == 0 and "flags intact" in alone.stdout and "raised:" in alone.stdout, alone
    assert with_tessera.returncode == 0, f"the process died (rc {with_tessera.returncode}): {with_tessera.stderr[-500:]}"
    assert with_tessera.stdout == alone.stdout
