"""The sensor-language model: the SigLIP loss, the towers' inputs, training that resumes after kill -9
to the same weights, zero-shot classification and retrieval, the `sensorlm:DIR` reward, and bad
input ending in one line and exit 2 before torch is imported."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from specdifftree.errors import SDTError
from specdifftree.paths import default_data_dir

DATA = default_data_dir()
HAR6 = DATA / "har_chest_acc" / "6.csv" if DATA else None
needs_data = pytest.mark.skipif(DATA is None or not (DATA / "har_chest_acc").is_dir(), reason="needs shared/data")
SDT = str(Path(sys.executable).with_name("sdt"))


# ------------------------------------------------------------------------------------------ pieces


def test_siglip_loss_is_the_formula():
    import torch

    from specdifftree.sensorlm.model import siglip_loss

    g = torch.Generator().manual_seed(0)
    zs = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    zt = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    log_t, b = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    want = 0.0
    for i in range(5):
        for j in range(5):
            y = 1.0 if i == j else -1.0
            want += -math.log(1 / (1 + math.exp(-y * (10.0 * float(zs[i] @ zt[j]) - 10.0))))
    assert float(siglip_loss(zs, zt, log_t, b)) == pytest.approx(want / 25, rel=1e-5)


def test_windows_become_masked_patches():
    from specdifftree.sensorlm.config import SensorLMConfig
    from specdifftree.sensorlm.inputs import series_batch

    cfg = SensorLMConfig(window=64, channels=3, patch=16, group=1)
    xyz = np.random.default_rng(0).normal(2000, 30, (3, 100))
    short = np.arange(40.0)[None]  # one channel, 2.5 patches: the oldest 8 points are dropped
    b = series_batch([xyz, short], cfg)
    assert b.patches.shape == (2, 3, 4, 16) and b.stats.shape == (2, 3, 3) and b.mask.shape == (2, 3, 4)
    assert b.mask[0].all() and b.mask[1].sum() == 2 and b.mask[1, 0, :2].all()
    np.testing.assert_allclose(b.patches[0].reshape(3, -1).std(axis=1), 1.0, atol=1e-5)  # z-scored per channel
    grouped = series_batch([xyz], SensorLMConfig(window=64, channels=3, patch=16, group=3))
    assert grouped.patches.shape == (1, 1, 4, 48)
    with pytest.raises(SDTError, match="at most 3"):
        series_batch([np.zeros((4, 64))], cfg)


def test_towers_give_unit_vectors_and_stay_small():
    import torch

    from specdifftree.config import load_preset
    from specdifftree.sensorlm.config import SensorLMConfig
    from specdifftree.sensorlm.model import SensorLM, n_params

    for name in ("smoke", "default"):
        assert n_params(SensorLM(SensorLMConfig(**load_preset("sensorlm", name)["model"]))) < 3_000_000
    cfg = SensorLMConfig(window=64, patch=16, width=32, heads=2, ff=64, text_width=32, text_heads=2, text_ff=64,
                         text_len=16, embed=8, vocab=50)
    m = SensorLM(cfg)
    from specdifftree.sensorlm.inputs import series_batch

    zs = m.encode_series(*series_batch([np.random.default_rng(1).normal(size=(2, 64))], cfg).tensors())
    zt = m.encode_text(torch.tensor([[3, 4, 5, 0]]), torch.tensor([[True, True, True, False]]))
    assert zs.shape == zt.shape == (1, 8)
    assert float(zs.detach().norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(zt.detach().norm()) == pytest.approx(1.0, abs=1e-5)
    assert m.log_scale.exp().item() == pytest.approx(10.0) and m.bias.item() == pytest.approx(-10.0)


def test_tokenizer_and_recall_and_probe():
    from specdifftree.sensorlm.evaluate import fit_probe, macro_f1, predict_probe, recall_at_k
    from specdifftree.sensorlm.inputs import text_batch, train_tokenizer

    tok = train_tokenizer(["The recording shows walking.", "The mean of x is 12.5."] * 5, vocab=60)
    ids, mask = text_batch(tok, ["The recording shows walking.", ""], 4)
    assert ids.shape == (2, 4) and mask[1].sum() == 1
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.0, 0.1, 0.2]])
    assert recall_at_k(sim, 1) == pytest.approx(2 / 3) and recall_at_k(sim, 2) == 1.0
    assert macro_f1(np.array([0, 1, 1]), np.array([0, 1, 0]), 2) == pytest.approx((2 / 3 + 2 / 3) / 2)
    z = np.r_[np.random.default_rng(0).normal(-2, 0.3, (20, 3)), np.random.default_rng(1).normal(2, 0.3, (20, 3))]
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    assert (predict_probe(fit_probe(z, y, 2), z) == y).all()


# ------------------------------------------------------------------------------------------ reward specs


def test_sensorlm_spec_is_not_a_module_function(tmp_path):
    from specdifftree.rewards.plugins import parse_reward, reward_spec

    with pytest.raises(SDTError, match="sensorlm model directory not found"):
        parse_reward("sensorlm:" + str(tmp_path / "none"))
    with pytest.raises(SDTError, match="needs a model directory"):
        parse_reward("sensorlm:")
    (tmp_path / "sensorlm.json").write_text('{"kind": "flow"}')
    with pytest.raises(SDTError, match="another kind"):
        parse_reward(f"0.5*sensorlm:{tmp_path} + caption-consistency")
    assert reward_spec(f"caption-consistency + 0.5*sensorlm:{tmp_path}") == f"caption-consistency+0.5*sensorlm:{tmp_path}"


# ------------------------------------------------------------------------------------------ bad input


def _sdt_no_torch(args: list[str]) -> tuple[int, str, bool]:
    """Run sdt ARGS in a fresh interpreter: (exit code, stderr, whether torch was imported)."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stderr.write('TORCH=%s\\n' % ('torch' in sys.modules)))\n"
            "from specdifftree.cli import main\n"
            f"main({args!r})\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = [x for x in p.stderr.splitlines() if not x.startswith("TORCH=")]
    return p.returncode, "\n".join(lines), "TORCH=True" in p.stderr


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory) -> Path:
    """A directory that passes the manifest check (weights never read: every case fails before)."""
    d = tmp_path_factory.mktemp("fake_slm")
    (d / "sensorlm.json").write_text(json.dumps({"kind": "sensorlm", "model": {"window": 64, "patch": 16,
                                                                                "channels": 3}}))
    (d / "model.safetensors").write_bytes(b"x")
    (d / "tokenizer.json").write_text("{}")
    return d


