"""sdt train-prior: cached logits are exact, all six stages write their files, a SIGKILL loses
nothing, bad data ends in one line and exit 2, and `--prior RUN_DIR` loads the result."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from specdifftree.data.example import STAGES, Example
from specdifftree.data.stages import MCQ_CHOICES, OPTIONS
from specdifftree.errors import SDTError
from processes import BIN, children, free_port, wait_for_lines

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT.parent / "shared" / "data" / "ett" / "ETTh1.csv"


@pytest.fixture(scope="module")
def backbone(tiny_hf):
    from specdifftree.prior.backbones.hf import HFBackbone

    return HFBackbone.from_pretrained(str(tiny_hf))


def _examples(n: int, rng) -> list[Example]:
    """Hand-made label examples: one or two series, answers ending in their label."""
    out = []
    for i in range(n):
        k = 1 + i % 2
        series = [np.cumsum(rng.normal(size=int(rng.integers(9, 40)))) for _ in range(k)]
        label = ("up", "down", "flat")[i % 3]
        out.append(Example("stage3_cot", series, [f"Axis {j}" for j in range(k)], "Look at this.", "Which trend?",
                           f"Std {series[0].std():.1f}. Answer: {label}", label=label, options=("up", "down", "flat")))
    return out


# ------------------------------------------------------------------------------------------ exactness


def test_cached_logits_loss_equals_a_direct_forward(backbone, rng):
    """The loss from the once-computed backbone logits is the loss of a full forward of prompt + answer."""
    from specdifftree.prior.model import PriorParts
    from specdifftree.prior.encoder import EncoderConfig
    from specdifftree.train.decode import answer_logits
    from specdifftree.train.examples import tokenize_split
    from specdifftree.train.metrics import answer_nll
    from specdifftree.train.bias import context_bias

    split = tokenize_split(_examples(5, rng), backbone)
    cached = answer_logits(backbone, split.prompt_ids, split.answer_ids, batch=2)  # batches of unequal lengths
    parts = PriorParts.fresh(backbone.vocab_size, "hf:x", seed=1, encoder_config=EncoderConfig(width=16, layers=1, heads=2, ff=32))
    with torch.no_grad():
        torch.nn.init.normal_(parts.head.proj.weight, std=1.0)  # a large bias, so a wrong row would show
        bias = context_bias(parts, split.examples)
        logits, targets, owner = cached.rows(range(5))
        got = answer_nll(logits, targets, bias, owner)
        want = []
        for i, (p, a) in enumerate(zip(split.prompt_ids, split.answer_ids)):
            full = backbone.model(input_ids=torch.tensor([p + a[:-1]])).logits[0, len(p) - 1:]  # [len(a), V]
            want.append(-torch.log_softmax(full + bias[i], -1).gather(1, torch.tensor(a)[:, None])[:, 0])
    assert len(got) == sum(len(a) for a in split.answer_ids)
    torch.testing.assert_close(got, torch.cat(want), atol=2e-5, rtol=0)
    assert backbone.pool.in_use == 0  # every handle was released


def test_option_scores_are_full_answer_likelihoods(backbone, rng):
    """Ranking scores from the shared stem + branched endings differ exactly as the log-likelihoods of
    the full candidate answers do."""
    from specdifftree.train.decode import answer_logits
    from specdifftree.train.examples import label_choices, tokenize_split
    from specdifftree.train.metrics import answer_nll

    split = tokenize_split(_examples(4, rng), backbone)
    choices = label_choices(split, backbone, batch=3)
    bias = torch.randn(4, backbone.vocab_size)
    scores = choices.scores(bias)
    for i, ex in enumerate(split.examples):
        cands = [ex.answer[: ex.answer.rfind(ex.label)] + o for o in ex.options]
        ids = [backbone.tokenize(c) + [backbone.eos_id] for c in cands]
        full = answer_logits(backbone, [split.prompt_ids[i]] * 3, ids)
        logits, targets, owner = full.rows(range(3))
        ll = -torch.zeros(3).index_add(0, owner, answer_nll(logits, targets, bias[[i] * 3], owner))
        torch.testing.assert_close(scores[i] - scores[i, 0], ll - ll[0], atol=1e-4, rtol=0)
    assert choices.predicted(bias) == [ex.options[int(scores[i].argmax())] for i, ex in enumerate(split.examples)]


def test_llamacpp_backbone_caches_the_same_logits(tiny_hf, backbone, rng, tmp_path):
    """The trainer only uses the Backbone protocol: a GGUF export of the same weights gives the same
    cached answer logits and option endings through llama.cpp (few sequence ids: evictions too)."""
    pytest.importorskip("llama_cpp")
    from specdifftree.prior.backbones.llamacpp import LlamaCppBackbone
    from specdifftree.prior.gguf import export_gguf
    from specdifftree.train.decode import answer_logits
    from specdifftree.train.examples import label_choices, tokenize_split

    gguf = LlamaCppBackbone(export_gguf(tiny_hf, tmp_path / "tiny.gguf", dtype="f32"), n_seq_max=4)
    examples = _examples(5, rng)
    a, b = tokenize_split(examples, backbone), tokenize_split(examples, gguf)
    assert a.prompt_ids == b.prompt_ids and a.answer_ids == b.answer_ids
    hf_rows = answer_logits(backbone, a.prompt_ids, a.answer_ids, batch=3)
    cpp_rows = answer_logits(gguf, b.prompt_ids, b.answer_ids, batch=3)
    assert torch.equal(hf_rows.targets, cpp_rows.targets)
    torch.testing.assert_close(cpp_rows.logits, hf_rows.logits, atol=1e-3, rtol=0)
    bias = torch.randn(5, 258)
    torch.testing.assert_close(label_choices(b, gguf, batch=3).scores(bias), label_choices(a, backbone).scores(bias),
                               atol=1e-3, rtol=0)
    assert gguf.live_handles() == 0


def test_multi_series_bias_is_the_mean_of_pooled_encodings(rng):
    from specdifftree.prior.encoder import EncoderConfig
    from specdifftree.prior.model import PriorParts
    from specdifftree.train.bias import context_bias

    parts = PriorParts.fresh(258, "x", encoder_config=EncoderConfig(width=16, layers=1, heads=2, ff=32))
    ex = _examples(2, rng)[1]  # two series of different lengths
    with torch.no_grad():
        both = context_bias(parts, [ex])[0]
        pooled = [parts.encoder.pool(*parts.encode(torch.tensor(x, dtype=torch.float32)[None]))[0] for x in ex.series]
        torch.testing.assert_close(both, parts.head(torch.stack(pooled).mean(0)), atol=1e-5, rtol=0)
        one = Example("stage6_forecast", [ex.series[0]], ["s"], "", "", "1")
        torch.testing.assert_close(context_bias(parts, [one])[0].numpy(), parts.bias(ex.series[0]), atol=1e-5, rtol=0)


def test_state_round_trip_restores_the_optimizer_exactly(tmp_path):
    from specdifftree.train.state import load_state, optimizer_tensors, restore_optimizer, save_state

    w = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(w.parameters(), lr=0.1)
    w(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, groups = optimizer_tensors(opt)
    save_state(tmp_path / "s.safetensors", tensors, {"groups": groups, "rows": [{"x": float("nan")}]})
    got, meta = load_state(tmp_path / "s.safetensors")
    assert meta["rows"] == [{"x": None}]
    opt2 = torch.optim.AdamW(w.parameters(), lr=0.5)
    restore_optimizer(opt2, got, meta["groups"])
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 0.1
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k])
    assert load_state(tmp_path / "missing.safetensors") is None
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(SDTError, match="unreadable resume state"):
        load_state(tmp_path / "bad.safetensors")


def test_examples_the_encoder_cannot_take_name_their_source():
    from specdifftree.train.examples import check_examples

    short = Example("stage6_forecast", [np.arange(3.0)], ["s"], "", "", "1", meta={"source": "ETTh1.csv", "row": 7})
    with pytest.raises(SDTError, match=r"stage6_forecast train example 0 \(source ETTh1.csv, row 7\).*3 points"):
        check_examples([short], "stage6_forecast", "train", 4, 4096)
    nan = Example("stage6_forecast", [np.array([1.0, np.nan, 2, 3])], ["s"], "", "", "1")
    with pytest.raises(SDTError, match="nan at index 1"):
        check_examples([nan], "stage6_forecast", "val", 4, 4096)


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def trained(tiny_hf, tmp_path_factory, run_cli):
    """`sdt train-prior --stage all --preset test` on the tiny backbone; the data: one user CSV + generators."""
    out = tmp_path_factory.mktemp("run") / "prior"
    data = tmp_path_factory.mktemp("data")
    t = np.arange(600)
    values = 20 + 5 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(0, 1, 600)
    (data / "load.csv").write_text("load\n" + "\n".join(f"{v:.3f}" for v in values) + "\n")
    args = ["train-prior", "--stage", "all", "--preset", "test", "--backbone", f"hf:{tiny_hf}", "--out", out,
            "--no-wandb", "--data-dir", data]
    start = time.time()
    code, _, err = run_cli(args)
    assert code == 0, err
    return out, args, time.time() - start


@pytest.mark.slow
def test_all_six_stages_write_every_file(trained):
    from specdifftree.prior.model import PriorParts

    out, _, seconds = trained
    assert seconds < 90  # stage 2 decodes its captions twice (prior and backbone alone) for fact accuracy
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == list(STAGES)
    for stage in STAGES:
        d = out / stage
        parts = PriorParts.load(d / "checkpoints" / "best")
        assert parts.head.vocab_size == 258 and parts.backbone_ref.startswith("hf:/")
        with open(d / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_perplexity", "val_accuracy", "val_macro_recall"]
        assert [r["epoch"] for r in rows] == ["1", "2"]
        for r in rows:
            assert np.isclose(float(r["val_perplexity"]), np.exp(float(r["val_loss"])))
            assert 0 <= float(r["val_accuracy"]) <= 1
        labelled = stage not in ("stage2_captioning", "stage6_forecast")
        assert all((r["val_macro_recall"] != "") == labelled for r in rows)
        pngs = {p.name for p in d.glob("*.png")}
        assert {"loss.png", "perplexity.png", "accuracy.png"} <= pngs
        assert ("macro_recall.png" in pngs) == labelled
        page = (d / "index.html").read_text()
        assert page.count("data:image/png;base64,") == len(pngs) and "http" not in page
        assert "test_nll_prior" in page and "<th>val_loss</th>" in page
        preds = [json.loads(line) for line in (d / "test_predictions.jsonl").read_text().splitlines()]
        assert len(preds) == 6 and all({"prompt", "generated", "gold"} <= set(p) for p in preds)
        s = summary[stage]
        assert s["n_test"] == 6 and s["test_nll_prior"] > 0 and s["test_nll_backbone"] > 0
        assert 0 <= s["test_share_of_answers_better"] <= 1
        assert ("test_accuracy" in s) == labelled
        if labelled:
            assert s["chance_uniform"] == pytest.approx(1 / len(OPTIONS.get(stage, range(MCQ_CHOICES))))
            assert {"label", "chosen_label", "parsed_label"} <= set(preds[0])
        if stage == "stage2_captioning":  # per-level fact accuracy of the captions, prior and backbone alone
            for who in ("prior", "backbone"):
                got = [s[f"test_fact_accuracy_{lv}_{who}"] for lv in ("low", "middle") if f"test_fact_accuracy_{lv}_{who}" in s]
                assert got and all(0 <= v <= 1 for v in got)
            assert {"variant", "facts_prior", "facts_backbone", "generated_backbone"} <= set(preds[0])
    forecasts = [json.loads(line) for line in (out / "stage6_forecast" / "test_predictions.jsonl").read_text().splitlines()]
    assert all(len(p["generated"].split(",")) == len(p["gold"].split(",")) for p in forecasts)  # the grammar held
    manifest = json.loads((out / "train_prior.json").read_text())
    assert manifest["final_checkpoint"] == "stage6_forecast/checkpoints/best"


@pytest.mark.slow
def test_stages_start_from_the_previous_best(trained, backbone, tmp_path, capsys):
    from specdifftree.prior.model import PriorParts
    from specdifftree.train.config import TrainConfig
    from specdifftree.train.curriculum import _starting_parts
    from specdifftree.train.stage import Run

    out, _, _ = trained
    cfg = TrainConfig.from_name("test")
    got = _starting_parts(Run(out, cfg, "hf:x", backbone), "stage2_captioning")
    want = PriorParts.load(out / "stage1_mcq" / "checkpoints" / "best")
    for m in ("encoder", "head"):
        a, b = getattr(got, m).state_dict(), getattr(want, m).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert got.backbone_ref == "hf:x"
    fresh = _starting_parts(Run(tmp_path, cfg, "hf:x", backbone), "stage2_captioning")  # no stage 1 here
    assert "starts from fresh parts" in capsys.readouterr().err
    assert not torch.equal(fresh.head.proj.weight, want.head.proj.weight)
    assert fresh.encoder.config == cfg.encoder


@pytest.mark.slow
def test_rerun_needs_resume_and_resume_of_a_finished_run_changes_nothing(trained, run_cli):
    out, args, _ = trained
    code, _, err = run_cli(args)
    assert code == 2 and err.startswith("error: ") and "--resume" in err and len(err.strip().splitlines()) == 1
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix in (".csv", ".safetensors")}
    code, out_text, _ = run_cli(args + ["--resume"])
    assert code == 0 and "stage6_forecast" in out_text
    assert before == {p: p.read_bytes() for p in before}


@pytest.mark.slow
def test_upstream_flag_reads_the_official_data_for_stages_1_to_5(tiny_hf, tmp_path, monkeypatch, run_cli):
    """`--upstream`: stages 1-5 come from data/upstream.py (faked here: no network in tests), stage 6
    from M4 / ETT as always; a run directory keeps the data it was started with."""
    from dataclasses import replace

    from specdifftree.data import upstream

    calls = []

    def fake_upstream(stage, split, n=None, seed=0):
        calls.append((stage, split))
        return [replace(e, stage=stage, answer=f"{e.answer} (upstream)") for e in _examples(n, np.random.default_rng(1))]

    monkeypatch.setattr(upstream, "load_upstream", fake_upstream)
    out = tmp_path / "prior"
    args = ["train-prior", "--stage", "stage3_cot", "--preset", "test", "--backbone", f"hf:{tiny_hf}", "--out", out,
            "--no-wandb", "--upstream"]
    code, _, err = run_cli(args)
    assert code == 0, err
    assert calls == [("stage3_cot", split) for split in ("train", "val", "test")]
    preds = [json.loads(line) for line in (out / "stage3_cot" / "test_predictions.jsonl").read_text().splitlines()]
    assert preds and all(p["gold"].endswith("(upstream)") for p in preds)
    assert json.loads((out / "train_prior.json").read_text())["upstream"] is True
    code, _, err = run_cli([a for a in args if a != "--upstream"] + ["--resume"])
    assert code == 2 and "upstream data" in err and len(err.strip().splitlines()) == 1

    from specdifftree.train.config import TrainConfig
    from specdifftree.train.curriculum import build_examples
    from specdifftree.train.stage import Run

    seen = []
    run = Run(tmp_path / "x", TrainConfig.from_name("test"), "hf:x", None, upstream=True,
              dataset_fn=lambda *a, **k: seen.append(k.get("upstream")) or _examples(4, np.random.default_rng(0)))
    build_examples(run, "stage6_forecast")
    assert seen == [None, None, None]  # stage 6 has no upstream archive: M4 and ETT as always


@pytest.mark.parametrize("body, where", [("load\n1\n2\nnan\n" + "3\n" * 300, "row 4"),
                                         ("date,load\n2020,1\n2021,x\n" + "2022,3\n" * 300, "row 3")])
def test_bad_data_ends_in_one_line_naming_file_and_row(tiny_hf, tmp_path, body, where, run_cli):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.csv").write_text(body)
    code, _, err = run_cli(["train-prior", "--stage", "stage6_forecast", "--preset", "test", "--backbone",
                            f"hf:{tiny_hf}", "--out", tmp_path / "out", "--no-wandb", "--data-dir", tmp_path / "data"])
    assert code == 2 and err.strip().splitlines() == [e for e in err.splitlines() if e], err  # one line
    assert err.startswith("error: ") and "bad.csv" in err and where in err, err
    assert not (tmp_path / "out").exists()  # checked before anything was loaded or written


@pytest.mark.slow
@pytest.mark.skipif(not ETTH1.is_file(), reason="needs ../shared/data/ett/ETTh1.csv beside the checkout")
def test_search_loads_the_run_directory(trained, tmp_path, run_cli):
    out, _, _ = trained
    res = tmp_path / "s.json"
    code, _, err = run_cli(["search", "--prior", out, "--series", ETTH1, "--column", "OT", "--end", "12000",
                            "--context-length", "24", "--horizon", "6", "--reward", "spectral", "--method", "greedy",
                            "--out", res, "-q"])
    assert code == 0, err
    record = json.loads(res.read_text())
    assert len(record["samples"][0]["values"]) == 6


@pytest.mark.slow
def test_install_default(trained, tmp_path, monkeypatch):
    from specdifftree.paths import installed_prior_dir
    from specdifftree.prior.checkpoint import install_prior
    from specdifftree.prior.model import PriorParts

    monkeypatch.setenv("SDT_HOME", str(tmp_path / "home"))
    out, _, _ = trained
    for _ in range(2):  # installing over an earlier install replaces it
        target = install_prior(out / "stage6_forecast" / "checkpoints" / "best")
    assert target == installed_prior_dir()
    assert (target / "weights.safetensors").read_bytes() == \
        (out / "stage6_forecast" / "checkpoints" / "best" / "weights.safetensors").read_bytes()
    PriorParts.load(target)
    assert [p.name for p in target.parent.iterdir()] == ["default"]


# ------------------------------------------------------------------------------------------ crash safety

def _config():
    from specdifftree.train.config import TrainConfig

    cfg = TrainConfig.from_name("test")
    cfg.n_train, cfg.batch_size, cfg.epochs, cfg.patience = 48, 4, 4, 4  # 12 steps an epoch
    return cfg


_CHILD = """
import sys
from pathlib import Path
from specdifftree.train.curriculum import train_prior
{setup}
train_prior(stages, cfg, sys.argv[1], Path(sys.argv[2]), resume=sys.argv[3] == "1", wandb=False, progress=False)
"""


def _child_process(hf, out, resume: bool, setup: str) -> subprocess.Popen:
    """A train_prior run in its own process; `setup` (Python) defines `cfg` and `stages`."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.Popen([sys.executable, "-c", _CHILD.format(setup=setup), f"hf:{hf}", str(out),
                             "1" if resume else "0"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _child(hf, out, resume: bool) -> subprocess.Popen:
    return _child_process(hf, out, resume, "from tests.test_train_prior import _config; cfg = _config(); "
                                           "stages = ['stage1_mcq', 'stage2_captioning']")


