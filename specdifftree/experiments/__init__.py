"""Experiment grids (`sdt experiment run`) and their comparison (`sdt compare`).

    config.py    the experiment YAML: datasets, methods, budgets, seeds, presets
    datasets.py  evaluation windows from the eval part of data/splits.py
    metrics.py   per-window forecast metrics (CRPS, MASE, sMAPE, Spec-W1, diversity, ...)
    runner.py    cells -> DIR/cells/<cell>/record.json, DIR/results.csv, W&B runs; resumable
    flow.py      the flow network for sadt / sadt-sample: given, or trained first
    plots.py     fan charts, forecast vs history PSDs, reward vs forward tokens
    compare.py   records (or W&B runs) -> markdown table with mean and standard error, plots
"""
