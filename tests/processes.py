"""Helpers for tests that start other processes: torchrun jobs, Ray nodes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's sdt, torchrun and ray


def children(pid: int) -> list[int]:
    """The process ids whose parent is `pid` (read from /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return sorted(kids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_lines(proc: subprocess.Popen, path: Path, lines: int, timeout: float, poll: float = 0.002) -> None:
    """Return once `path` has at least `lines` lines (a metrics.csv with its first epoch committed: 2);
    fail with the end of `proc`'s stderr if the process ends first or `timeout` seconds pass."""
    deadline = time.time() + timeout
    while not (path.is_file() and len(path.read_text().splitlines()) >= lines):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(poll)
