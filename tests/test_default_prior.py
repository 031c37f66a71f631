"""Acceptance on the real embedded default backbone (issue 3), not a random tiny model:

- the same weights through `hf:DIR` and `gguf:FILE` (f32 export, f32 KV cache) give next-token
  log-probs within 1e-3 on fixed prompts, and the two tokenizers give identical ids;
- `sdt search --prior default | hf:DIR | gguf:FILE` forecasts a real ETTh1 evaluation window;
- `sdt bench speed` reports both ratios on either backend.

Uses the shared backbone cache (`default_backbone` fixture), so it is slow only on a fresh machine.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from specdifftree.data.prompts import describe, forecast_codec, forecast_prompt
from specdifftree.data.series import read_csv_column
from specdifftree.data.splits import ett_range
from specdifftree.errors import SDTError

pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

ETTH1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ett" / "ETTh1.csv"
needs_etth1 = pytest.mark.skipif(not ETTH1.is_file(), reason="needs ../shared/data/ett/ETTh1.csv beside the checkout")
CONTEXT, H = 64, 8
TOL = 1e-3


def eval_window() -> tuple[np.ndarray, int]:
    """The first ETTh1 OT window of the evaluation part: (history [CONTEXT], its --end)."""
    full = read_csv_column(ETTH1, "OT")
    end = ett_range(len(full), "eval")[0] + CONTEXT
    return full[end - CONTEXT:end], end


def parity_prompts() -> list[str]:
    """Forecast prompts (with a partial answer), a caption, a Q&A, EOS inside and at the end, non-ASCII."""
    x = eval_window()[0] if ETTH1.is_file() else np.sin(np.arange(CONTEXT) / 3.0) * 7 + 12
    codec = forecast_codec(x)
    forecast = forecast_prompt(x, H, codec)
    return [
        forecast,
        forecast + codec.encode(x[-3:])[:6],
        describe(x) + "\nThe series trends upward and repeats about every 24 points; it ranges from 1.5 to 9.",
        describe(x[:16]) + " Values: " + codec.encode(x[:16]) + "\nQuestion: what is the maximum? Answer: ",
        forecast + codec.encode(x[:H]) + "<|endoftext|>",
        "12,13,14<|endoftext|>" + describe(x[:8]) + " Values: -3,-2,",
        "température −3,5 °C; 湿度 80%\n",
    ]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def default_gguf(default_backbone, tmp_path_factory, run_cli):
    """The default backbone exported by `sdt export-gguf` (f32)."""
    out = tmp_path_factory.mktemp("default_gguf") / "default.gguf"
    code, _, err = run_cli(["export-gguf", default_backbone, "--out", out, "--dtype", "f32"])
    assert code == 0 and out.is_file(), err
    return out


@pytest.fixture(scope="module")
def backbones(default_backbone, default_gguf):
    """(HFBackbone, LlamaCppBackbone) opened through the `hf:DIR` and `gguf:FILE` specs (f32 KV cache)."""
    from specdifftree.prior.sources import open_backbone

    return open_backbone(f"hf:{default_backbone}"), open_backbone(f"gguf:{default_gguf}")


def test_tokenizers_give_identical_ids(backbones, default_backbone):
    from transformers import AutoTokenizer

    hf, gg = backbones
    auto = AutoTokenizer.from_pretrained(default_backbone)
    assert (hf.vocab_size, hf.eos_id) == (gg.vocab_size, gg.eos_id) == (258, 256)
    for p in parity_prompts():
        ids = hf.tokenize(p)
        assert gg.tokenize(p) == ids == auto.encode(p, add_special_tokens=False)
        assert gg.detokenize(ids) == hf.detokenize(ids)
    assert hf.tokenize("x<|endoftext|>")[-1] == gg.tokenize("x<|endoftext|>")[-1] == 256
    assert all(len(hf.tokenize(d)) == 1 for d in "0123456789,-.")  # every digit is one token


def test_next_token_logprobs_agree_within_1e3(backbones):
    hf, gg = backbones
    worst = 0.0
    for p in parity_prompts():
        ids = hf.tokenize(p)
        (h_root, h_logits), (g_root, g_logits) = hf.start(ids), gg.start(ids)
        worst = max(worst, np.abs(log_softmax(h_logits) - log_softmax(g_logits)).max())
        # and one branching step from each root: digits, separator and EOS in one batch
        toks = np.array([ord("1"), ord("7"), ord(","), 256])
        (_, h_next), (_, g_next) = hf.advance(np.array([h_root] * 4), toks), gg.advance(np.array([g_root] * 4), toks)
        worst = max(worst, np.abs(log_softmax(h_next) - log_softmax(g_next)).max())
    assert worst < TOL, worst


def _search(run_cli, prior: str, out: Path) -> dict:
    _, end = eval_window()
    args = ["search", "--prior", prior, "--series", ETTH1, "--column", "OT", "--horizon", H,
            "--context-length", CONTEXT, "--end", end, "--reward", "spectral", "--method", "dts",
            "--iterations", 16, "--batch-size", 8, "--samples", 8, "--out", out, "-q"]
    code, _, err = run_cli(args)
    assert code == 0, err
    return json.loads(out.read_text())


@needs_etth1
@pytest.mark.parametrize("kind", ["default", "hf", "gguf"])
def test_search_forecasts_an_etth1_eval_window(kind, default_backbone, default_gguf, tmp_path, run_cli):
    prior = {"default": "default", "hf": f"hf:{default_backbone}", "gguf": f"gguf:{default_gguf}"}[kind]
    rec = _search(run_cli, prior, tmp_path / "out.json")
    assert len(rec["samples"]) == 8
    for s in rec["samples"]:
        assert len(s["values"]) == H and np.all(np.isfinite(s["values"]))
    assert rec["stats"]["forward_tokens"] > rec["prior"]["prompt_tokens"] and rec["stats"]["model_calls"] > 1
    assert rec["forecast_metrics"]["well_formed"] == 1.0


@needs_etth1
@pytest.mark.parametrize("kind", ["hf", "gguf"])
def test_bench_speed_reports_both_ratios(kind, default_gguf, run_cli):
    """Both ratios on either backend; the node-memory searches (child processes) on llama.cpp only,
    where they take seconds."""
    backbone = "default" if kind == "hf" else f"gguf:{default_gguf}"
    code, out, err = run_cli(["bench", "speed", "--backbone", backbone, "--context-length", "32", "--horizon", "4",
                              "--iterations", "8", "--batch", "4", "--repeats", "1", "--json",
                              "--node-memory" if kind == "gguf" else "--no-node-memory"])
    assert code == 0, err
    r = json.loads(out)
    assert r["backend"] == ("transformers" if kind == "hf" else "llama.cpp")
    assert r["dts_new_tokens"] > 0 and r["sampled_tokens"] >= r["dts_new_tokens"]
    assert r["throughput_ratio"] > 0 and 1.0 <= r["forward_per_new"] < 1 + (r["prompt_tokens"] + 1) / r["dts_new_tokens"]
    if kind == "gguf":
        m = r["node_memory"]
        assert m["tree_nodes"][1] > m["tree_nodes"][0] > 0 and m["warnings"] == 0
        assert m["bytes_per_node"] <= m["bound_bytes"], m
    else:
        assert "node_memory" not in r


def test_bench_backend_must_fit_the_backbone():
    from specdifftree.bench.speed import bench_spec

    assert bench_spec("hf:/some/dir") == "hf:/some/dir" and bench_spec("gguf:/m.gguf") == "gguf:/m.gguf"
    with pytest.raises(SDTError, match="export-gguf"):
        bench_spec("hf:/some/dir", "gguf")
