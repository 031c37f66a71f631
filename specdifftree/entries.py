"""Lazy registry entries: a "module:function" string names a function that is imported only when an
entry is used, so a registry (search methods, SMC potentials, prior kinds) can name heavy backends
without loading them. tests/test_layers.py holds such strings to the same floors as imports."""

from __future__ import annotations

import importlib
from typing import Any


def load_entry(entry: str) -> Any:
    """The object a "package.module:name" entry names, its module imported now."""
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["load_entry"]
