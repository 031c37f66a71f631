"""What this machine is and runs: the facts every record of a build or a run carries.

    cpu_name()             the CPU's model name
    version(distribution)  an installed distribution's version, or "not installed"
    with seeded(seed): ... torch's global random generators seeded for the block, as they were after it
"""

from __future__ import annotations

import platform
from contextlib import contextmanager
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


@contextmanager
def seeded(seed: int):
    """torch's global generators seeded with `seed` inside the block and restored after it, so that
    seeding a model's initial weights or a training run leaves the caller's random stream as it was.

    The CPU generator is always seeded; the CUDA ones only where CUDA is initialised already (a model
    on the GPU): `torch.manual_seed` before CUDA starts queues a seed for its start, which would
    reach past the block. Inside, the streams are those `torch.manual_seed(seed)` gives."""
    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield
