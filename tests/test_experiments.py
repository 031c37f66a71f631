"""`sdt experiment run` and `sdt compare`: config, windows, metrics, budget sizing, and a small grid end to end."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from specdifftree.data.splits import ett_range, m4_is_eval
from specdifftree.errors import SDTError
from specdifftree.experiments.config import DatasetSpec, load_experiment, merge
from specdifftree.experiments.metrics import diversity, mean_se, window_metrics

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "experiments" / "sadt_table.yaml"
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "ett" / "ETTh1.csv").is_file() or not (DATA / "m4").is_dir(),
                                reason="needs ../shared/data (ETT and M4) beside the checkout")
REQUIRED_METHODS = ["sample", "greedy", "best-of-n", "beam", "smc", "mcts", "dts", "dts-star", "sadt", "sadt-sample"]
REFERENCE_METHODS = ["naive", "seasonal-naive", "auto-ets", "auto-theta"]


# --------------------------------------------------------------------------------------- config


def test_sadt_table_and_its_presets_load():
    table = load_experiment(TABLE)
    assert [m.name for m in table.methods] == REQUIRED_METHODS + REFERENCE_METHODS
    assert {m.name: m.method for m in table.methods}["auto-ets"] == "stats:auto-ets"
    for preset in ("smoke", "etth2", "m4", "reference", "prior", "target", "full", "val", "temperature", "tiny"):  # every table has the reference rows
        assert set(REFERENCE_METHODS) <= {m.name for m in load_experiment(TABLE, preset).methods}, preset
    scale = {m.name: m.budget_scale for m in table.methods}
    assert scale["sadt"] <= 0.05 and scale["dts"] == 1.0  # the S-ADT claim: <= 5% of DTS's tokens
    assert [d.name for d in table.datasets] == ["ETTh1-OT-h24"]
    full = load_experiment(TABLE, "full")
    assert {d.name for d in full.datasets} == {"ETTh1-OT-h24", "ETTh2-OT-h24", "M4-Hourly-h48"}
    assert full.datasets[0].horizon == 24 and full.datasets[0].windows == 16  # preset merged key by key
    smoke = load_experiment(TABLE, "smoke")
    assert [d.name for d in smoke.datasets] == ["ETTh1-OT-h24"] and smoke.datasets[0].windows == 3
    assert smoke.seeds == [0] and smoke.search["lam"] == table.search["lam"]
    val = load_experiment(TABLE, "val")
    assert val.datasets[0].part == "val" and table.datasets[0].part == "eval"
    variants = [m for m in val.methods if m.name.startswith("sadt-") and m.name != "sadt-sample"]
    assert variants and all(m.method == "sadt" and m.budget_scale == scale["sadt"] for m in variants)
    assert [d.name for d in load_experiment(TABLE, "etth2").datasets] == ["ETTh2-OT-h24"]
    target = load_experiment(TABLE, "target")  # issue 14's MASE target: the tables' own DTS cells
    tables = {d.name: d for p in (None, "etth2", "m4") for d in load_experiment(TABLE, p).datasets}
    assert target.seeds == table.seeds and {d.name: d for d in target.datasets} == tables
    methods = {m.method for m in target.methods}
    assert {"greedy", "sample", "dts"} <= methods and not methods & {"sadt", "sadt-sample"}  # no flow network
    temperature = load_experiment(TABLE, "temperature")  # tuning presets read validation windows alone
    assert {d.part for d in temperature.datasets} == {"val"} and {d.name for d in temperature.datasets} == set(tables)
    assert {m.params.get("temperature", 1.0) for m in temperature.methods if m.method == "sample"} >= {1.0, 0.5}
    for preset in ("full", "h96", "tiny", "etth2"):
        assert load_experiment(TABLE, preset).preset == preset
    assert load_experiment(TABLE, "tiny", prior="markov:toy3").prior == "markov:toy3"


def test_merge_deep_and_null_deletes():
    assert merge({"a": {"x": 1, "y": 2}, "b": [1]}, {"a": {"y": None, "z": 3}, "b": [2]}) == {"a": {"x": 1, "z": 3}, "b": [2]}


@pytest.mark.parametrize("text, message", [
    ("name: x\nprior: default\nreward: spectral\nbudgets: [10]\ndatasets: {}\nmethods: {dts: {}}\n", "missing datasets"),
    ("name: x\nprior: default\nreward: spectral\nbudgets: [0]\ndatasets: {d: {source: m4, horizon: 4}}\n"
     "methods: {dts: {}}\n", "budgets must be"),
    ("name: x\nprior: default\nreward: spectral\nbudgets: [10]\ndatasets: {d: {source: m4, horizon: 4}}\n"
     "methods: {dts: {iteratoins: 3}}\n", "did you mean 'iterations'"),
    ("name: x\nprior: default\nreward: spectral\nbudgets: [10]\ndatasets: {d: {source: m4, horizon: 4}}\n"
     "methods: {dts: {budget: 3}}\n", "come from the grid"),
    ("name: x\nprior: default\nreward: spectral\nbudgets: [10]\ndatasets: {d: {source: csv, horizon: 4}}\n"
     "methods: {dts: {}}\n", "source must be"),
    ("name: x\nprior: default\nreward: spectral\nbudgets: [10]\ndatasets: {d: {source: m4, horizon: 4}}\n"
     "methods: {dts: {}}\nflow: {contexts: 2, search: {lam: 3}}\n", "lam comes from"),
    ("name: x\nprior: default\nreward: spectral\nbudgets: [10]\ndatasets: {d: {source: m4, horizon: 4}}\n"
     "methods: {dts: {}}\nbudgest: [3]\n", "unknown key 'budgest'"),
    ("name: x\nprior: default\nreward: spectral\nbudgets: [10]\ndatasets: {d: {source: m4, horizon: 4, part: test}}\n"
     "methods: {dts: {}}\n", "part must be one of eval, val"),
    ("name: x\nprior: default\nreward: spectral\nbudgets: [10]\ndatasets: {d: {source: m4, horizon: 4}}\n"
     "methods: {dts-x: {method: 3}}\n", "method must be a search method"),
    ("- just a list\n", "expected a YAML mapping"),
])
def test_bad_experiment_files_are_one_line_errors(tmp_path, text, message, run_cli):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    code, _, err = run_cli(["experiment", "run", path, "--out", tmp_path / "o", "--no-wandb"])
    assert code == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [["experiment", "--help"], ["experiment", "run", "--help"], ["compare", "--help"]])
def test_help_has_examples(args, run_cli):
    code, out, _ = run_cli(args)
    assert code == 0 and "Examples:" in out and "sdt " in out.split("Examples:")[1]


def test_unknown_preset(run_cli):
    code, _, err = run_cli(["experiment", "run", TABLE, "--preset", "nope"])
    assert code == 2 and "no preset 'nope'" in err and "smoke" in err


# --------------------------------------------------------------------------------------- windows


@needs_data
def test_eval_windows_stay_inside_the_eval_part():
    from specdifftree.data.sources import read_ett, read_m4
    from specdifftree.experiments.datasets import windows

    spec = DatasetSpec("e", "ett", horizon=24, context_length=96, windows=5, file="ett/ETTh1.csv")
    ot = read_ett(DATA / "ett" / "ETTh1.csv", ["OT"])["OT"]
    for part in ("eval", "val", "flow-train"):
        lo, hi = ett_range(len(ot), part)
        ws = windows(spec, DATA, part)
        assert len(ws) == 5
        for w in ws:
            end = int(w.key.split("=")[1])
            assert lo <= end - 96 and end + 24 <= hi  # context and target both inside the part
            np.testing.assert_array_equal(w.history, ot[end - 96:end])
            if part == "flow-train":
                assert w.target is None
            else:
                np.testing.assert_array_equal(w.target, ot[end:end + 24])
    assert ett_range(len(ot), "flow-train")[1] <= ett_range(len(ot), "val")[0]  # tuning never sees flow data
    assert windows(replace(spec, part="val"), DATA)[0].key == windows(spec, DATA, "val")[0].key
    m4 = DatasetSpec("m", "m4", horizon=48, context_length=192, windows=3)
    rows = read_m4(DATA / "m4" / "Hourly-train.csv", DATA / "m4" / "Hourly-test.csv")
    index = {s.id: i for i, s in enumerate(rows)}
    for w in windows(m4, DATA, "eval"):
        s = rows[index[w.key]]
        assert m4_is_eval(index[w.key])
        np.testing.assert_array_equal(w.target, s.test)  # the official test row is the ground truth
        np.testing.assert_array_equal(w.history, s.values[-192:])
    train = windows(m4, DATA, "flow-train")
    assert all(not m4_is_eval(index[w.key]) and w.target is None for w in train)
    val = windows(m4, DATA, "val")
    assert not {w.key for w in val} & {w.key for w in train}
    for w in val:
        s = rows[index[w.key]]
        assert not m4_is_eval(index[w.key])
        np.testing.assert_array_equal(np.concatenate([w.history, w.target]), s.values[-240:])


# --------------------------------------------------------------------------------------- metrics


def test_window_metrics_and_diversity():
    history = np.sin(np.arange(48) / 3.0) * 2 + 10
    target = history[:6] + 0.5
    same = [{"values": list(target), "reward": -1.0, "text": "a"}] * 3
    m = window_metrics(same, {"forward_tokens": 9, "model_calls": 2, "wall_s": 0.1, "tree_nodes": 0},
                       history, target, 6, season=12)
    assert m["crps"] == pytest.approx(0.0) and m["mase"] == pytest.approx(0.0) and m["smape"] == pytest.approx(0.0)
    assert m["diversity"] == 0.0 and m["distinct"] == pytest.approx(1 / 3) and m["well_formed"] == 1.0
    x = np.array([[0.0, 0.0], [1.0, 3.0]])
    assert diversity(x, scale=2.0) == pytest.approx(1.0)  # mean |diff| = 2, over scale 2
    bad = [{"values": [1.0], "reward": -10.0, "text": "1"}, {"values": list(target), "reward": -2.0, "text": "b"}]
    m = window_metrics(bad, m, history, target, 6, season=12)
    assert m["well_formed"] == 0.5 and m["reward"] == -6.0 and m["reward_max"] == -2.0 and m["crps"] == pytest.approx(0.0)
    assert mean_se([1.0, 3.0]) == pytest.approx((2.0, 1.0)) and np.isnan(mean_se([4.0])[1])


def test_budget_sizing_follows_the_cap():
    from specdifftree.experiments.config import MethodSpec
    from specdifftree.experiments.runner import Cell, answer_tokens, sized_config
    from specdifftree.prior.markov import MarkovPrior

    cfg = load_experiment(TABLE)
    prior = MarkovPrior.from_json(str(ROOT / "examples" / "digits.json"))  # no prompt: P = 0, max_len 48
    ds = DatasetSpec("d", "m4", horizon=24)
    from specdifftree.data.context import Context

    ctx = Context(horizon=24)  # no series: T = max_len
    assert answer_tokens(prior, ctx) == 48
    size = {m: sized_config(cfg, Cell(ds, MethodSpec(m), 4800, 0), prior, ctx) for m in ("best-of-n", "beam", "smc", "dts")}
    assert size["best-of-n"].n == 100 and size["beam"].beam_width == 100 and size["smc"].particles == 64
    assert size["dts"].batch_size == 16 and size["dts"].budget == 4800 and size["dts"].iterations >= 10**9
    small = sized_config(cfg, Cell(ds, MethodSpec("dts"), 480, 3), prior, ctx)
    assert small.batch_size == 2 and small.seed == 3  # a round is at most about a quarter of the cap
    sadt = sized_config(cfg, Cell(ds, MethodSpec("sadt", 0.5), 4800, 0), prior, ctx)
    assert sadt.batch_size == 12 and sadt.budget == 2400 - 12 * 48  # q rollouts: the last round fits the cap
    flow = sized_config(cfg, Cell(ds, MethodSpec("sadt", 0.5, {"rollout": "flow"}), 4800, 0), prior, ctx)
    assert flow.budget == 2400 - 16 * 48 and flow.batch_size == 16  # room for 16 completions of T tokens
    variant = sized_config(cfg, Cell(ds, MethodSpec("sadt-b2", 0.5, {"batch_size": 2}, "sadt"), 4800, 0), prior, ctx)
    assert variant.batch_size == 2 and variant.budget == 2400 - 2 * 48  # a variant is sized as its method
    own = sized_config(cfg, Cell(ds, MethodSpec("best-of-n", 0.5, {"n": 7}), 4800, 0), prior, ctx)
    assert own.n == 7 and own.budget == 2400  # the method's own options win; budget_scale scales the cap


# --------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_prior(tiny_hf, tmp_path_factory) -> Path:
    """A prior checkpoint DIR: fresh encoder + head over the tiny random Llama with the byte tokenizer."""
    from specdifftree.prior.model import PriorParts

    path = tmp_path_factory.mktemp("prior") / "ckpt"
    PriorParts.fresh(258, f"hf:{tiny_hf}").save(path)
    return path


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@needs_data
@pytest.mark.slow
def test_grid_end_to_end_resume_and_compare(tiny_prior, tmp_path, monkeypatch, one_thread, run_cli):
    """The `tiny` preset of sadt_table.yaml: 5 methods (sadt and sadt-sample on a flow network the
    runner trains first) and the 4 reference forecasters x 2 datasets (ETTh1, M4) x 1 budget x 2
    seeds, offline W&B."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("SDT_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    args = ["experiment", "run", TABLE, "--preset", "tiny", "--prior", tiny_prior, "--out", out]
    code, stdout, err = run_cli(args)
    assert code == 0, err
    methods = ["sample", "greedy", "dts", "sadt", "sadt-sample"] + REFERENCE_METHODS
    datasets, seeds = ["ETTh1-OT-h24", "M4-Hourly-h48"], ["0", "1"]
    rows = _read_csv(out / "results.csv")
    assert len(rows) == len(methods) * len(datasets) * len(seeds) and "36 cell(s) run" in stdout
    assert {(r["method"], r["dataset"], r["seed"]) for r in rows} == {(m, d, s) for m in methods for d in datasets for s in seeds}
    for r in rows:
        assert r["windows"] == ("2" if r["dataset"].startswith("ETTh1") else "1")
        reference = r["method"] in REFERENCE_METHODS
        assert (float(r["forward_tokens"]) == 0) == reference and float(r["well_formed"]) == 1.0
        assert len(r["backbone_sha256"]) == 64 and len(r["prior_sha256"]) == 64 and r["torch"] and r["cpu"]
        assert np.isfinite([float(r[k]) for k in ("crps", "mase", "smape", "spec_w1", "reward", "diversity")]).all()
        assert int(r["cap"]) == (450 if r["method"].startswith("sadt") else 900)
    assert (out / "flow" / "experiment_flow.json").is_file()  # trained on flow-part contexts first

    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 36
    for cell in cells:
        rec = json.loads((cell / "record.json").read_text())
        H = rec["cell"]["horizon"]
        assert len(rec["windows"]) == rec["cell"]["windows"]
        for w in rec["windows"]:
            assert len(w["target"]) == H and w["samples"] and all(len(s["values"]) == H for s in w["samples"])
        assert list((cell / "wandb").glob("offline-run-*")), cell.name  # one offline W&B run per cell
        events = [json.loads(line)["event"] for line in (cell / "tracking.jsonl").read_text().splitlines()]
        assert events[0] == "start" and events[-1] == "finish" and "image" in events and "table" in events
        assert (cell / "fan.png").stat().st_size > 0
    sadt = json.loads((out / "cells" / "ETTh1-OT-h24__sadt__b900__s0" / "record.json").read_text())
    assert sadt["config"]["search"]["flow"] == str(out / "flow") and sadt["cell"]["cap"] == 450
    assert sadt["config"]["search"]["budget"] < 450  # room kept for completing the final samples

    # a rerun skips every finished cell; a lost record is recomputed, identically (same seeds)
    lost = out / "cells" / "ETTh1-OT-h24__dts__b900__s1" / "record.json"
    before = json.loads(lost.read_text())
    lost.unlink()
    code, stdout, err = run_cli(args)
    assert code == 0, err
    assert "1 cell(s) run, 35 already finished" in stdout and "reusing" in err
    after = json.loads(lost.read_text())
    assert len(list((lost.parent / "wandb").glob("offline-run-*"))) == 1  # the unfinished attempt was cleared
    assert [w["samples"] for w in after["windows"]] == [w["samples"] for w in before["windows"]]

    # the same directory with another prior is refused, not mixed
    code, _, err = run_cli([*args[:-4], "--prior", "markov:toy3", "--out", out])
    assert code == 2 and "was run with prior" in err and "markov:toy3" in err

    code, stdout, err = run_cli(["compare", out, "--out", tmp_path / "plots"])
    assert code == 0, err
    header = stdout.splitlines()[0]
    assert header.startswith("| dataset") and "spec_w1" in header and "crps" in header
    table = [line for line in stdout.splitlines() if line.startswith("| ") and "±" in line]
    assert len(table) == len(methods) * len(datasets)  # one row per (dataset, method, budget), two seeds each
    made_with = stdout.split("Made with:")[1].splitlines()[1]
    assert rows[0]["backbone_sha256"] in made_with and "torch " in made_with and "CPU " in made_with
    for name in ("reward_vs_tokens.png", "psd.png", "fans.png", "table.md"):
        assert (tmp_path / "plots" / name).stat().st_size > 0


