"""Forecasting through search on a real ETTh1 window, with neural priors through both backends."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from specdifftree.prior.model import PriorParts
from specdifftree.prior.backbones.base import on_host

pytestmark = pytest.mark.usefixtures("one_thread")

ETTH1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ett" / "ETTh1.csv"
H = 6


@pytest.fixture(scope="module")
def tiny_dirs(tiny_hf, tmp_path_factory):
    """The tiny random Llama as a transformers dir and as an f32 GGUF."""
    from specdifftree.prior.gguf import export_gguf

    return tiny_hf, export_gguf(tiny_hf, tmp_path_factory.mktemp("tiny") / "tiny.gguf", dtype="f32")


def _search(run_cli, prior: str, out: Path, *extra) -> dict:
    code, _, err = run_cli(["search", "--prior", prior, "--series", ETTH1, "--column", "OT", "--end", "12000",
                            "--context-length", "48", "--horizon", H, "--reward", "spectral", "--method", "dts",
                            "--iterations", "24", "--batch-size", "8", "--samples", "12", "--out", out, "-q", *extra])
    assert code == 0, err
    return json.loads(out.read_text())


@pytest.mark.skipif(not ETTH1.is_file(), reason="needs ../shared/data/ett/ETTh1.csv beside the checkout")
@pytest.mark.parametrize("kind", ["hf", "gguf"])
def test_forecast_search_on_etth1(kind, tiny_dirs, tmp_path, run_cli):
    hf_dir, gguf = tiny_dirs
    rec = _search(run_cli, f"hf:{hf_dir}" if kind == "hf" else f"gguf:{gguf}", tmp_path / "o.json")
    assert len(rec["samples"]) == 12
    for s in rec["samples"]:
        assert len(s["values"]) == H and all(np.isfinite(s["values"]))  # the grammar guarantees H numbers
        assert len(s["text"].split(",")) == H
    stats = rec["stats"]
    assert stats["forward_tokens"] > 0 and stats["model_calls"] > 0 and stats["tree_nodes"] > 0
    m = rec["forecast_metrics"]
    assert m["well_formed"] == 1.0 and {"crps", "mase", "spec_w1"} <= set(m)


@pytest.mark.skipif(not ETTH1.is_file(), reason="needs ../shared/data/ett/ETTh1.csv beside the checkout")
def test_backends_agree_on_the_same_forecast_tree(tiny_dirs, tmp_path, run_cli):
    """Same weights, same seed: the HF and llama.cpp priors build the same tree and samples.

    The HF pool keeps every prefix, so it pays exactly one token per evaluated node plus the prompt;
    llama.cpp has at most 256 live sequences and counts any prefix it has to rebuild, so it pays at least that.
    """
    hf_dir, gguf = tiny_dirs
    a = _search(run_cli, f"hf:{hf_dir}", tmp_path / "a.json")
    b = _search(run_cli, f"gguf:{gguf}", tmp_path / "b.json")
    assert [s["tokens"] for s in a["samples"]] == [s["tokens"] for s in b["samples"]]
    assert a["stats"]["tree_nodes"] == b["stats"]["tree_nodes"]
    assert b["stats"]["forward_tokens"] >= a["stats"]["forward_tokens"]


def test_prior_checkpoint_round_trip_is_bit_identical(tmp_path):
    parts = PriorParts.fresh(258, "default", seed=3)
    parts.save(tmp_path / "prior")
    back = PriorParts.load(tmp_path / "prior")
    assert back.backbone_ref == "default"
    for mod_a, mod_b in ((parts.encoder, back.encoder), (parts.head, back.head)):
        sa, sb = mod_a.state_dict(), mod_b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = np.sin(np.arange(64) / 3.0) * 4 + 10
    assert np.array_equal(parts.bias(x), back.bias(x))


@pytest.mark.parametrize("args,expected", [
    (["--prior", "gguf:/nonexistent/model.gguf"], "/nonexistent/model.gguf"),
    (["--prior", "hf:/nonexistent/dir"], "/nonexistent/dir"),
    (["--prior", "default", "--context-length", "3"], "--context-length"),
])
def test_bad_neural_prior_input_is_one_line(args, expected, run_cli):
    base = ["search", "--series", str(ETTH1), "--column", "OT", "--horizon", "4", "--reward", "spectral", "-q"]
    code, _, err = run_cli(base + args)
    err = err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_not_a_model_directory(tmp_path, run_cli):
    (tmp_path / "junk.txt").write_text("hello")
    code, _, err = run_cli(["search", "--prior", tmp_path, "--series", ETTH1, "--column", "OT", "--horizon", "4",
                            "--reward", "spectral", "-q"])
    err = err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a prior checkpoint" in err[0]


def test_soft_prompt_checkpoint_round_trips_and_changes_the_logprobs(tiny_dirs, tmp_path):
    from specdifftree.data.prompts import forecast_codec, forecast_prompt
    from specdifftree.prior.backbones.hf import HFBackbone
    from specdifftree.prior.model import TSLMPrior

    hf_dir, _ = tiny_dirs
    x = np.sin(np.arange(48) / 3.0) * 4 + 10
    parts = PriorParts.fresh(258, f"hf:{hf_dir}", seed=1, soft_prompt_dim=32)
    parts.save(tmp_path / "sp")
    back = PriorParts.load(tmp_path / "sp")
    sa, sb = parts.projector.state_dict(), back.projector.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    soft = back.soft_prompt_for(x)
    assert soft.shape == (12, 32) and np.array_equal(soft, parts.soft_prompt_for(x))  # 48 points / patch 4

    bb = HFBackbone.from_pretrained(str(hf_dir))
    prompt = forecast_prompt(x, H, forecast_codec(x))
    plain = PriorParts.fresh(258, f"hf:{hf_dir}", seed=1)  # same encoder and head, no projector
    assert plain.soft_prompt_for(x) is None and np.array_equal(plain.bias(x), back.bias(x))
    without = on_host(TSLMPrior(bb, prompt, 8, plain.bias(x)).start()[1])
    with_sp = on_host(TSLMPrior(bb, prompt, 8, back.bias(x), soft_prompt=soft).start()[1])
    assert np.abs(with_sp - without).max() > 1e-3
    with torch.inference_mode():  # without a projector: exactly log_softmax(backbone logits + bias)
        logits = bb.model(torch.tensor([bb.tokenize(prompt)])).logits[0, -1].numpy()
    expected = torch.log_softmax(torch.tensor(logits + plain.bias(x), dtype=torch.float64), -1).numpy()
    np.testing.assert_allclose(without, expected, atol=1e-5)


@pytest.mark.skipif(not ETTH1.is_file(), reason="needs ../shared/data/ett/ETTh1.csv beside the checkout")
def test_soft_prompt_prior_searches_on_hf_and_is_refused_on_gguf(tiny_dirs, tmp_path, run_cli):
    hf_dir, gguf = tiny_dirs
    PriorParts.fresh(258, f"hf:{hf_dir}", soft_prompt_dim=32).save(tmp_path / "hf_sp")
    rec = _search(run_cli, str(tmp_path / "hf_sp"), tmp_path / "o.json")
    assert rec["prior"]["soft_prompt_tokens"] == 12 and all(len(s["values"]) == H for s in rec["samples"])
    PriorParts.fresh(258, f"gguf:{gguf}", soft_prompt_dim=32).save(tmp_path / "gguf_sp")
    code, _, err = run_cli(["search", "--prior", tmp_path / "gguf_sp", "--series", ETTH1, "--column", "OT",
                            "--horizon", "4", "--reward", "spectral", "-q"])
    err = err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs a transformers backbone" in err[0], err
