"""The native libraries tessera loads leave LibTorch's state as they found it. Reference: a
process with torch alone. Debian's libsentencepiece defines a flag object with the name of c10's
`FLAGS_minloglevel`; bound to c10's copy it overwrote c10's flags, and an out-of-memory allocation
aborted the whole process instead of raising. libtessera now opens it deep-bound from a module of
its own on first use (csrc/tessera/text/sentencepiece_shim.h)."""
import os
import subprocess
import sys


PROBE = r"""
import ctypes, os, sys, torch
c10 = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
flags = [ctypes.c_int.in_dll(c10, "FLAGS_minloglevel"), ctypes.c_bool.in_dll(c10, "FLAGS_caffe2_use_fatal_for_enforce")]
before = [f.value for f in flags]
if sys.argv[1] == "tessera":
    import tessera
    tessera.SentencePieceTokenizer(sys.argv[2]).encode("Hello world!")  # SentencePiece loads here
after = [f.value for f in flags]
print("flags intact" if after == before else f"flags changed: {after}")
try:
    torch.empty(2, 5 * 10**11, dtype=torch.long)
except RuntimeError as e:
    print("raised:", str(e)[:40])
"""


def _run(which, shared, **env):
    model = str(shared / "assets" / "llama2c_tokenizer.model")
    return subprocess.run([sys.executable, "-c", PROBE, which, model], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_importing_tessera_leaves_c10s_flags_and_out_of_memory_errors_as_torch_alone(shared_dir):
    alone, with_tessera = _run("torch", shared_dir), _run("tessera", shared_dir)
    assert alone.returncode == 0 and "flags intact" in alone.stdout and "raised:" in alone.stdout, alone
    assert with_tessera.returncode == 0, f"the process died (rc {with_tessera.returncode}): {with_tessera.stderr[-500:]}"
    assert with_tessera.stdout == alone.stdout


def test_a_preloaded_library_turns_deep_binding_off_with_a_warning(shared_dir):
    """A preloaded allocator must see every malloc, which a deep-bound library would not: there
    SentencePiece loads plainly and says so (a preloaded libm stands in for tcmalloc)."""
    run = _run("tessera", shared_dir, LD_PRELOAD="libm.so.6")
    assert run.returncode == 0, run.stderr[-500:]
    assert "loaded without RTLD_DEEPBIND (LD_PRELOAD is set)" in run.stderr