def _outputs(out: Path) -> dict:
    files = ["metrics.csv", "checkpoints/best/weights.safetensors", "checkpoints/best/config.json",
             "test_predictions.jsonl", "stage.json"]
    out_files = {f"{s}/{f}": (out / s / f).read_bytes() for s in ("stage1_mcq", "stage2_captioning") for f in files}
    for s in ("stage1_mcq", "stage2_captioning"):  # wall time is the one figure that may differ
        out_files[f"{s}/stage.json"] = {k: v for k, v in json.loads(out_files[f"{s}/stage.json"]).items() if k != "wall_s"}
    return out_files


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_same_outputs(tiny_hf, tmp_path):
    from specdifftree.train.curriculum import train_prior

    ref, killed = tmp_path / "ref", tmp_path / "killed"
    q = _child(tiny_hf, killed, False)
    # kill the run once its first epoch is committed: it is then inside epoch 2 of stage 1
    metrics = killed / "stage1_mcq" / "metrics.csv"
    wait_for_lines(q, metrics, 2, timeout=120)
    q.send_signal(signal.SIGKILL)
    assert q.wait() == -signal.SIGKILL
    done = len(metrics.read_text().splitlines()) - 1
    assert 1 <= done < 4 and not (killed / "stage1_mcq" / "stage.json").exists()
    r = _child(tiny_hf, killed, True)
    train_prior(["stage1_mcq", "stage2_captioning"], _config(), f"hf:{tiny_hf}", ref, wandb=False, progress=False)
    assert r.wait() == 0, r.stderr.read().decode()[-2000:]
    assert _outputs(killed) == _outputs(ref)
    assert len((ref / "stage1_mcq" / "metrics.csv").read_text().splitlines()) == 5