def test_compare_errors(tmp_path, monkeypatch, run_cli):
    code, _, err = run_cli(["compare", tmp_path])
    assert code == 2 and "no finished cells" in err
    monkeypatch.setenv("WANDB_MODE", "offline")
    code, _, err = run_cli(["compare", "--wandb-project", "me/p"])
    assert code == 2 and "needs a login" in err
    code, _, err = run_cli(["compare"])
    assert code == 2 and "nothing to compare" in err


@needs_data
def test_unknown_or_flowless_methods_are_skipped_with_a_message(tmp_path):
    """Methods this checkout does not have, and flow methods without a flow, are skipped, not fatal."""
    from specdifftree.experiments.config import from_dict
    from specdifftree.experiments.runner import run_experiment

    raw = {"name": "t", "prior": f"markov:{ROOT / 'examples' / 'digits.json'}", "reward": "format", "budgets": [40],
           "datasets": {"d": {"source": "ett", "file": "ett/ETTh1.csv", "horizon": 4, "context_length": 32,
                              "windows": 1}},
           "methods": {"nosuch": {}, "sadt": {}, "greedy": {}}, "data_root": str(DATA)}
    said = []
    done = run_experiment(from_dict(raw), tmp_path, wandb=False, progress=False, log=said.append)
    assert done.ran == ["d__greedy__b40__s0"] and set(done.unavailable) == {"nosuch", "sadt"}
    assert any("nosuch" in s for s in said) and any("flow network" in s for s in said)
    with pytest.raises(SDTError, match="flow must be"):
        from_dict({**raw, "flow": 3})


@pytest.mark.slow
@needs_data
def test_the_backbone_loads_once_per_run(tiny_prior, tmp_path, monkeypatch, one_thread):
    """Every window of every cell shares one loaded backbone; each window's problem meters its own cost."""
    from specdifftree.experiments.config import from_dict
    from specdifftree.experiments.runner import run_experiment
    from specdifftree.prior.backbones.hf import HFBackbone

    loads = []
    real = HFBackbone.from_pretrained.__func__
    monkeypatch.setattr(HFBackbone, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(a) or real(cls, *a, **k)))
    raw = {"name": "t", "prior": str(tiny_prior), "reward": "spectral", "budgets": [300], "seeds": [0],
           "search": {"samples": 2, "batch_size": 2},
           "datasets": {"d": {"source": "ett", "file": "ett/ETTh1.csv", "horizon": 4, "context_length": 32,
                              "windows": 3}},
           "methods": {"sample": {}, "dts": {}}, "data_root": str(DATA)}
    done = run_experiment(from_dict(raw), tmp_path, wandb=False, progress=False, log=lambda m: None)
    assert len(done.ran) == 2 and len(loads) == 1
    dts = json.loads((tmp_path / "cells" / "d__dts__b300__s0" / "record.json").read_text())
    spent = [w["metrics"]["forward_tokens"] for w in dts["windows"]]
    assert len(spent) == 3 and all(300 <= s <= 600 for s in spent)  # each window spends its own cap, no less


def test_provenance_names_weights_versions_and_cpu(tmp_path):
    import hashlib

    from specdifftree.experiments.provenance import PROVENANCE_KEYS, describe_provenance, provenance

    digits = ROOT / "examples" / "digits.json"
    p = provenance(f"markov:{digits}")
    assert set(p) == set(PROVENANCE_KEYS)
    assert p["backbone_sha256"] == hashlib.sha256(digits.read_bytes()).hexdigest() and p["prior_sha256"] == ""
    assert p["numpy"] == np.__version__ and p["cpu"] and p["cpu_count"] >= 1
    assert provenance("markov:toy3")["backbone_sha256"] == ""  # built in: no weights file
    one = describe_provenance([p, dict(p)])
    assert one.startswith("Made with:") and p["backbone_sha256"] in one and one.count("\n- ") == 1
    two = describe_provenance([p, {**p, "cpu": "another CPU"}])
    assert two.startswith("Made with 2 different setups") and "another CPU" in two
    assert "not recorded" in describe_provenance([{"method": "dts"}])


# --------------------------------------------------------------------------------------- on Ray


def _grid(tiny_prior: Path) -> dict:
    """The smallest grid through every path of the runner: search methods, a reference forecaster,
    and sadt-sample on a flow network trained first; 2 seeds, 1 window."""
    return {"name": "ray", "prior": str(tiny_prior), "reward": "spectral", "budgets": [300], "seeds": [0, 1],
            "search": {"samples": 2, "batch_size": 2},
            "datasets": {"d": {"source": "ett", "file": "ett/ETTh1.csv", "horizon": 4, "context_length": 32,
                               "windows": 1}},
            "methods": {"greedy": {}, "dts": {}, "naive": {}, "sadt-sample": {"budget_scale": 0.5}},
            "flow": {"contexts": 2, "search": {"iterations": 6, "batch_size": 2, "samples": 2},
                     "amortize": {"steps": 4, "eval_every": 2, "batch_size": 4, "hidden": 16, "val_samples": 1}},
            "data_root": str(DATA), "resources": {"num_cpus": 1, "num_gpus": 0}, "max_retries": 1}


