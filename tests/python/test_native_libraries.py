"""The native libraries tessera's extension loads leave LibTorch's state as they found it.
Reference: a process with torch alone. Debian's libsentencepiece defines a flag object with the
name of c10's `FLAGS_minloglevel`; bound to c10's copy it overwrote c10's flags, and an
out-of-memory allocation aborted the whole process instead of raising (python/tessera/_preload.py)."""
import subprocess
import sys

PROBE = r"""
import ctypes, os, sys, torch
c10 = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
base = ctypes.addressof(ctypes.c_char.in_dll(c10, "FLAGS_minloglevel"))
before = bytes((ctypes.c_char * 32).from_address(base))
if sys.argv[1] == "tessera":
    import tessera
    tessera.SentencePieceTokenizer  # the SentencePiece libraries are loaded with the extension
after = bytes((ctypes.c_char * 32).from_address(base))
print("flags intact" if after == before else "flags changed " + after.hex(" "))
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
