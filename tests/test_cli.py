"""The `sdt` command line: the search contract, determinism, and one-line errors on bad input."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdifftree.errors import SDTError
from specdifftree.prior.markov import MarkovPrior

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "examples" / "toy.json")
PLUGIN = str(ROOT / "examples" / "reward.py") + ":count_c"
SDT = str(Path(sys.executable).with_name("sdt"))


def test_contract_command_end_to_end(tmp_path):
    """The exact command outside scripts rely on, as a real process."""
    out = tmp_path / "out.json"
    cmd = [SDT, "search", "--prior", f"markov:{TOY}", "--reward", PLUGIN, "--method", "dts",
           "--iterations", "5000", "--samples", "20000", "--lambda", "1.0", "--seed", "0", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.read_text())
    assert len(rec["samples"]) == 20000
    s = rec["samples"][0]
    assert set(s) >= {"tokens", "text", "reward"} and all(isinstance(t, int) for t in s["tokens"])
    assert 3 not in s["tokens"]  # no EOS
    assert s["reward"] == s["text"].count("c") - 0.5 * s["text"].count("a")
    stats = rec["stats"]
    assert set(stats) >= {"forward_tokens", "model_calls", "wall_s", "tree_nodes"}
    assert isinstance(stats["forward_tokens"], int) and stats["forward_tokens"] > 0
    assert isinstance(stats["model_calls"], int) and stats["model_calls"] > 0
    assert stats["tree_nodes"] > 0 and stats["wall_s"] > 0


def test_same_seed_same_output(tmp_path, run_cli):
    outs = []
    for i in range(2):
        path = tmp_path / f"o{i}.json"
        code, _, _ = run_cli(["search", "--prior", f"markov:{TOY}", "--reward", PLUGIN, "--iterations", "300",
                              "--samples", "100", "--seed", "5", "--out", path, "-q"])
        assert code == 0
        rec = json.loads(path.read_text())
        rec["stats"].pop("wall_s")
        outs.append(rec)
    assert outs[0] == outs[1]


def test_builtin_problem_and_tree_export(tmp_path, run_cli):
    tree = tmp_path / "t.graphml"
    code, out, _ = run_cli(["search", "--prior", "markov:toy3", "--iterations", "200", "--save-tree", tree])
    assert code == 0 and tree.stat().st_size > 0
    assert "forward tokens" in out and "most frequent samples" in out


def test_config_yaml_then_command_line_wins(tmp_path, run_cli):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: best-of-n\nsamples: 3\nn: 10\n")
    out = tmp_path / "o.json"
    code, _, err = run_cli(["search", "--config", cfg, "--prior", "markov:toy3", "--samples", "2", "--out", out, "-q"])
    assert code == 0, err
    rec = json.loads(out.read_text())
    assert rec["method"] == "best-of-n" and len(rec["samples"]) == 2 and rec["config"]["n"] == 10


def _bad_prior(tmp_path, content: str) -> str:
    p = tmp_path / "bad.json"
    p.write_text(content)
    return f"markov:{p}"


BAD_INPUTS = {
    "malformed json": (lambda tp: ["--prior", _bad_prior(tp, "{not json"), "--reward", PLUGIN], "not valid JSON"),
    "missing field": (lambda tp: ["--prior", _bad_prior(tp, '{"vocab": ["a", "<eos>"]}'), "--reward", PLUGIN], "missing field"),
    "non-stochastic row": (lambda tp: ["--prior", _bad_prior(tp, json.dumps({
        "vocab": ["a", "<eos>"], "eos": 1, "max_len": 2, "initial": [0.5, 0.5],
        "transition": [[0.5, 0.4], [0.5, 0.5]]})), "--reward", PLUGIN], "transition row 0 sums to 0.9"),
    "negative probability": (lambda tp: ["--prior", _bad_prior(tp, json.dumps({
        "vocab": ["a", "<eos>"], "eos": 1, "max_len": 2, "initial": [1.5, -0.5],
        "transition": [[0.5, 0.5], [0.5, 0.5]]})), "--reward", PLUGIN], "non-negative"),
    "prior file missing": (lambda tp: ["--prior", "markov:/nonexistent/toy.json", "--reward", PLUGIN], "not found"),
    "unknown prior kind": (lambda tp: ["--prior", "markv:toy3", "--reward", PLUGIN], "Did you mean 'markov"),
    "unknown method": (lambda tp: ["--prior", "markov:toy3", "--method", "dtss"], "Did you mean 'dts'"),
    "unknown reward": (lambda tp: ["--prior", "markov:toy3", "--reward", "spectrl"], "spectral"),
    "plugin file missing": (lambda tp: ["--prior", "markov:toy3", "--reward", "/nonexistent/r.py:fn"], "/nonexistent/r.py"),
    "plugin function missing": (lambda tp: ["--prior", "markov:toy3", "--reward", str(ROOT / "examples/reward.py") + ":nope"], "nope"),
    "nan in series": (lambda tp: ["--prior", "markov:toy3", "--series", _csv(tp, "v\n1\n2\nnan\n4\n5\n")], "row 4"),
    "series file missing": (lambda tp: ["--prior", "markov:toy3", "--series", "/nonexistent.csv"], "not found"),
    "no numeric column": (lambda tp: ["--prior", "markov:toy3", "--series", _csv(tp, "a,b\nx,y\nz,w\n")], "no numeric column"),
    "negative lambda": (lambda tp: ["--prior", "markov:toy3", "--lambda", "-1"], "--lambda"),
    "bad integer": (lambda tp: ["--prior", "markov:toy3", "--iterations", "many"], "many"),
    "missing prior option": (lambda tp: ["--iterations", "5"], "--prior"),
}


def _csv(tmp_path, text: str) -> str:
    p = tmp_path / "s.csv"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(case, tmp_path, run_cli):
    make_args, expected = BAD_INPUTS[case]
    code, out, err = run_cli(["search", *make_args(tmp_path), "-q"])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err + out


def test_bad_input_as_real_process(tmp_path):
    """The console script itself: exit code 2, one line, no traceback."""
    proc = subprocess.run([SDT, "search", "--prior", "markov:toy3", "--method", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_help_is_fast_and_has_examples():
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    commands = (["--help"], ["search", "--help"], ["bench", "--help"], ["bench", "exactness", "--help"],
                ["bench", "speed", "--help"], ["pretrain-backbone", "--help"], ["export-gguf", "--help"],
                ["caption", "--help"])
    for args in commands:
        t0 = time.perf_counter()
        proc = subprocess.run([SDT, *args], capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - t0
        assert proc.returncode == 0 and "Example" in proc.stdout, args
        assert elapsed < 1.0, (args, elapsed)
    # no heavy import at start-up
    probe = "import sys, specdifftree.cli; print(any(m in sys.modules for m in ('torch', 'transformers', 'scipy')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 6) | st.floats(allow_nan=True) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
prior_like = st.fixed_dictionaries({
    "vocab": st.one_of(json_values, st.lists(st.sampled_from(["a", "b", "<eos>"]), min_size=0, max_size=4)),
    "eos": json_values, "max_len": json_values,
    "initial": st.one_of(json_values, st.lists(st.floats(0, 1), max_size=4)),
    "transition": st.one_of(json_values, st.lists(st.lists(st.floats(0, 1), max_size=4), max_size=4)),
})


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, prior_like))
def test_markov_parser_never_crashes(spec):
    """Any JSON value either loads as a valid prior or raises SDTError: never another exception."""
    try:
        prior = MarkovPrior.from_dict(spec)
    except SDTError as e:
        assert "\n" not in str(e)
        return
    assert prior.vocab_size >= 2 and 0 <= prior.eos_id < prior.vocab_size
