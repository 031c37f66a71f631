"""Where the configuration dataclasses live, in one place (one dataclass per component).

Precedence everywhere: command line > YAML (`--config FILE.yaml`) > these defaults.

    SearchConfig     search/common.py    every search method's options
    EncoderConfig    prior/encoder.py    the time-series encoder
    BackbonePreset   prior/default.py    the embedded default backbone (architecture + pretraining)
    TrainConfig      train/config.py     `sdt train-prior` (presets test, smoke, default, full)
    AmortizeConfig   amortize/train.py   `sdt amortize` (the flow network's training)
    SpeedConfig      bench/speed.py      `sdt bench speed`
    ExperimentConfig experiments/config.py  `sdt experiment run` (with DatasetSpec, MethodSpec)

Imported lazily so that reading this module costs nothing.
"""

from __future__ import annotations

_WHERE = {
    "SearchConfig": "specdifftree.search.common",
    "EncoderConfig": "specdifftree.prior.encoder",
    "BackbonePreset": "specdifftree.prior.default",
    "TrainConfig": "specdifftree.train.config",
    "AmortizeConfig": "specdifftree.amortize.train",
    "SpeedConfig": "specdifftree.bench.speed",
    "ExperimentConfig": "specdifftree.experiments.config",
}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
