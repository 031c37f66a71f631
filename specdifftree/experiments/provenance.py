"""What a results table was made with: the weights' sha256, the library versions, the machine.

    backbone_sha256   sha256 of the backbone's weights files (as HFBackbone.weights_sha256, GGUF, Markov JSON)
    prior_sha256      sha256 of the trained parts' weights.safetensors ("" for untrained parts)
    torch, transformers, llama_cpp_python, statsforecast, numpy, specdifftree   versions
    cpu               the CPU's model name; cpu_count the logical CPUs; platform, python

Every cell's record carries this (a resumed run may finish on another machine), results.csv has
a column per key, and `sdt compare` prints the distinct ones under its table.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Optional

from specdifftree.files import file_sha256, files_sha256, model_files
from specdifftree.machine import cpu_name, version

PROVENANCE_KEYS = ("backbone_sha256", "prior_sha256", "torch", "transformers", "llama_cpp_python", "statsforecast",
                   "numpy", "specdifftree", "cpu", "cpu_count", "platform", "python")
DISTRIBUTIONS = {"torch": "torch", "transformers": "transformers", "llama_cpp_python": "llama-cpp-python",
                 "statsforecast": "statsforecast", "numpy": "numpy"}


def provenance(prior_spec: str) -> dict:
    """The provenance of runs with the prior `prior_spec` on this machine (module docstring)."""
    from specdifftree import __version__

    files = weight_files(prior_spec)
    return {"backbone_sha256": _sha(files["backbone"]), "prior_sha256": _sha(files["prior"]),
            **{key: version(dist) for key, dist in DISTRIBUTIONS.items()}, "specdifftree": __version__,
            "cpu": cpu_name(), "cpu_count": os.cpu_count() or 0, "platform": platform.platform(),
            "python": platform.python_version()}


def _sha(path: Optional[Path]) -> str:
    """The file's sha256 (files.file_sha256 hashes it once per process while it is unchanged); a model
    directory's weights files as one (files.files_sha256, as the backbone's weights_sha256); "" for none."""
    if path is not None and Path(path).is_dir():
        return files_sha256(model_files(path))
    return "" if path is None or not Path(path).is_file() else file_sha256(path)


def weight_files(spec: str) -> dict[str, Optional[Path]]:
    """The files holding a prior's weights, for run records: {"backbone": the backbone's weights
    (a transformers model directory, a GGUF file, a Markov JSON), "prior": the trained parts' weights.safetensors}.
    None where there is no local file (a built-in Markov problem, a hub id, untrained parts).
    `default` builds the default backbone if it is not built yet."""
    from specdifftree.prior.spec import checkpoint_dir, parse_prior

    parsed = parse_prior(spec)
    if parsed.kind == "markov":
        return {"backbone": Path(parsed.arg) if Path(parsed.arg).is_file() else None, "prior": None}
    checkpoint = checkpoint_dir(parsed)
    if checkpoint is None:
        return {"backbone": backbone_file(parsed), "prior": None}
    ref = parse_prior(json.loads((checkpoint / "config.json").read_text()).get("backbone", ""))
    return {"backbone": backbone_file(ref), "prior": checkpoint / "weights.safetensors"}


def backbone_file(ref) -> Optional[Path]:
    """Where a backbone reference's weights are (default, hf:DIR: the model directory; gguf:FILE), or
    None (a hub id)."""
    if ref.kind in ("default", "text"):
        from specdifftree.prior.default import default_backbone

        return default_backbone(ref.kind)
    path = Path(ref.arg)
    if ref.kind == "hf" and model_files(path):
        return path
    return path if ref.kind == "gguf" and path.is_file() else None


def describe_provenance(rows: list[dict]) -> str:
    """Markdown lines naming each distinct provenance among table rows (a table resumed on another
    machine shows two)."""
    seen: list[dict] = []
    for r in rows:
        p = {k: r.get(k) for k in PROVENANCE_KEYS}
        if any(v not in (None, "") for v in p.values()) and p not in seen:
            seen.append(p)
    if not seen:
        return "Made with: not recorded (cells from before provenance was recorded)."
    lines = []
    for p in seen:
        weights = f"backbone sha256 {p['backbone_sha256'] or '-'}, prior sha256 {p['prior_sha256'] or '-'}"
        libs = ", ".join(f"{k} {p[k]}" for k in ("torch", "transformers", "llama_cpp_python", "statsforecast",
                                                 "numpy", "specdifftree"))
        lines.append(f"- {weights}; {libs}; CPU {p['cpu']} ({p['cpu_count']} logical), {p['platform']}, "
                     f"Python {p['python']}")
    head = "Made with:" if len(seen) == 1 else f"Made with {len(seen)} different setups (cells differ):"
    return "\n".join([head, *lines])


__all__ = ["PROVENANCE_KEYS", "backbone_file", "describe_provenance", "provenance", "weight_files"]