def _rows_without_wall_times(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in _read_csv(path)]


def _run_grid(run_cli, tmp_path, tiny_prior, name: str, *ray_args) -> Path:
    import yaml

    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(_grid(tiny_prior)))
    out = tmp_path / name
    code, _, err = run_cli(["experiment", "run", config, "--out", out, "--no-wandb", *ray_args])
    assert code == 0, err
    return out


@needs_data
@pytest.mark.slow
def test_ray_grid_writes_the_serial_results(tiny_prior, tmp_path, monkeypatch, one_thread, run_cli):
    """`--ray` (a local Ray instance): the same results.csv rows as a serial run, wall times aside, the
    flow trained once before the flow cells; a rerun skips every finished cell."""
    monkeypatch.setenv("SDT_HOME", str(tmp_path / "home"))
    serial = _run_grid(run_cli, tmp_path, tiny_prior, "serial")
    on_ray = _run_grid(run_cli, tmp_path, tiny_prior, "ray", "--ray")
    rows = _rows_without_wall_times(on_ray / "results.csv")
    assert len(rows) == 8 and rows == _rows_without_wall_times(serial / "results.csv")
    assert (on_ray / "flow" / "experiment_flow.json").is_file()
    assert sorted(p.name for p in (on_ray / "cells").iterdir()) == sorted(p.name for p in (serial / "cells").iterdir())
    code, stdout, err = run_cli(["experiment", "run", tmp_path / "grid.yaml", "--out", on_ray, "--no-wandb", "--ray"])
    assert code == 0 and "0 cell(s) run, 8 already finished" in stdout, err


