"""Text tasks (data/tasks.py): the caption and qa grammars as token masks, every search method on
caption and qa contexts, the CLI's acceptance commands on the default backbone, and the checks
made before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdifftree.data.text_grammar import ALPHABET, CaptionMachine, QAMachine, accepts
from specdifftree.errors import SDTError
from specdifftree.prior.grammars import TextGrammar

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ETT = DATA / "ett" / "ETTh1.csv"
HAR = DATA / "har_chest_acc" / "1.csv"
BYTES = [chr(i) for i in range(256)] + ["<|endoftext|>", "<|pad|>"]  # the byte tokenizer's strings, EOS 256
# a BPE-like vocabulary: multi-character pieces across word, number and answer boundaries
PIECES = ["Answer", ": ", "Ans", "wer:", " walk", "ing", "ing.", " stand", "walking", "standing", ". ", "12", ".5",
          "The", " series", " rises", " 3", "0.", "e", " is", "-", "(", ")", "%", ",", " x-axis", "<s>", "\n", "é"]
BPE = [*PIECES, *ALPHABET, "</s>"]


def _walk(grammar: TextGrammar, draws: list[int], eos: int) -> tuple[str, list]:
    """Follow the masks with `draws` picking among the allowed tokens; -> (text, states visited)."""
    state, text, states = grammar.start, "", []
    for i in range(grammar.max_tokens()):
        mask = grammar.mask(state)
        allowed = np.flatnonzero(mask == 0)
        assert len(allowed), f"no token allowed after {text!r}"
        states.append((state, text))
        tok = int(allowed[draws[i % len(draws)] % len(allowed)])
        if tok == eos:
            return text, states
        text += grammar.strings[tok]
        state = grammar.step(state, tok)
    raise AssertionError(f"no EOS within {grammar.max_tokens()} tokens: {text!r}")


MACHINES = [CaptionMachine(cap=40, max_places=2), QAMachine(("walking", "standing", "walk"), reasoning_cap=30)]


@pytest.mark.parametrize("vocab,eos", [(BYTES, 256), (BPE, len(BPE) - 1)], ids=["bytes", "bpe"])
@pytest.mark.parametrize("machine", MACHINES, ids=["caption", "qa"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draws=st.lists(st.integers(0, 10_000), min_size=1, max_size=64))
def test_every_completed_path_parses(machine, vocab, eos, draws):
    """Any path the masks allow ends in EOS within the cap, and its text is a whole answer; EOS is
    allowed exactly where the machine accepts."""
    grammar = TextGrammar(machine, vocab, eos)
    text, states = _walk(grammar, draws, eos)
    assert accepts(machine, text) and len(text) <= machine.cap
    for state, prefix in states:
        assert (grammar.mask(state)[eos] == 0) == accepts(machine, prefix)


def test_qa_answers_end_in_a_choice():
    m = QAMachine(("walking", "standing"), reasoning_cap=40)
    assert accepts(m, "Answer: walking") and accepts(m, "It moves. Answer: standing")
    assert not accepts(m, "Answer: walk") and not accepts(m, "It moves.") and not accepts(m, "Answer: walking.")
    assert not accepts(m, "It moves.Answer: walking")  # the answer starts a sentence


def test_caption_numbers_and_sentences():
    m = CaptionMachine(cap=80, max_places=2)
    assert accepts(m, "The mean of the series is 12.5, ranging from -3 to 40.")
    assert accepts(m, "It ends at 12.")
    for bad in ("The mean is 12.345.", "Spikes at x2.", "No end", "Two  spaces.", "1e5 is big.", "Line\nbreak."):
        assert not accepts(m, bad), bad


def test_masks_are_cached_per_state_key():
    grammar = TextGrammar(CaptionMachine(cap=200), BYTES, 256)
    a = grammar.mask(grammar.start)
    assert grammar.mask((grammar.start[0], 150)) is a  # more characters left than can matter: one mask
    assert len(grammar._masks) == 1


# ----------------------------------------------------------------------------------- contexts


def test_har_window_reads_three_axes_and_its_label():
    from specdifftree.data.context import task_context
    from specdifftree.data.tasks import make_task, text_prompt

    if not HAR.is_file():
        pytest.skip("no shared chest-accelerometer data")
    task = make_task("qa", "What is the person doing?", "walking,standing,sitting")
    ctx = task_context(task, HAR, None, 512, 20000)
    assert ctx.task.names == ("x-axis acceleration", "y-axis acceleration", "z-axis acceleration")
    assert ctx.task.fs == 52.0 and len(ctx.series) == 512 and len(ctx.covariates) == 2
    assert ctx.task.truth.label == "sitting"  # label 1, working at a computer
    prompt = text_prompt(ctx)
    assert "Question: What is the person doing?" in prompt and "Options: walking; standing; sitting" in prompt
    assert "sitting" not in prompt.split("Options")[0]  # the label is not in the prompt


def test_context_from_array_tasks():
    import specdifftree as sdt

    x = np.sin(np.arange(64) / 3)
    ctx = sdt.context_from_array(x, task="caption", max_chars=50)
    assert ctx.task.cap == 50 and ctx.task.names == ("the series",) and ctx.horizon is None
    ctx = sdt.context_from_array(x, covariates=[x], task="qa", question="Trend?", choices="up, down", label="up")
    assert ctx.task.choices == ("up", "down") and ctx.task.truth.label == "up"
    for bad in (dict(task="qa", question="Q"), dict(task="qa", question="Q", choices="a,b", label="c"),
                dict(task="caption", horizon=3), dict(question="Q"), dict(task="bogus")):
        with pytest.raises(SDTError):
            sdt.context_from_array(x, **bad)


# ----------------------------------------------------------------------------------- search

METHODS = ["dts", "dts-star", "smc", "beam", "best-of-n", "best-of-n-is", "sample", "greedy", "mcts"]


@pytest.fixture(scope="module")
def tiny_queries(tiny_hf):
    """Per task, the tiny Llama with that task's rewards (the model loads once)."""
    from specdifftree.prior.sources import open_prior
    from specdifftree.problem import Queries

    source = open_prior(f"hf:{tiny_hf}")
    return {"caption": Queries.open(source, ["caption-consistency + format"]),
            "qa": Queries.open(source, ["answer-consistency + 0.5*format"])}


