"""Experiment grids (`sdt experiment run`) and their comparison (`sdt compare`).

    config.py        the experiment YAML: datasets, methods, budgets, seeds, presets
    datasets.py      evaluation windows from the eval part of data/splits.py
    metrics.py       forecast records of one search (`sdt search --out`) and per-window metrics
                     (CRPS, MASE, sMAPE, Spec-W1, diversity, ...), means over windows and seeds
    runner.py        cells -> DIR/cells/<cell>/record.json, DIR/results.csv, W&B runs; resumable
    on_ray.py        the cells as Ray tasks (`--ray`)
    amortization.py  the flow network for sadt / sadt-sample: given, or trained first
    provenance.py    what a table was made with: weights' sha256, library versions, the machine
    long_format.py   forecasts as statsforecast-style long-format CSV (`sdt search --out-csv`)
    plots.py         fan charts, forecast vs history PSDs, reward vs forward tokens
    compare.py       records (or W&B runs) -> markdown table with mean and standard error, plots
"""