@pytest.mark.slow
@needs_data
def test_a_killed_flow_training_resumes_without_searching_again(tiny_prior, tmp_path, monkeypatch, one_thread):
    """The experiment's flow network, killed during its buffer searches and again during training:
    the rerun searches only the contexts left and continues the training from its last commit, to
    the same buffer and the same flow bytes as an uninterrupted run; another plan starts afresh."""
    from specdifftree.amortize import pipeline
    from specdifftree.amortize.buffer import read_buffer
    from specdifftree.amortize.train import STATE
    from specdifftree.experiments.amortization import train_experiment_flow
    from specdifftree.experiments.config import flow_training, from_dict

    grid = _grid(tiny_prior)
    grid["flow"] = {**grid["flow"], "contexts": 3, "amortize": {**grid["flow"]["amortize"], "steps": 20, "save_every": 2}}
    cfg = from_dict(grid)
    ft = flow_training(cfg.flow)
    whole = train_experiment_flow(cfg, ft, tmp_path / "whole" / "flow", log=lambda *_: None)

    searched, real_search = [], pipeline._search_into

    def search(*args, **kw):
        if len(searched) == 2 and not (tmp_path / "killed").exists():
            (tmp_path / "killed").touch()
            raise KeyboardInterrupt  # killed during the third context's search
        searched.append(1)
        return real_search(*args, **kw)

    monkeypatch.setattr(pipeline, "_search_into", search)
    monkeypatch.setattr(pipeline, "BUFFER_QUERIES", 1)  # one context per lockstep chunk: a kill falls between two
    flow_dir = tmp_path / "run" / "flow"
    with pytest.raises(KeyboardInterrupt):
        train_experiment_flow(cfg, ft, flow_dir, log=lambda *_: None)
    assert len(read_buffer(tmp_path / "run" / "flow-buffer.safetensors")[1]) == 2

    from specdifftree.amortize import train as amortize_train
    real_commit = amortize_train.commit_loop

    def commit(path, run_id, net, opt, sched, rng, loop):
        real_commit(path, run_id, net, opt, sched, rng, loop)
        if loop.step == 8 and not (tmp_path / "killed-training").exists():
            (tmp_path / "killed-training").touch()
            raise KeyboardInterrupt  # killed right after the commit of step 8

    monkeypatch.setattr(amortize_train, "commit_loop", commit)
    with pytest.raises(KeyboardInterrupt):
        train_experiment_flow(cfg, ft, flow_dir, log=lambda *_: None)
    assert len(searched) == 3 and (flow_dir / STATE).is_file()  # 2 + the one left; training began
    said, restored, real_restore = [], [], amortize_train.restore_loop

    def restore(*args):
        loop = real_restore(*args)
        restored.append(loop.step)
        return loop

    monkeypatch.setattr(amortize_train, "restore_loop", restore)
    train_experiment_flow(cfg, ft, flow_dir, log=said.append)
    assert len(searched) == 3 and any("resuming" in s for s in said)  # nothing searched again
    assert [s.split(":")[1] for s in said if "from the buffer" in s] == [" buffer 1/3", " buffer 2/3", " buffer 3/3"]
    assert restored == [8]  # the training went on from its last commit
    assert (flow_dir / "weights.safetensors").read_bytes() == (whole / "weights.safetensors").read_bytes()
    _, done = read_buffer(tmp_path / "run" / "flow-buffer.safetensors")
    _, ref = read_buffer(tmp_path / "whole" / "flow-buffer.safetensors")
    assert [r.context for r in done] == [r.context for r in ref]
    assert all(np.array_equal(a.actions, b.actions) and np.array_equal(a.reward, b.reward) for a, b in zip(done, ref))

    said.clear()
    train_experiment_flow(cfg, ft, flow_dir, log=said.append)  # finished, same plan: reused as it is
    assert len(searched) == 3 and any("reusing" in s for s in said)
    (tmp_path / "alias").symlink_to(Path(grid["prior"]).resolve(), target_is_directory=True)
    said.clear()  # the same prior weights named by another path: the same plan
    train_experiment_flow(from_dict({**grid, "prior": str(tmp_path / "alias")}), ft, flow_dir, log=said.append)
    assert len(searched) == 3 and any("reusing" in s for s in said)
    other = from_dict({**grid, "flow": {**grid["flow"], "contexts": 2}})  # another plan: its flow is not reused
    said.clear()
    train_experiment_flow(other, flow_training(other.flow), flow_dir, log=said.append)
    assert len(searched) == 5 and len(read_buffer(tmp_path / "run" / "flow-buffer.safetensors")[1]) == 2
    assert any("another plan" in s for s in said) and not any("reusing" in s for s in said)


