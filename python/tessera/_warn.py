"""Warnings that point at the caller's line, not at tessera's: the stack level is counted to the
first frame outside the package (what Python 3.12's `skip_file_prefixes` does), so a warning
raised three calls deep in tessera still names the user's line that caused it."""
from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type = UserWarning) -> None:
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
