"""Copies CLIP's BPE merges (MIT) from the installed open_clip package to the given path, so the
tessera package ships them; run by `make build`."""
import importlib.util
import os
import shutil
import sys

spec = importlib.util.find_spec("open_clip")
if spec is None or not spec.origin:
    sys.exit("ship_clip_merges: open_clip_torch is not installed (requirements.txt installs it)")
src = os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz")
dest = sys.argv[1]
os.makedirs(os.path.dirname(dest), exist_ok=True)
shutil.copyfile(src, dest + ".tmp")
os.replace(dest + ".tmp", dest)
