"""Validate, then load: every command checks its options, files, reward specs, method names, presets
and output paths before it imports torch or loads a model. Each bad invocation runs as a real
`sdt` process (the wall time includes the imports) and must end with exit code 2 and one line,
`error: ...`, in under 2 s."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from specdifftree.errors import SDTError

ROOT = Path(__file__).resolve().parents[1]
SDT = str(Path(sys.executable).with_name("sdt"))
LIMIT_S = 2.0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A small series CSV, a plain file, a directory and a placeholder buffer, for the invocations."""
    root = tmp_path_factory.mktemp("validation")
    series = root / "series.csv"
    series.write_text("date,OT\n" + "".join(f"2020-01-01 {i % 24:02d}:00,{i % 7}.5\n" for i in range(300)))
    (root / "afile").write_text("not a directory\n")
    (root / "adir").mkdir()
    (root / "buf.safetensors").write_bytes(b"placeholder")
    (root / "exp.yaml").write_text("name: broken\nprior: default\n")
    return {"series": str(series), "file": str(root / "afile"), "dir": str(root / "adir"),
            "buffer": str(root / "buf.safetensors"), "exp": str(root / "exp.yaml"), "root": str(root)}


FORECAST = ["--prior", "default", "--series", "{series}", "--column", "OT", "--context-length", "96", "--horizon", "24"]
EXPERIMENT = str(ROOT / "experiments" / "sadt_table.yaml")

# (id, argv with {placeholders} from `files`, a fragment the error line must hold)
BAD = [
    ("search-no-reward", ["search", *FORECAST, "--method", "greedy"], "--reward is required"),
    ("search-unknown-reward", ["search", *FORECAST, "--method", "greedy", "--reward", "spectral+0.5*nope"],
     "unknown reward 'nope'"),
    ("search-bad-weight", ["search", *FORECAST, "--method", "greedy", "--reward", "spectral+x*format"],
     "malformed weight 'x'"),
    ("search-missing-plugin", ["search", *FORECAST, "--reward", "{root}/nope.py:fn"], "does not exist"),
    ("search-unknown-method", ["search", *FORECAST, "--reward", "spectral", "--method", "dtx"], "unknown method 'dtx'"),
    ("search-missing-series", ["search", "--prior", "default", "--reward", "spectral", "--series", "{root}/none.csv",
                               "--horizon", "24"], "not found"),
    ("search-unknown-column", ["search", "--prior", "default", "--reward", "spectral", "--series", "{series}",
                               "--column", "NOPE", "--horizon", "24"], "no column 'NOPE'"),
    ("search-negative-horizon", ["search", "--prior", "default", "--reward", "spectral", "--series", "{series}",
                                 "--column", "OT", "--horizon", "-3"], "--horizon"),
    ("search-bad-context-length", ["search", "--prior", "default", "--reward", "spectral", "--series", "{series}",
                                   "--column", "OT", "--horizon", "24", "--context-length", "-5"], "--context-length"),
    ("search-sadt-no-flow", ["search", *FORECAST, "--reward", "spectral", "--method", "sadt"], "needs --flow DIR"),
    ("search-sadt-missing-flow", ["search", *FORECAST, "--reward", "spectral", "--method", "sadt-sample",
                                  "--flow", "{root}/noflow"], "flow directory not found"),
    ("search-sadt-not-a-flow", ["search", *FORECAST, "--reward", "spectral", "--method", "sadt", "--flow", "{dir}"],
     "not a flow checkpoint"),
    ("search-smc-flow-potential", ["search", *FORECAST, "--reward", "spectral", "--method", "smc",
                                   "--potential", "flow"], "--potential flow needs --flow"),
    ("search-out-is-directory", ["search", *FORECAST, "--reward", "spectral", "--out", "{dir}"], "is a directory"),
    ("search-out-under-file", ["search", *FORECAST, "--reward", "spectral", "--out", "{file}/x.json"],
     "cannot be created"),
    ("search-plot-is-directory", ["search", *FORECAST, "--reward", "spectral", "--plot", "{dir}"], "is a directory"),
    ("search-unknown-preset", ["search", "--preset", "nope", "--prior", "default", "--reward", "spectral"], "--preset"),
    ("search-zero-iterations", ["search", *FORECAST, "--reward", "spectral", "--iterations", "0"], "--iterations"),
    ("search-checkpoint-dir-empty", ["search", "--prior", "{dir}", "--reward", "spectral", "--series", "{series}",
                                     "--column", "OT", "--horizon", "24"], "not a prior checkpoint"),
    ("search-missing-prior-dir", ["search", "--prior", "{root}/noprior", "--reward", "spectral"], "unknown prior"),
    ("search-missing-gguf", ["search", "--prior", "gguf:{root}/m.gguf", "--reward", "spectral"], "GGUF file not found"),
    ("search-missing-hf-dir", ["search", "--prior", "hf:{root}/nomodel", "--reward", "spectral"],
     "model directory not found"),
    ("search-missing-markov", ["search", "--prior", "markov:{root}/m.json", "--reward", "spectral"],
     "Markov file not found"),
    ("amortize-missing-buffer", ["amortize", "--buffer", "{root}/none.buf", "--prior", "default", "--reward", "spectral",
                                 "--out", "{root}/flow"], "search buffer not found"),
    ("amortize-unknown-reward", ["amortize", "--buffer", "{buffer}", "--prior", "default", "--reward", "nope",
                                 "--out", "{root}/flow"], "unknown reward 'nope'"),
    ("amortize-no-reward", ["amortize", "--buffer", "{buffer}", "--prior", "default", "--out", "{root}/flow"],
     "--reward is required"),
    ("amortize-out-under-file", ["amortize", "--buffer", "{buffer}", "--prior", "default", "--reward", "spectral",
                                 "--out", "{file}/flow"], "cannot be created"),
    ("amortize-bad-steps", ["amortize", "--buffer", "{buffer}", "--prior", "default", "--reward", "spectral",
                            "--out", "{root}/flow", "--steps", "-1"], "--steps"),
    ("amortize-backbone-missing", ["amortize", "--buffer", "{buffer}", "--prior", "opentslm:{root}/ck", "--backbone",
                                   "hf:{root}/nollm", "--reward", "spectral", "--out", "{root}/flow"], "not found"),
    ("experiment-missing-file", ["experiment", "run", "{root}/none.yaml", "--no-wandb"], "none.yaml"),
    ("experiment-bad-file", ["experiment", "run", "{exp}", "--no-wandb"], "missing"),
    ("experiment-unknown-preset", ["experiment", "run", EXPERIMENT, "--preset", "nope", "--no-wandb"],
     "no preset 'nope'"),
    ("experiment-missing-gguf", ["experiment", "run", EXPERIMENT, "--preset", "smoke", "--prior", "gguf:{root}/m.gguf",
                                 "--no-wandb"], "GGUF file not found"),
    ("experiment-out-under-file", ["experiment", "run", EXPERIMENT, "--preset", "smoke", "--out", "{file}/run",
                                   "--no-wandb"], "cannot be created"),
    ("train-prior-unknown-stage", ["train-prior", "--stage", "stage9", "--preset", "test", "--out", "{root}/tp",
                                   "--no-wandb"], "unknown stage 'stage9'"),
    ("train-prior-unknown-preset", ["train-prior", "--preset", "nope", "--out", "{root}/tp", "--no-wandb"], "--preset"),
    ("train-prior-out-under-file", ["train-prior", "--preset", "test", "--out", "{file}/tp", "--no-wandb"],
     "cannot be created"),
    ("train-prior-missing-backbone", ["train-prior", "--preset", "test", "--out", "{root}/tp", "--backbone",
                                      "gguf:{root}/m.gguf", "--no-wandb"], "--backbone gguf:"),
    ("train-prior-missing-data-dir", ["train-prior", "--preset", "test", "--out", "{root}/tp", "--data-dir",
                                      "{root}/nodata", "--no-wandb"], "--data-dir not found"),
    ("caption-missing-file", ["caption", "{root}/none.csv"], "not found"),
    ("caption-unknown-level", ["caption", "{series}", "--column", "OT", "--level", "nope"], "unknown caption level"),
    ("caption-unknown-column", ["caption", "{series}", "--column", "NOPE"], "no column 'NOPE'"),
]


