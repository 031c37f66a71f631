"""Where things live on disk, and the one module that reads environment variables.

    sdt_home()          $SDT_HOME, default ~/.cache/specdifftree (backbones, installed priors, downloads)
    data_cache_dir()    $SDT_DATA_DIR, default $SDT_HOME/data: where `sdt data download` puts datasets
    shared_data_dir()   shared/data beside the checkout (the project's copies), or None
    default_data_dir()  shared/data where it exists, else the download cache where it exists, or None
    configs_dir()       the YAML presets (package data: specdifftree/configs, `configs/` in a checkout)
    experiments_dir()   the experiment files (package data: specdifftree/experiments/suites, `experiments/`)
    wandb_env()         the W&B variables that decide online / offline
    torchrun_env()      (rank, world size, local rank) that torchrun set, (0, 1, 0) outside it
    forwarded_env()     the variables a Ray worker must see as the driver does (SDT_*, WANDB_*)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # the checkout in an editable install (site-packages for an installed wheel)


def sdt_home() -> Path:
    """$SDT_HOME, default ~/.cache/specdifftree."""
    env = os.environ.get("SDT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "specdifftree"


def installed_prior_dir() -> Path:
    """Where `sdt prior install` puts the trained prior that `--prior default` then uses."""
    return sdt_home() / "priors" / "default"


def data_cache_dir() -> Path:
    """$SDT_DATA_DIR, default $SDT_HOME/data: downloaded datasets, in shared/data's layout (ett/, m4/, ...)."""
    env = os.environ.get("SDT_DATA_DIR")
    return Path(env).expanduser() if env else sdt_home() / "data"


def shared_data_dir() -> Optional[Path]:
    """shared/data next to the repository (the project's own copies), or None when it does not exist."""
    path = REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def data_dirs() -> list[Path]:
    """Where datasets are looked for, in order: shared/data (where it exists), then the download cache."""
    return [p for p in (shared_data_dir(), data_cache_dir()) if p is not None]


def default_data_dir() -> Optional[Path]:
    """The first of `data_dirs()` that exists, or None when neither does."""
    return next((p for p in data_dirs() if p.is_dir()), None)


def configs_dir() -> Path:
    """The YAML presets, configs/{search,train,backbone}/NAME.yaml: package data, so a wheel has them
    (a checkout's top-level `configs/` is a link to the same folder)."""
    return PACKAGE_DIR / "configs"


def experiments_dir() -> Path:
    """The experiment files (`sdt experiment run NAME.yaml`): package data, like the presets (a
    checkout's top-level `experiments/` is a link to the same folder)."""
    return PACKAGE_DIR / "experiments" / "suites"


def wandb_env() -> dict[str, str]:
    """WANDB_MODE and WANDB_API_KEY where set (tracking decides online / offline from them)."""
    return {k: os.environ[k] for k in ("WANDB_MODE", "WANDB_API_KEY") if os.environ.get(k)}


def torchrun_env() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them; (0, 1, 0) in a plain process."""
    return tuple(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))


def forwarded_env() -> dict[str, str]:
    """SDT_* and WANDB_* variables of this process: what Ray workers get, so cells run as here."""
    return {k: v for k, v in os.environ.items() if k.startswith(("SDT_", "WANDB_"))}
