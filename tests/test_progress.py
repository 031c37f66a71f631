"""Progress shows in logs: a few lines per loop with the elapsed time and an ETA when stderr is not a
terminal, a tqdm bar when it is, nothing when disabled; transformers' weight-loading bar never shows;
`sdt train-prior ... > log 2>&1` writes a progress line for every stage."""

import io
import os
import re
import subprocess

import numpy as np
import pytest

from specdifftree import progress as progress_module
from specdifftree.progress import Lines, Silent, progress, quiet_model_loading, span, track
from processes import BIN


class Clock:
    """A stand-in for time.monotonic that the test moves forward."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", c)
    return c


def test_a_long_loop_in_a_log_writes_a_bounded_number_of_lines_with_elapsed_and_eta(clock):
    out = io.StringIO()
    with progress(10_000, "amortize", "steps", stream=out) as bar:
        assert isinstance(bar, Lines)
        for step in range(10_000):
            clock.t += 0.5  # 5,000 s in all: a line every 10 s would be 500 lines
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 12, lines  # every 10% (rarer than every 10 s), the first ETA, the end
    assert all(line.startswith("amortize: ") and "elapsed" in line and "ETA" in line for line in lines), lines
    assert lines[0].startswith("amortize: 4/10,000 steps (0%), 2.0 s elapsed, ETA 1h23m")  # the first ETA, at 2 s
    assert lines[-1] == "amortize: 10,000/10,000 steps (100%), 1h23m elapsed, ETA 0.0 s, loss=0.000"
    done = [int(re.match(r"amortize: ([\d,]+)/", line).group(1).replace(",", "")) for line in lines]
    assert np.all(np.diff(done[1:-1]) >= 1000)  # the last: the end, whenever it comes


def test_a_loop_over_in_2_s_writes_nothing_unless_asked_for_a_line_per_unit(clock):
    out = io.StringIO()
    with progress(50, "windows", "win", stream=out) as bar:
        for _ in range(50):
            clock.t += 0.03125
            bar.update(1)
    assert out.getvalue() == ""
    with progress(2, "train-prior", "stages", each=True, stream=out) as bar:
        for stage in ("stage1_mcq", "stage2_captioning"):
            clock.t += 0.5
            bar.set_postfix_str(f"{stage} done")
            bar.update(1)
    assert out.getvalue().splitlines() == ["train-prior: 1/2 stages (50%), 0.5 s elapsed, ETA 0.5 s, stage1_mcq done",
                                           "train-prior: 2/2 stages (100%), 1.0 s elapsed, ETA 0.0 s, stage2_captioning done"]


def test_a_loop_of_few_slow_units_writes_a_line_at_most_every_10_seconds(clock):
    out = io.StringIO()
    with progress(10, "cells", "cells", stream=out) as bar:
        for _ in range(10):
            clock.t += 3  # every cell is 10% and 3 s: a line at most every 10 s, the first at 3 s
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["cells: 1/10 cells (10%)", "cells: 5/10 cells (50%)",
                                                       "cells: 9/10 cells (90%)", "cells: 10/10 cells (100%)"]


def test_a_loop_that_stops_short_or_has_no_total_says_so_on_close(clock):
    out = io.StringIO()
    with progress(100, "stage1_mcq", "steps", initial=20, stream=out) as bar:
        for _ in range(30):
            clock.t += 0.25
            bar.update(1)
        bar.set_postfix(val="0.5")
    assert out.getvalue().splitlines() == ["stage1_mcq: 28/100 steps (28%), 2.0 s elapsed, ETA 18 s",
                                           "stage1_mcq: stopped at 50/100 steps (50%), 7.5 s elapsed, val=0.5"]
    out = io.StringIO()
    with progress(None, "dts", "it", stream=out) as bar:
        for _ in range(40):
            clock.t += 0.125
            bar.update(1)
    assert out.getvalue().splitlines() == ["dts: 16 it, 2.0 s elapsed, 8 it/s", "dts: done 40 it, 5.0 s elapsed, 8 it/s"]
    out = io.StringIO()
    with progress(1 << 30, "downloading ett", "B", stream=out) as bar:
        clock.t += 4
        bar.update(1 << 30)
    assert out.getvalue() == "downloading ett: 1.1 GB/1.1 GB (100%), 4.0 s elapsed, ETA 0.0 s\n"


def test_a_terminal_gets_a_tqdm_bar_and_disabled_progress_prints_nothing(capsys):
    from tqdm import tqdm

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    with progress(3, "search", "it", stream=term) as bar:
        assert isinstance(bar, tqdm)
        bar.update(3)
    assert "search" in term.getvalue() and "\r" in term.getvalue()
    with progress(3, "search", enabled=False) as bar:
        assert isinstance(bar, Silent)
        bar.update(3)
        bar.set_postfix(loss=1)
    assert list(track([1, 2], "x", enabled=False)) == [1, 2]
    assert capsys.readouterr() == ("", "")


def test_span_reads_as_a_person_would():
    assert [span(s) for s in (0.42, 31.2, 227, 7500)] == ["0.4 s", "31 s", "3m47s", "2h05m"]


def test_weight_loading_bar_is_hidden_and_the_hook_restored(tiny_hf, capfd):
    from transformers.utils import logging as hf_logging

    from specdifftree.prior.backbones.hf import HFBackbone

    before = hf_logging.set_tqdm_hook(None)
    hf_logging.set_tqdm_hook(before)
    HFBackbone.from_pretrained(str(tiny_hf))
    assert "Loading weights" not in capfd.readouterr().err
    with quiet_model_loading():
        pass
    assert hf_logging.set_tqdm_hook(before) is before  # the hook in place is again the one before


@pytest.mark.slow
def test_train_prior_into_a_log_file_writes_progress_for_every_stage(tiny_hf, tmp_path):
    """`sdt train-prior --stage all --preset test > log 2>&1`: each stage's progress line (elapsed,
    ETA) and the curriculum's, and no terminal control characters or transformers bars."""
    from specdifftree.data.example import STAGES

    data = tmp_path / "data"
    data.mkdir()
    t = np.arange(600)
    values = 20 + 5 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(0, 1, 600)
    (data / "load.csv").write_text("load\n" + "\n".join(f"{v:.3f}" for v in values) + "\n")
    log = tmp_path / "log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as f:
        code = subprocess.call([str(BIN / "sdt"), "train-prior", "--stage", "all", "--preset", "test", "--backbone",
                                f"hf:{tiny_hf}", "--out", str(tmp_path / "prior"), "--no-wandb", "--data-dir",
                                str(data)], stdout=f, stderr=subprocess.STDOUT, env=env, timeout=600)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "\r" not in text and "Loading weights" not in text and "\x1b" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if line.startswith("train-prior: ")]
    assert len(lines) == len(STAGES), text[-3000:]
    for k, (stage, line) in enumerate(zip(STAGES, lines), 1):
        assert re.fullmatch(rf"train-prior: {k}/6 stages \(\d+%\), [\d.hms ]+ elapsed, ETA [\d.hms ]+, {stage} done",
                            line), line
