"""Where things live on disk, and the one module that reads environment variables.

    sdt_home()          $SDT_HOME, default ~/.cache/specdifftree (backbones, installed priors, downloads)
    default_data_dir()  $SDT_DATA_DIR, else shared/data beside the checkout, or None
    configs_dir()       the YAML presets (`configs/` at the repository's top level)
    wandb_env()         the W&B variables that decide online / offline
    torchrun_env()      (rank, world size, local rank) that torchrun set, (0, 1, 0) outside it
    forwarded_env()     the variables a Ray worker must see as the driver does (SDT_*, WANDB_*)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[1]


def sdt_home() -> Path:
    """$SDT_HOME, default ~/.cache/specdifftree."""
    env = os.environ.get("SDT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "specdifftree"


def installed_prior_dir() -> Path:
    """Where `sdt prior install` puts the trained prior that `--prior default` then uses."""
    return sdt_home() / "priors" / "default"


def default_data_dir() -> Optional[Path]:
    """$SDT_DATA_DIR, else shared/data next to the repository, or None when it does not exist."""
    env = os.environ.get("SDT_DATA_DIR")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def configs_dir() -> Path:
    """The YAML presets: configs/{search,train,backbone}/NAME.yaml at the repository's top level."""
    return REPO_ROOT / "configs"


def wandb_env() -> dict[str, str]:
    """WANDB_MODE and WANDB_API_KEY where set (tracking decides online / offline from them)."""
    return {k: os.environ[k] for k in ("WANDB_MODE", "WANDB_API_KEY") if os.environ.get(k)}


def torchrun_env() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them; (0, 1, 0) in a plain process."""
    return tuple(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))


def forwarded_env() -> dict[str, str]:
    """SDT_* and WANDB_* variables of this process: what Ray workers get, so cells run as here."""
    return {k: v for k, v in os.environ.items() if k.startswith(("SDT_", "WANDB_"))}