@pytest.mark.parametrize("argv, fragment", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_invocation_fails_fast_in_one_line(files, argv, fragment):
    cmd = [SDT, *(a.format(**files) for a in argv)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                          cwd=files["root"])
    wall = time.perf_counter() - t0
    lines = proc.stdout.splitlines()
    print(f"{wall:.2f}s {' '.join(argv[:2])}: {proc.stdout.strip()[:160]}")  # the timing, with -s
    assert proc.returncode == 2, proc.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stdout
    assert fragment in lines[0], lines[0]
    assert wall < LIMIT_S, f"{wall:.2f}s: {lines[0]}"


def test_api_checks_the_reward_before_opening_the_prior(monkeypatch):
    """Python users get the same order: a bad reward, a missing reward or a missing flow directory is
    an SDTError before `open_prior` is reached."""
    import specdifftree.problem as problem
    from specdifftree.api import search_run

    def refuse(*_a, **_k):
        raise AssertionError("the prior was opened before the inputs were checked")

    monkeypatch.setattr(problem, "open_prior", refuse)
    with pytest.raises(SDTError, match="unknown reward 'nope'"):
        search_run("default", reward="spectral+0.5*nope", method="greedy")
    with pytest.raises(SDTError, match="--reward is required"):
        search_run("default", method="greedy")
    with pytest.raises(SDTError, match="needs --flow DIR"):
        search_run("default", reward="spectral", method="sadt")
    with pytest.raises(SDTError, match="--lambda"):
        search_run("default", reward="spectral", lam=-1.0)


def test_output_path_checks(tmp_path):
    from specdifftree import validate

    (tmp_path / "f").write_text("x")
    validate.output_path(tmp_path / "new" / "deeper" / "out.json", "--out")  # creatable
    validate.output_path(tmp_path / "f", "--out")  # an existing file is overwritten
    validate.output_path(tmp_path, "--out", directory=True)
    with pytest.raises(SDTError, match="is a directory"):
        validate.output_path(tmp_path, "--out")
    with pytest.raises(SDTError, match="is a file, not a directory"):
        validate.output_path(tmp_path / "f", "--out", directory=True)
    with pytest.raises(SDTError, match="cannot be created"):
        validate.output_path(tmp_path / "f" / "sub" / "out.json", "--out")


def test_validation_imports_no_torch():
    """The checks themselves stay light: importing them (and the API module) pulls in neither torch
    nor transformers."""
    code = ("import sys, specdifftree.validate, specdifftree.api; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
