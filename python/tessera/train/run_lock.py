"""One training run per run folder: rank 0 holds `flock` on `<out>/.lock` for the run's life.

An flock belongs to the open file description, so the kernel drops it when the process dies,
SIGKILL included: a crashed run never leaves a stale lock, and no pid needs checking. The file
keeps the holder's pid, host and start time, only to name it in the error the second run gets.
Several nodes: the run folder is on a shared filesystem, whose flock (NFSv4, Lustre, GPFS)
the lock then relies on.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Optional

LOCK_FILE = ".lock"


class RunFolderLocked(RuntimeError):
    """Another process trains into the same run folder."""


class RunLock:
    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, LOCK_FILE)
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        os.makedirs(self.out_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise RunFolderLocked(
                    f"{self.out_dir} is in use by another training run ({holder}); two runs writing one "
                    f"folder would overwrite each other's checkpoints: use another --out, or wait for that run "
                    f"to end") from None
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:  # empty the file first: a reader must never see a holder that is gone
                os.ftruncate(self._fd, 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown: it has not written its pid yet"
