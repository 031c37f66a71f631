"""What this machine is and runs: the facts every record of a build or a run carries.

    cpu_name()             the CPU's model name
    version(distribution)  an installed distribution's version, or "not installed"
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path


def version(distribution: str) -> str:
    """The installed version of a distribution, or "not installed" (its module is not imported)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
