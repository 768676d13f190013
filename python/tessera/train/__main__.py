"""`python -m tessera.train RECIPE [--out DIR] [--resume] [--set k=v ...]` (torchrun-compatible)."""
import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