def test_resources_and_retries_are_checked(tmp_path, capsys):
    from specdifftree.experiments.config import from_dict

    raw = {"name": "x", "prior": "default", "reward": "spectral", "budgets": [10],
           "datasets": {"d": {"source": "m4", "horizon": 4}}, "methods": {"dts": {}}}
    cfg = from_dict(raw)
    assert cfg.resources == {"num_cpus": 1, "num_gpus": 0} and cfg.max_retries == 2
    assert from_dict({**raw, "resources": {"num_gpus": 0.5}}).resources == {"num_cpus": 1, "num_gpus": 0.5}
    for bad, message in [({"resources": {"gpus": 1}}, "unknown key 'gpus'"), ({"resources": {"num_cpus": -1}}, ">= 0"),
                         ({"max_retries": -1}, "max_retries must be")]:
        with pytest.raises(SDTError, match=message):
            from_dict({**raw, **bad})


@pytest.mark.slow
def test_ray_tasks_are_retried_and_failures_reported(tmp_path):
    """A task that fails once is retried (max_retries); one that always fails comes back as its error."""
    from specdifftree.experiments.on_ray import RaySession

    def flaky(marker: str, i: int) -> int:
        import os

        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("first attempt fails")
        return i

    def broken() -> None:
        raise SDTError("always fails")

    done = []
    with RaySession("local", {"num_cpus": 1, "num_gpus": 0}, max_retries=1) as session:
        assert session.call(flaky, str(tmp_path / "m1"), 7) == 7
        failed = session.map(lambda k: flaky(str(tmp_path / f"n{k}"), k) if k < 2 else broken(), [(0,), (1,), (2,)],
                             done.append)
    assert sorted(done) == [0, 1] and len(failed) == 1 and failed[0][0] == 2
    assert isinstance(failed[0][1], SDTError) and "always fails" in str(failed[0][1])