@needs_data
@pytest.mark.parametrize("case", ["other-kind", "channels", "empty-labels", "template", "no-series", "texts"])
def test_bad_input_one_line_exit_2_before_torch(case, fake_model, tmp_path):
    other = tmp_path / "flow"
    other.mkdir()
    (other / "sensorlm.json").write_text('{"kind": "flow"}')
    ett = str(DATA / "ett" / "ETTh1.csv")
    argv, fragment = {
        "other-kind": (["classify", "--model", str(other), "--series", str(HAR6), "--labels", "a,b"], "another kind"),
        "channels": (["classify", "--model", str(fake_model), "--series", ett, "--labels", "a,b"], "at most 3"),
        "empty-labels": (["classify", "--model", str(fake_model), "--series", str(HAR6), "--labels", " "], "--labels"),
        "template": (["classify", "--model", str(fake_model), "--series", str(HAR6), "--labels", "a",
                      "--template", "no label"], "{label}"),
        "no-series": (["retrieve", "--model", str(fake_model), "--series", str(tmp_path / "no.csv"), "--texts",
                       str(tmp_path / "no.txt")], "not found"),
        "texts": (["retrieve", "--model", str(fake_model), "--series", str(HAR6), "--texts", str(other / "sensorlm.json")],
                  "at most"),
    }[case]
    if case == "texts":  # a texts file is read before the series: make it empty instead
        (tmp_path / "empty.txt").write_text("\n")
        argv, fragment = argv[:-1] + [str(tmp_path / "empty.txt")], "holds no text"
    code, err, torch_loaded = _sdt_no_torch(["sensorlm", *argv])
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and fragment in err, err
    assert not torch_loaded


def test_train_refuses_an_existing_run_without_resume(tmp_path, run_cli):
    (tmp_path / "sensorlm.json").write_text("{}")
    code, _, err = run_cli(["sensorlm", "train", "--preset", "test", "--out", tmp_path, "--no-wandb"])
    assert code == 2 and "--resume" in err


# ------------------------------------------------------------------------------------------ training


