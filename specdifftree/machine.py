"""What this machine is and runs: the facts every record of a build or a run carries.

    cpu_name()             the CPU's model name
    fingerprint()          what decides the last bits of its floats: CPU, numpy's and torch's SIMD level
    with training_threads(n): ...  torch on n intra-op threads with deterministic algorithms, as before after
    version(distribution)  an installed distribution's version, or "not installed"
    with seeded(seed): ... torch's global random generators seeded for the block, as they were after it
"""

from __future__ import annotations

import os
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


def fingerprint() -> str:
    """What decides the last bits of this machine's floats, e.g. "AMD EPYC; numpy 2.4.6 X86_V3;
    torch 2.13.0+cpu AVX2": the CPU's name, the SIMD targets numpy dispatches to (its float64 sin,
    exp, log and sums take other paths with AVX-512) and the kernels' level torch uses (its
    vectorised reductions and MKL / oneDNN kernels differ by level). Two CPUs of one name may
    differ in these, so bit-for-bit checks compare fingerprints, not names. The environment's
    overrides (NPY_DISABLE_CPU_FEATURES, ATEN_CPU_CAPABILITY) show in the levels; MKL_CBWR, which
    pins MKL's code path, is named where it is set."""
    import numpy as np
    import torch

    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

        simd = "+".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f)) or "baseline"
    except ImportError:  # numpy's private names moved: the version stands for them
        simd = "simd unknown"
    mkl = f"; MKL_CBWR={os.environ['MKL_CBWR']}" if os.environ.get("MKL_CBWR") else ""
    return (f"{cpu_name()}; numpy {np.__version__} {simd}; "
            f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}{mkl}")


@contextmanager
def training_threads(threads: int):
    """torch on `threads` intra-op threads with deterministic algorithms inside the block, both as
    they were after it. The thread count splits float reductions (matmul, sums) into other partial
    sums, so training fixes it; deterministic algorithms make the few kernels that accumulate in
    scheduling order (scatter / index adds; most on CUDA) pick an ordered one, with a warning where
    none exists. cuBLAS is deterministic only with a fixed workspace (CUBLAS_WORKSPACE_CONFIG, read
    when CUDA starts), which is set for the process where CUDA has not started and it is unset."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    old = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(old[0])
        torch.use_deterministic_algorithms(old[1], warn_only=old[2])


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
