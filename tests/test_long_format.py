"""`sdt search --out-csv` (experiments/long_format.py): the samples' forecast in statsforecast's long
format, `ds` continuing the file's dates at the history's frequency, else integer steps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from specdifftree.data.context import context_from_array
from specdifftree.errors import SDTError
from specdifftree.experiments.long_format import forecast_rows

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT.parent / "shared" / "data" / "ett" / "ETTh1.csv"
DIGITS = ROOT / "examples" / "digits.json"
SEARCH = ["search", "--prior", f"markov:{DIGITS}", "--column", "OT", "--end", 15000, "--context-length", 96,
          "--horizon", 6, "--reward", "spectral", "--method", "sample", "--samples", 32, "-q"]


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return list(rows[0]), rows


@pytest.mark.skipif(not ETTH1.is_file(), reason="shared/data is not beside the checkout")
def test_out_csv_writes_median_and_bands_with_the_files_dates(run_cli, tmp_path):
    code, _, err = run_cli([*SEARCH, "--series", ETTH1, "--out", tmp_path / "r.json", "--out-csv",
                            tmp_path / "f.csv", "--level", 95, "--level", "80,95"])
    assert code == 0, err
    header, rows = read_csv(tmp_path / "f.csv")
    assert header == ["unique_id", "ds", "sample", "sample-lo-95", "sample-lo-80", "sample-hi-80", "sample-hi-95"]
    with ETTH1.open() as f:
        dates = [line.split(",")[0] for line in f][1:]
    assert [r["ds"] for r in rows] == dates[15000:15006]  # the rows after the history, hourly
    assert {r["unique_id"] for r in rows} == {"ETTh1_OT"}
    values = np.array([s["values"] for s in json.loads((tmp_path / "r.json").read_text())["samples"]
                       if len(s.get("values") or ()) == 6])
    got = {k: np.array([float(r[k]) for r in rows]) for k in header[2:]}
    np.testing.assert_allclose(got["sample"], np.median(values, axis=0))
    np.testing.assert_allclose(got["sample-hi-95"], np.quantile(values, 0.975, axis=0))
    assert np.all(got["sample-lo-95"] <= got["sample-lo-80"]) and np.all(got["sample-lo-80"] <= got["sample"])
    assert np.all(got["sample"] <= got["sample-hi-80"]) and np.all(got["sample-hi-80"] <= got["sample-hi-95"])


def test_without_a_date_column_ds_counts_rows(run_cli, tmp_path):
    series = tmp_path / "plain.csv"
    series.write_text("OT\n" + "\n".join(f"{np.sin(i / 4):.3f}" for i in range(200)) + "\n")
    code, _, err = run_cli([*SEARCH[:5], "--end", 120, *SEARCH[7:], "--series", series, "--out-csv", tmp_path / "f.csv"])
    assert code == 0, err
    header, rows = read_csv(tmp_path / "f.csv")
    assert header == ["unique_id", "ds", "sample"] and [r["ds"] for r in rows] == [str(i) for i in range(120, 126)]


def test_monthly_dates_continue_at_the_inferred_frequency(tmp_path):
    series = tmp_path / "monthly.csv"
    months = [f"{2000 + m // 12}-{m % 12 + 1:02d}-01" for m in range(30)]
    series.write_text("Month,y\n" + "".join(f"{d},{i}\n" for i, d in enumerate(months)))
    # the forecast series is the first where covariates came from other files
    meta = {"series_file": [str(series), str(tmp_path / "other.csv")], "column": ["y", "z"], "end": 30}
    ctx = context_from_array(np.arange(30.0), horizon=3, meta=meta)
    samples = [{"values": [30.0 + k, 31.0, 32.0]} for k in range(5)]
    rows = forecast_rows(samples, ctx, "dts", levels=[50])
    assert [r["ds"][:10] for r in rows] == ["2002-07-01", "2002-08-01", "2002-09-01"]
    assert rows[0]["unique_id"] == "monthly_y"
    assert rows[0]["dts"] == 32.0 and rows[0]["dts-lo-50"] == 31.0 and rows[0]["dts-hi-50"] == 33.0


def test_bad_levels_and_missing_series_fail_before_loading(run_cli, tmp_path):
    code, _, err = run_cli([*SEARCH, "--series", ETTH1, "--out-csv", tmp_path / "f.csv", "--level", 100])
    assert code == 2 and "--level 100: a prediction interval's level must be a number in (0, 100)" in err
    assert err.count("\n") == 1
    code, _, err = run_cli(["search", "--prior", "markov:toy3", "--out-csv", tmp_path / "f.csv"])
    assert code == 2 and "--out-csv writes a forecast: it needs --series" in err
    with pytest.raises(SDTError, match="none of the 1 samples holds 3 values"):
        forecast_rows([{"values": [1.0]}], context_from_array(np.arange(8.0), horizon=3), "dts")


@pytest.mark.skipif(not ETTH1.is_file(), reason="shared/data is not beside the checkout")
def test_experiment_forecasts_join_every_cell_under_its_label(tmp_path):
    """DIR/forecasts.csv: one row per (window, step) with the truth `y`, ETT windows dated from the
    file, M4 ones counted; a method with two cells gets method@budget/seedS labels."""
    from specdifftree.experiments.long_format import write_experiment_forecasts

    experiment = {"data_root": str(ETTH1.parents[1]), "datasets": [
        {"name": "ETTh1-OT-h2", "source": "ett", "file": "ett/ETTh1.csv", "column": "OT", "horizon": 2},
        {"name": "M4-h2", "source": "m4", "file": None, "column": "OT", "horizon": 2}]}
    (tmp_path / "experiment.json").write_text(json.dumps(experiment))

    def record(dataset, method, seed, window, values, target):
        return {"cell": {"dataset": dataset, "method": method, "budget": 100, "seed": seed},
                "windows": [{"window": window, "history": [1.0, 2.0, 3.0, 4.0], "target": target,
                             "samples": [{"values": v} for v in values]}]}

    records = [record("ETTh1-OT-h2", "dts", 0, "end=15000", [[1, 2], [3, 4], [5, 6]], [7.0, 8.0]),
               record("ETTh1-OT-h2", "dts", 1, "end=15000", [[2, 2]], [7.0, 8.0]),
               record("ETTh1-OT-h2", "naive", 0, "end=15000", [[4, 4]], [7.0, 8.0]),
               record("M4-h2", "naive", 0, "H7", [[9, 9], [9, 1]], [5.0, 6.0])]
    path = write_experiment_forecasts(tmp_path, records, levels=[80])
    header, rows = read_csv(path)
    assert header[:3] == ["unique_id", "ds", "y"]
    assert header[3:6] == ["dts@100/seed0", "dts@100/seed0-lo-80", "dts@100/seed0-hi-80"]
    assert "dts@100/seed1" in header and "naive" in header  # naive: one budget and seed on both datasets
    with ETTH1.open() as f:
        dates = [line.split(",")[0] for line in f][1:]
    ett = [r for r in rows if r["unique_id"] == "ETTh1-OT-h2/end=15000"]
    assert [r["ds"] for r in ett] == dates[15000:15002] and [float(r["y"]) for r in ett] == [7.0, 8.0]
    assert [float(r["dts@100/seed0"]) for r in ett] == [3.0, 4.0]  # the median of the samples per step
    m4 = [r for r in rows if r["unique_id"] == "M4-h2/H7"]
    assert [r["ds"] for r in m4] == ["4", "5"] and [float(r["naive"]) for r in m4] == [9.0, 5.0]
    assert m4[0]["dts@100/seed0"] == ""  # a cell without that window leaves its columns empty
