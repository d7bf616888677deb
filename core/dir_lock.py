"""One process at a time in a folder: an advisory lock (flock) on a file in it that names its
holder (PID and host). The kernel drops a flock when its process dies, so a lock left by a
`kill -9` is free at once; the file's old holder is then named in a warning and the lock taken over.
Training and evaluation of a run directory (core.run_dir.RunDir.lock), static evaluation on each
test set's folder (eval/<name>/), `evaluate.py episodes` on its output folder, the simulators' runs
and tokenized cache builds (these two wait instead of stopping) all use this one lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from core.errors import ProjectError


class LockHeld(ProjectError):
    """Another process holds the folder's lock."""


class DirLock:
    """`with DirLock(folder, what="training"):` locks `folder/.lock`; `wait=True` blocks until the
    holder is done instead of stopping (the simulators: a second process then reuses the first's
    result)."""

    FILE = ".lock"

    def __init__(self, folder, what: str = "a run", wait: bool = False):
        self.path, self.what, self.wait = Path(folder) / self.FILE, what, wait
        self.fh = None

    def __enter__(self) -> "DirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = self._holder(fh)
            fh.close()
            raise LockHeld(f"{self.path.parent} is in use by {holder}; wait for it to finish, "
                           f"or stop it (the lock is {self.path})") from None
        old = self._read(fh)
        if old and not self.wait and (old.get("pid"), old.get("host")) != (os.getpid(), socket.gethostname()):
            print(f"warning: {self.path}: taking over the lock left by PID {old.get('pid')} on "
                  f"{old.get('host')} (that process is gone)", file=sys.stderr)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what}) + "\n")
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.seek(0)
            self.fh.truncate()  # a clean exit leaves no holder to name
            self.fh.close()  # closing releases the flock
            self.fh = None

    @staticmethod
    def _read(fh) -> dict | None:
        fh.seek(0)
        try:
            data = json.loads(fh.read() or "null")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _holder(self, fh) -> str:
        data = self._read(fh) or {}
        if not data:
            return "another process"
        return f"{data.get('what') or 'a run'} (PID {data.get('pid')} on {data.get('host')})"