def _train(out: Path) -> subprocess.Popen:
    return subprocess.Popen([SDT, "sensorlm", "train", "--preset", "test", "--out", str(out), "--no-wandb"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The test preset trained without interruption."""
    if DATA is None:
        pytest.skip("needs shared/data")
    from specdifftree.sensorlm.train import SensorLMTrainConfig, train_sensorlm

    out = tmp_path_factory.mktemp("slm") / "run"
    train_sensorlm(SensorLMTrainConfig.from_name("test"), out, wandb=False, show_progress=False)
    return out


@needs_data
def test_training_writes_a_model_and_resume_after_kill_matches(trained, tmp_path):
    manifest = json.loads((trained / "sensorlm.json").read_text())
    assert manifest["kind"] == "sensorlm" and len(manifest["metrics"]) == 3
    for name in ("model.safetensors", "tokenizer.json", "metrics.csv", "loss.png", "recall.png", "tracking.jsonl"):
        assert (trained / name).is_file(), name
    out = tmp_path / "killed"
    p = _train(out)
    deadline = time.time() + 300
    while not (out / "state.safetensors").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    subprocess.run([SDT, "sensorlm", "train", "--preset", "test", "--out", str(out), "--resume", "--no-wandb"],
                   check=True, capture_output=True, timeout=600)
    import safetensors.torch

    a = safetensors.torch.load_file(str(trained / "model.safetensors"))
    b = safetensors.torch.load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


@needs_data
def test_classify_and_retrieve_a_held_out_participant(trained, run_cli, tmp_path):
    code, out, err = run_cli(["sensorlm", "classify", "--model", trained, "--series", HAR6,
                              "--labels", "sitting,standing,walking,stairs", "--json"])
    assert code == 0, err
    res = json.loads(out)
    assert res["labels"] == ["sitting", "standing", "walking", "stairs"] and res["n_scored"] > 0
    assert 0.0 <= res["accuracy"] <= 1.0
    w = res["windows"][0]
    assert set(w) >= {"start", "end", "predicted", "probs", "truth"} and sum(w["probs"].values()) == pytest.approx(1.0)
    code, out, _ = run_cli(["sensorlm", "classify", "--model", trained, "--series", HAR6, "--labels", "sitting,walking"])
    assert code == 0 and "accuracy:" in out and "predicted" in out.splitlines()[0]
    texts = tmp_path / "t.txt"
    texts.write_text("The recording shows walking.\nThe recording shows sitting.\n")
    code, out, _ = run_cli(["sensorlm", "retrieve", "--model", trained, "--series", HAR6, "--texts", texts, "--top", "2"])
    assert code == 0 and "logit" in out


@needs_data
def test_reward_scores_text_against_the_context_and_counts_its_cost(trained):
    from specdifftree.data.context import Context
    from specdifftree.rewards.plugins import parse_reward
    from specdifftree.sensorlm.apply import read_windows
    from specdifftree.sensorlm.reward import reward_costs

    x = read_windows(HAR6, (), 128).windows[3]
    ctx = Context(series=x[0], covariates=[x[1], x[2]])
    reward = parse_reward(f"sensorlm:{trained} + 0.5*format")
    r1, r2 = reward("Answer: walking", ctx), reward("Answer: walking", ctx)
    assert math.isfinite(r1) and r1 == r2
    cost = reward_costs(reward)[f"sensorlm:{trained}"]
    assert cost["text_calls"] == 1 and cost["series_calls"] == 1 and cost["seconds"] > 0


@pytest.mark.slow
@needs_data
def test_smoke_preset_validation_loss_falls(tmp_path):
    """The acceptance run (minutes): `sdt sensorlm train --preset smoke` with a falling validation loss."""
    p = subprocess.run([SDT, "sensorlm", "train", "--preset", "smoke", "--out", str(tmp_path / "slm"), "--no-wandb"],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads((tmp_path / "slm" / "sensorlm.json").read_text())["metrics"]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_a_qa_answer_is_scored_as_the_caption_sentence():
    from specdifftree.data.context import context_from_array
    from specdifftree.sensorlm.reward import scored_text

    x = np.random.default_rng(0).normal(2000, 20, (3, 64))
    ctx = context_from_array(x[0], covariates=[x[1], x[2]], task="qa", fs=52.0, question="What is the person doing?",
                             choices="walking,sitting")
    assert scored_text("Steady posture. Answer: sitting", ctx) == "The recording shows sitting."
    assert scored_text("Steady posture", ctx) == "Steady posture"
    assert scored_text("Answer: walking", context_from_array(x[0], horizon=4)) == "Answer: walking"
