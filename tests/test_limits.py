"""Limits are errors: a query longer than the positions the backbone was trained on is refused before
any forward, and a series float32 cannot carry is named as such, with no numpy warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from specdifftree.errors import SDTError

ETTH1 = "../shared/data/ett/ETTh1.csv"


@pytest.fixture(scope="module")
def etth1_history():
    from pathlib import Path

    from specdifftree.data.sources import read_ett

    path = Path(__file__).resolve().parents[1] / ETTH1
    if not path.is_file():
        pytest.skip("shared/data is not beside the checkout")
    return path, read_ett(path, ["OT"])["OT"][:15000][-96:]


@pytest.mark.parametrize("backend", ["hf", "gguf"])
def test_a_prompt_plus_answer_past_the_trained_positions_is_refused_before_any_forward(backend, tiny_hf, tmp_path):
    from specdifftree.prior.model import TSLMPrior

    if backend == "hf":
        from specdifftree.prior.backbones.hf import HFBackbone

        bb = HFBackbone.from_pretrained(str(tiny_hf))
    else:
        from specdifftree.prior.backbones.llamacpp import LlamaCppBackbone
        from specdifftree.prior.gguf import export_gguf

        bb = LlamaCppBackbone(export_gguf(tiny_hf, tmp_path / "tiny.gguf"), n_ctx=512)
    assert bb.max_positions == 1024  # max_position_embeddings; the GGUF's n_ctx_train
    prompt = "1,2,3,4,"
    TSLMPrior(bb, prompt, max_len=1024 - len(bb.tokenize(prompt)))  # exactly fits
    with pytest.raises(SDTError) as e:
        TSLMPrior(bb, prompt, max_len=1024)
    assert f"({len(bb.tokenize(prompt))} positions) plus the answer (up to 1024 tokens)" in str(e.value)
    assert "trained on 1024" in str(e.value)
    assert (bb.cost.forward_tokens, bb.cost.model_calls) == (0, 0)


def test_horizon_5000_on_the_default_backbone_names_the_numbers_and_what_to_shorten(etth1_history):
    from specdifftree.data.context import context_from_array
    from specdifftree.prior.sources import open_prior

    source = open_prior("default")
    with pytest.raises(SDTError) as e:
        source.prior_for(context_from_array(etth1_history[1], horizon=5000))
    message = str(e.value)
    assert "trained on 2048" in message and "shorten --horizon 5000 (at most " in message
    assert "--context-length" in message and "\n" not in message
    assert (source.backbone.cost.forward_tokens, source.backbone.cost.model_calls) == (0, 0)
    source.prior_for(context_from_array(etth1_history[1], horizon=24))  # a horizon that fits is accepted


@pytest.mark.parametrize("prior", ["markov:toy3", "default"])
def test_values_float32_cannot_carry_are_named_without_a_warning(prior, run_cli, tmp_path):
    from specdifftree.data.context import context_from_array

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy overflow warning would fail here
        with pytest.raises(SDTError, match=r"value 1e\+300 at index 2 exceeds float32"):
            context_from_array(np.r_[1.0, 2.0, 1e300, np.ones(10)], horizon=4)
        context_from_array(np.r_[3e38, np.ones(10)], horizon=4)  # float32 holds 3e38
    csv = tmp_path / "big.csv"
    csv.write_text("x\n" + "\n".join(f"{1e300 * (1 + i / 100)!r}" for i in range(40)) + "\n")
    code, out, err = run_cli(["search", "--prior", prior, "--series", csv, "--horizon", 4, "--reward", "spectral",
                              "--method", "greedy"])
    lines = [line for line in err.splitlines() if not line.startswith("Loading weights")]
    assert code == 2 and lines == [lines[0]] and "exceeds float32" in lines[0], err
    assert "Warning" not in err
