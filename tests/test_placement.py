"""Device and dtype end to end (--device, --dtype), the device-side search path, transformers
compatibility (no FutureWarning from a forward) and a corrupt weights file (one line, exit 2).

No GPU is needed: the device path is the torch path, which runs the same on the CPU; CUDA-only
branches are checked where they can be (an unavailable device is a one-line error).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from specdifftree.errors import SDTError
from specdifftree.prior.backbones.base import Placement
from specdifftree.prior.backbones.hf import HFBackbone
from specdifftree.prior.backbones.base import on_host

ETTH1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ett" / "ETTh1.csv"
needs_etth1 = pytest.mark.skipif(not ETTH1.is_file(), reason="needs ../shared/data/ett/ETTh1.csv beside the checkout")

# bf16 weights against float32 on the same random model: the largest |log p| difference over the
# tokens the grammar allows, and the total-variation distance of the next-token distributions.
# Measured on this model (6 prefixes, the grammar on): max |d log p| 0.0012, TV 0.0003; asserted
# with a margin of about 10x (bf16 keeps 8 mantissa bits: ~0.4% relative error per weight).
BF16_MAX_ABS_LOGP, BF16_MAX_TV = 0.01, 0.003


@pytest.mark.parametrize("device,dtype,n_gpu_layers", [
    ("gpu", "auto", None), ("cuda:x", "auto", None), ("cpu:0", "auto", None), ("cpu", "fp8", None),
    ("cpu", "auto", -2),
])
def test_bad_placement_is_one_line(device, dtype, n_gpu_layers):
    with pytest.raises(SDTError, match="--device|--dtype|--n-gpu-layers"):
        Placement(device, dtype, n_gpu_layers).validate()


def test_auto_placement_and_unavailable_devices():
    p = Placement()
    if torch.cuda.is_available():
        assert p.torch_device().type == "cuda" and p.torch_dtype() == torch.bfloat16 and p.gpu_layers() == -1
        return
    assert p.torch_device() == torch.device("cpu") and p.torch_dtype() == torch.float32 and p.gpu_layers() == 0
    assert Placement("cpu", "bfloat16").torch_dtype() == torch.bfloat16
    assert Placement("cuda", n_gpu_layers=3).gpu_layers() == 3
    with pytest.raises(SDTError, match="no CUDA device; use --device cpu"):
        Placement("cuda:0").torch_device()


@needs_etth1
def test_cli_rejects_an_unavailable_device(tiny_hf, run_cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(["search", "--prior", f"hf:{tiny_hf}", "--series", ETTH1, "--column", "OT", "--horizon", "4",
                            "--context-length", "16", "--reward", "length", "--device", "cuda", "-q"])
    assert code == 2
    err = err.strip()
    assert "no CUDA device" in err and len(err.splitlines()) == 1


def _forecast_prior(model_dir: Path, placement: Placement):
    from specdifftree.data.context import build_context
    from specdifftree.prior.sources import load_prior

    context = build_context(str(ETTH1), "OT", 6, 32, 12000)
    return load_prior(f"hf:{model_dir}", context, placement=placement)


@needs_etth1
def test_bf16_logprobs_agree_with_float32_within_the_stated_tolerance(tiny_hf):
    f32 = _forecast_prior(tiny_hf, Placement("cpu", "float32"))
    bf16 = _forecast_prior(tiny_hf, Placement("cpu", "bfloat16"))
    assert bf16.backbone.dtype == torch.bfloat16 and f32.backbone.dtype == torch.float32
    (ra, la), (rb, lb) = f32.start(), bf16.start()
    la, lb = on_host(la), on_host(lb)
    toks = np.array([ord("1"), ord("2"), ord("-"), ord("3"), ord("9")])
    (_, la2), (_, lb2) = f32.advance(np.full(5, ra), toks), bf16.advance(np.full(5, rb), toks)
    la2, lb2 = on_host(la2), on_host(lb2)
    a, b = np.vstack([la[None], la2]), np.vstack([lb[None], lb2])
    assert a.dtype == b.dtype == np.float32  # log-probs are float32 whatever the weights
    allowed = np.isfinite(a)
    assert np.array_equal(allowed, np.isfinite(b))  # the grammar masks the same tokens
    worst = np.abs(a[allowed] - b[allowed]).max()
    tv = 0.5 * np.abs(np.exp(a) - np.exp(b)).sum(axis=1).max()
    print(f"bf16 vs float32: max |d log p| {worst:.4f}, TV {tv:.4f}")
    assert worst <= BF16_MAX_ABS_LOGP and tv <= BF16_MAX_TV


@pytest.mark.slow
@needs_etth1
def test_bf16_forecast_runs_end_to_end(tiny_hf, tmp_path, run_cli):
    out = tmp_path / "o.json"
    args = ["search", "--prior", f"hf:{tiny_hf}", "--series", ETTH1, "--column", "OT", "--end", "12000",
            "--context-length", "32", "--horizon", "6", "--reward", "spectral", "--method", "dts",
            "--iterations", "24", "--batch-size", "8", "--samples", "8", "--device", "cpu", "--dtype", "bfloat16",
            "--out", out, "-q"]
    code, _, err = run_cli(args)
    assert code == 0, err
    rec = json.loads(out.read_text())
    assert rec["prior"]["dtype"] == "bfloat16" and rec["prior"]["device"] == "cpu"
    assert rec["forecast_metrics"]["well_formed"] == 1.0
    assert all(len(s["values"]) == 6 for s in rec["samples"])


@pytest.mark.slow
@needs_etth1
def test_dts_keeps_rows_on_the_model_device_and_never_copies_them_to_the_host(tiny_hf, monkeypatch):
    """The prior gives torch rows where the model runs and the tree draws from them there: no [B, V]
    host copy (`on_host`, `to_numpy`) is made by DTS, and only ids and scalars come back."""
    from specdifftree.rewards import parse_reward
    from specdifftree.data.context import build_context
    from specdifftree.prior.backbones import base
    from specdifftree.search import rows, sampler
    from specdifftree.search.common import Problem, SearchConfig
    from specdifftree.search.dts import run_dts

    prior = _forecast_prior(tiny_hf, Placement("cpu", "float32"))

    def no_host_rows(*_a, **_k):
        raise AssertionError("a [B, V] host copy was asked for")

    given = []

    def recording(fn):
        def call(*args):
            handles, logp = fn(*args)
            given.append(logp)
            return handles, logp
        return call

    prior.start, prior.advance = recording(prior.start), recording(prior.advance)
    monkeypatch.setattr(base, "on_host", no_host_rows)
    monkeypatch.setattr(sampler, "to_numpy", no_host_rows)
    monkeypatch.setattr(rows, "to_numpy", no_host_rows)
    problem = Problem(prior, parse_reward(["spectral"]), build_context(str(ETTH1), "OT", 6, 32, 12000))
    result = run_dts(problem, SearchConfig(iterations=32, batch_size=8, samples=8), np.random.default_rng(0))
    assert given and all(isinstance(r, torch.Tensor) and r.device == prior.backbone.device for r in given)
    pool = result.tree.rows.data[0]
    assert isinstance(pool, torch.Tensor) and pool.device == prior.backbone.device and pool.dtype == torch.float32
    assert len(result.samples) == 8 and result.tree.size > 1


def test_forwards_print_no_future_warning(tiny_hf):
    """The backbone uses the cache interface transformers documents now (DynamicCache with layers):
    no FutureWarning (a deprecation that will break with a later release) from prefill or a step."""
    bb = HFBackbone.from_pretrained(str(tiny_hf), Placement("cpu", "float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        root, _ = bb.start([1, 2, 3])
        kids, _ = bb.advance(np.array([root, root]), np.array([4, 5]))
        bb.advance(kids, np.array([6, 7]))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_is_one_line_and_exit_2(tiny_hf, tmp_path, damage, run_cli):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_hf, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * 64 + data[64:])
    code, _, err = run_cli(["search", "--prior", f"hf:{broken}", "--series", ETTH1, "--column", "OT", "--horizon", "4",
                            "--context-length", "16", "--reward", "spectral", "-q"])
    err = err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "could not load" in err and "Traceback" not in err


def test_experiment_files_take_device_dtype_and_gpu_layers():
    from specdifftree.experiments.config import from_dict
    from specdifftree.experiments.runner import experiment_placement

    raw = {"name": "t", "prior": "markov:toy3", "reward": "format", "budgets": [40],
           "datasets": {"d": {"source": "ett", "file": "ett/ETTh1.csv", "horizon": 4, "context_length": 32}},
           "methods": {"greedy": {}}}
    assert experiment_placement(from_dict(raw)) == Placement("auto", "auto", None)
    cfg = from_dict({**raw, "device": "cpu", "dtype": "bfloat16", "n_gpu_layers": 8})
    assert experiment_placement(cfg) == Placement("cpu", "bfloat16", 8)
    for bad, msg in (({"device": "gpu"}, "device must be"), ({"dtype": "fp8"}, "dtype must be"),
                     ({"n_gpu_layers": "all"}, "n_gpu_layers must be")):
        with pytest.raises(SDTError, match=msg):
            from_dict({**raw, **bad})