def test_reward_plot_draws_free_methods_as_lines_and_tells_twelve_methods_apart(tmp_path, monkeypatch):
    """Reference forecasters (0 forward tokens) cannot sit on the log axis: each is a horizontal line
    at its mean; past ten methods the colours repeat, so the marker changes."""
    from specdifftree.experiments import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    rows = [{"dataset": "d", "method": f"m{k}", "budget": 100, "forward_tokens": 100.0 * (k + 1), "reward": -k,
             "reward_se": 0.1, "spec_w1": 0.01 * k, "spec_w1_se": 0.0} for k in range(12)]
    rows.append({"dataset": "d", "method": "naive", "budget": 100, "forward_tokens": 0.0, "reward": -0.5,
                 "reward_se": 0.0, "spec_w1": 0.03, "spec_w1_se": 0.0})
    plots.plot_reward_vs_tokens(rows, tmp_path / "p.png")
    reward_ax, spec_ax = figs[0].axes[:2]
    handles, labels = reward_ax.get_legend_handles_labels()
    naive = handles[labels.index("naive (0 tokens)")]
    assert list(naive.get_ydata()) == [-0.5, -0.5]
    assert [float(y) for y in spec_ax.get_lines()[-1].get_ydata()] == [0.03, 0.03]
    styles = {(h.lines[0].get_color(), h.lines[0].get_marker()) for h, label in zip(handles, labels)
              if label.startswith("m")}
    assert len(styles) == 12
