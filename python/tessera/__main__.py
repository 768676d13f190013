"""`python -m tessera ...`: the `tessera` command, for environments where the console script is
not on PATH (a notebook kernel's interpreter, `torchrun -m tessera`)."""
import sys

from .cli import main

sys.exit(main())