def test_help_is_fast_and_has_examples():
    sdt = Path(sys.executable).with_name("sdt")
    t0 = time.perf_counter()
    proc = subprocess.run([str(sdt), "train-prior", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Examples" in proc.stdout and "--resume" in proc.stdout
    assert time.perf_counter() - t0 < 1.5


# ------------------------------------------------------------------------------------------ torchrun (DDP)

DDP_RTOL = 1e-5  # DDP vs one process: the same steps up to the order of float32 sums (measured ~1e-9)


def _ddp_config():
    from specdifftree.train.config import TrainConfig

    cfg = TrainConfig.from_name("test")
    cfg.n_train, cfg.batch_size, cfg.epochs, cfg.patience = 40, 6, 4, 4  # 7 steps an epoch, the last one short
    return cfg


_DDP_SCRIPT = """
import sys
from pathlib import Path
from specdifftree.train.curriculum import train_prior
from tests.test_train_prior import _ddp_config
train_prior(["stage6_forecast"], _ddp_config(), sys.argv[1], Path(sys.argv[2]), resume=sys.argv[3] == "1",
            wandb=False, progress=False)
"""


def _torchrun(tmp_path, hf, out, resume: bool, port: int) -> subprocess.Popen:
    script = tmp_path / "ddp_child.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                             str(port), str(script), f"hf:{hf}", str(out), "1" if resume else "0"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stage6_outputs(out: Path) -> dict:
    d = out / "stage6_forecast"
    files = {f: (d / f).read_bytes() for f in ("metrics.csv", "checkpoints/best/weights.safetensors",
                                               "checkpoints/best/config.json", "test_predictions.jsonl")}
    files["stage.json"] = {k: v for k, v in json.loads((d / "stage.json").read_text()).items() if k != "wall_s"}
    return files


@pytest.mark.slow
def test_torchrun_matches_one_process_and_resumes_after_a_rank_is_killed(tiny_hf, tmp_path):
    """Two DDP ranks (gloo): the test NLLs of one process within DDP_RTOL; only rank 0 writes; a
    SIGKILL of one rank mid-stage, then --resume, ends with the uninterrupted DDP run's files."""
    from specdifftree.train.curriculum import train_prior

    one, ddp, killed = tmp_path / "one", tmp_path / "ddp", tmp_path / "killed"
    ref = _torchrun(tmp_path, tiny_hf, ddp, False, free_port())
    summary = train_prior(["stage6_forecast"], _ddp_config(), f"hf:{tiny_hf}", one, wandb=False, progress=False)
    assert ref.wait() == 0, ref.stderr.read().decode()[-3000:]
    got = json.loads((ddp / "summary.json").read_text())["stage6_forecast"]
    want = summary["stage6_forecast"]
    for key in ("test_nll_prior", "test_nll_backbone", "best_val_loss"):
        assert got[key] == pytest.approx(want[key], rel=DDP_RTOL), key
    assert got["best_epoch"] == want["best_epoch"] and got["epochs_run"] == want["epochs_run"] == 4
    assert sorted(p.name for p in (ddp / "stage6_forecast").iterdir()) == \
        sorted(p.name for p in (one / "stage6_forecast").iterdir())  # rank 0's files, no others

    q = _torchrun(tmp_path, tiny_hf, killed, False, free_port())
    metrics = killed / "stage6_forecast" / "metrics.csv"
    wait_for_lines(q, metrics, 2, timeout=120, poll=0.005)  # epoch 1 committed
    ranks = children(q.pid)
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)  # one rank dies; torchrun ends the other and fails
    assert q.wait(timeout=120) != 0
    assert not (killed / "stage6_forecast" / "stage.json").exists()
    r = _torchrun(tmp_path, tiny_hf, killed, True, free_port())
    assert r.wait() == 0, r.stderr.read().decode()[-3000:]
    assert _stage6_outputs(killed) == _stage6_outputs(ddp)
