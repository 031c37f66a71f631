"""Prior specs (prior/spec.py, prior/sources.py), the public Python API, presets in configs/ and their precedence."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import specdifftree as sdt
from specdifftree.config import build, load_preset, merge, preset_names
from specdifftree.errors import SDTError
from specdifftree.data.context import context_from_array
from specdifftree.prior.sources import open_prior
from specdifftree.prior.spec import PRIOR_KINDS, absolute_spec, checkpoint_dir, parse_prior
from specdifftree.problem import Queries
from specdifftree.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "examples" / "toy.json")


# ------------------------------------------------------------------ the public API


def test_star_import_exposes_exactly_all():
    namespace: dict = {}
    exec("from specdifftree import *", namespace)
    names = {k for k in namespace if not k.startswith("__")}
    assert names == set(sdt.__all__)
    from specdifftree import api

    assert sorted(api.__all__) == sorted(sdt.__all__)  # the lazy re-export and its module agree


def test_importing_the_package_loads_no_heavy_module():
    code = "import sys, specdifftree; print(any(m in sys.modules for m in ('torch', 'transformers', 'specdifftree.api')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_search_api_on_a_builtin_problem_matches_the_cli(tmp_path, run_cli):
    result = sdt.generate("markov:toy3", method="dts", iterations=300, samples=200, seed=3)
    code, _, err = run_cli(["search", "--prior", "markov:toy3", "--method", "dts", "--iterations", "300",
                            "--samples", "200", "--seed", "3", "--out", tmp_path / "o.json", "-q"])
    assert code == 0, err
    record = json.loads((tmp_path / "o.json").read_text())
    assert [s.tokens for s in result.samples] == [s["tokens"] for s in record["samples"]]
    assert result.forward_tokens == record["stats"]["forward_tokens"]
    prior = Queries.open("markov:toy3").problem().prior
    assert record["weights"] == {"sha256": prior.weights_sha256(), "checkpoint": None, "installed_prior": False}


def test_one_opened_prior_serves_many_problems_each_with_its_own_meter():
    queries = Queries.open("markov:toy3")
    a, b = queries.problem(), queries.problem()
    assert a.prior is not b.prior and a.prior.cost is not b.prior.cost
    first = sdt.generate(queries, method="sample", samples=20, seed=0)
    again = sdt.generate(queries, method="sample", samples=20, seed=0, budget=30)
    assert 30 <= again.forward_tokens < first.forward_tokens  # the budget counts this run's work only
    from specdifftree.search.registry import run_search

    run_search(a, "dts", sdt.SearchConfig(iterations=20))
    assert a.spent() > 0 and b.spent() == 0


def test_context_from_array():
    x = np.sin(np.arange(64) / 3.0)
    ctx = context_from_array(x, horizon=8, target=np.zeros(8), meta={"window": 1})
    assert ctx.horizon == 8 and ctx.codec is not None and ctx.meta == {"window": 1} and len(ctx.series) == 64
    with pytest.raises(SDTError, match="at least 4"):
        context_from_array([1.0, 2.0], horizon=3)
    with pytest.raises(SDTError, match="target holds 3"):
        context_from_array(x, horizon=8, target=np.zeros(3))
    with pytest.raises(SDTError, match="horizon must be >= 1"):
        context_from_array(x, horizon=0)


@pytest.mark.slow
def test_quickstart_runs(default_backbone):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["method", "forward", "tokens", "mean", "reward", "MASE"]
    assert [line.split()[0] for line in lines[1:4]] == ["sample", "best-of-n", "dts"]
    assert all(int(line.split()[1]) > 0 for line in lines[1:4])
    assert lines[-1].startswith("flow network:") and "sadt-sample spent" in lines[-1]


# ------------------------------------------------------------------ prior specs


@pytest.mark.parametrize("spec,kind,arg", [
    ("default", "default", ""), ("hf:runs/bb", "hf", "runs/bb"), ("gguf:m.gguf", "gguf", "m.gguf"),
    ("markov:toy3", "markov", "toy3"), ("hf:C:/models/x", "hf", "C:/models/x"),
])
def test_parse_prior(spec, kind, arg):
    assert parse_prior(spec) == (parse_prior(spec).__class__)(kind, arg, spec)


def test_parse_prior_errors_and_checkpoint_dirs(tmp_path):
    assert parse_prior(str(tmp_path)).kind == "checkpoint"
    with pytest.raises(SDTError, match="Did you mean 'markov'"):
        parse_prior("markv:toy3")
    with pytest.raises(SDTError, match="unknown prior 'hf:'"):
        parse_prior("hf:")
    with pytest.raises(SDTError, match="not a prior checkpoint"):
        open_prior(str(tmp_path))
    assert set(PRIOR_KINDS) >= {"markov", "default", "hf", "gguf", "checkpoint"}


def test_absolute_spec(tmp_path):
    (tmp_path / "bb").mkdir()
    assert absolute_spec(f"hf:{tmp_path / 'bb'}") == f"hf:{(tmp_path / 'bb').resolve()}"
    assert absolute_spec("default") == "default" and absolute_spec("hf:org/model") == "hf:org/model"


# ------------------------------------------------------------------ presets and precedence


def test_train_presets_come_from_configs():
    assert set(preset_names("train")) >= {"test", "smoke", "default", "full"}
    smoke = TrainConfig.from_name("smoke")
    assert (smoke.preset, smoke.n_train, smoke.lr, smoke.encoder.width, smoke.encoder.layers) == ("smoke", 384, 3e-3, 64, 2)
    assert smoke.encoder.patch == TrainConfig().encoder.patch  # nested fields not in the file keep their defaults
    assert dataclasses.asdict(TrainConfig.from_name("default")) == dataclasses.asdict(TrainConfig())
    assert TrainConfig.from_name("smoke", {"epochs": 1}).epochs == 1  # the command line wins over the file
    with pytest.raises(SDTError, match="unknown train preset 'smok'. Did you mean 'smoke'"):
        TrainConfig.from_name("smok")


def test_build_refuses_unknown_keys_and_merge_deletes_with_none():
    with pytest.raises(SDTError, match="unknown TrainConfig field 'epoch' \\(did you mean 'epochs'"):
        build(TrainConfig, {"epoch": 3})
    with pytest.raises(SDTError, match="unknown EncoderConfig field"):
        build(TrainConfig, {"encoder": {"widht": 3}})
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": None, "d": 4}}) == {"a": {"b": 1, "d": 4}}


def test_search_preset_and_config_precedence(tmp_path, run_cli):
    assert load_preset("search", "exact")["iterations"] == 5000
    config = tmp_path / "c.yaml"
    config.write_text("iterations: 40\nsamples: 7\n")
    base = ["search", "--prior", "markov:toy3", "-q", "--out"]
    for extra, want in [(["--preset", "exact", "--samples", "9"], (9, 5000)),
                        (["--preset", "exact", "--config", config], (7, 40)),
                        (["--config", config, "--preset", "exact"], (7, 40)),
                        (["--config", config, "--iterations", "30"], (7, 30))]:
        out = tmp_path / "o.json"
        code, _, err = run_cli([*base, out, *extra])
        assert code == 0, err
        cfg = json.loads(out.read_text())["config"]
        assert (cfg["samples"], cfg["iterations"]) == want, extra
    code, _, err = run_cli([*base, tmp_path / "x.json", "--preset", "nosuch"])
    assert code == 2 and "nosuch" in err


def test_prior_install_is_explicit(tmp_path, monkeypatch, run_cli):
    from specdifftree.paths import installed_prior_dir
    from specdifftree.prior.model import PriorParts

    monkeypatch.setenv("SDT_HOME", str(tmp_path / "home"))
    PriorParts.fresh(258, "default", encoder_config=TrainConfig.from_name("test").encoder).save(tmp_path / "ckpt")
    code, out, err = run_cli(["prior", "install", tmp_path / "ckpt"])
    assert code == 0, err
    assert str(installed_prior_dir()) in out and (installed_prior_dir() / "weights.safetensors").is_file()
    assert checkpoint_dir(parse_prior("default")) == installed_prior_dir()  # what --out records as installed_prior
    code, out, _ = run_cli(["prior", "uninstall"])
    assert code == 0 and "removed" in out and not installed_prior_dir().exists()
    code, _, err = run_cli(["prior", "install", tmp_path])
    assert code == 2 and "not a prior checkpoint" in err