def _contexts():
    import specdifftree as sdt

    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=32))
    return {"caption": sdt.context_from_array(x, task="caption", max_chars=24),
            "qa": sdt.context_from_array(x, task="qa", question="Trend?", choices="up,down,flat", max_chars=12)}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_text_tasks(tiny_queries, method):
    from specdifftree.data.tasks import machine, parse_answer
    from specdifftree.search.common import SearchConfig
    from specdifftree.search.registry import run_search

    for name, ctx in _contexts().items():
        cfg = SearchConfig(iterations=4, samples=3, n=3, particles=3, beam_width=2, seed=0, budget=600).validate()
        result = run_search(tiny_queries[name].problem(ctx), method, cfg)
        assert result.samples, (method, name)
        for s in result.samples:
            assert accepts(machine(ctx), s.text), (method, name, s.text)
            if name == "qa":
                assert parse_answer(s.text, ctx.task.choices) is not None


def test_markov_prior_refuses_text_tasks():
    from specdifftree.problem import Queries

    with pytest.raises(SDTError, match="does not write text"):
        Queries.open("markov:toy3").problem(_contexts()["qa"])


# ----------------------------------------------------------------------------------- CLI


def test_cli_caption_acceptance(run_cli, tmp_path):
    if not ETT.is_file():
        pytest.skip("no shared ETT data")
    out = tmp_path / "c.json"
    code, stdout, err = run_cli(["search", "--task", "caption", "--prior", "default", "--series", ETT, "--column", "OT",
                                 "--end", "15000", "--context-length", "96", "--reward", "caption-consistency",
                                 "--method", "dts", "--iterations", "2", "--samples", "2", "--max-chars", "24",
                                 "--out", out, "-q"])
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["task"]["name"] == "caption" and "forecast_metrics" not in record
    assert set(record["task_metrics"]) == {"fact_accuracy_low", "fact_accuracy_middle", "fact_accuracy_high"}
    assert all(set(s["fact_accuracy"]) == {"low", "middle", "high"} for s in record["samples"])


def test_cli_qa_acceptance(run_cli, tmp_path):
    if not HAR.is_file():
        pytest.skip("no shared chest-accelerometer data")
    out = tmp_path / "q.json"
    code, stdout, err = run_cli(["search", "--task", "qa", "--prior", "default", "--series", HAR, "--end", "20000",
                                 "--context-length", "512", "--question", "What is the person doing?",
                                 "--choices", "walking,standing,sitting", "--method", "dts",
                                 "--reward", "answer-consistency", "--iterations", "2", "--samples", "2",
                                 "--max-chars", "8", "--out", out])
    assert code == 0, err
    record = json.loads(out.read_text())
    assert all(s["text"].endswith(("walking", "standing", "sitting")) for s in record["samples"])
    assert all(s["answer"] in ("walking", "standing", "sitting") for s in record["samples"])
    assert record["task_metrics"]["label"] == "sitting" and "accuracy" in record["task_metrics"]
    assert "task metrics" in stdout


@pytest.mark.parametrize("args,says", [
    (["--task", "bogus"], "unknown --task"),
    (["--choices", "a,b"], "belong to --task qa"),
    (["--question", "Q"], "belong to --task qa"),
    (["--task", "qa", "--question", "Q"], "needs --choices"),
    (["--task", "qa", "--question", "Q", "--choices", ""], "--choices is empty"),
    (["--task", "qa", "--choices", "a,b"], "needs --question"),
    (["--task", "caption", "--horizon", "4"], "--horizon is for --task forecast"),
    (["--task", "caption", "--plot", "x.png"], "--plot is for --task forecast"),
    (["--task", "qa", "--question", "Q", "--choices", "a,a"], "repeats"),
    (["--max-chars", "20"], "not of a forecast"),
])
def test_bad_task_options_fail_before_loading(run_cli, args, says):
    code, _, err = run_cli(["search", "--prior", "default", "--reward", "zero", *args])
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_default_means_the_text_backbone_for_text_tasks_once_built(monkeypatch, tmp_path):
    import specdifftree.prior.default as default
    import specdifftree.prior.spec as spec
    from specdifftree.data.context import Context
    from specdifftree.prior.tasks import text_default

    text = _contexts()["caption"]
    monkeypatch.setattr(default, "default_backbone", lambda preset="default": tmp_path)  # as if text-v1 were built
    assert text_default("default", text) == "text"
    assert text_default("default", Context(series=np.ones(8), horizon=2)) == "default"  # forecasts keep default
    assert text_default("hf:DIR", text) == "hf:DIR"
    monkeypatch.setattr(spec, "checkpoint_dir", lambda s: tmp_path)  # an installed trained prior for default
    assert text_default("default", text) == "default"
