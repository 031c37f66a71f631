"""sdt train-prior --variant sp: the training loss is the search prior's own log-probs, all six stages
write their files (LoRA from stage 3 with --lora), a SIGKILL loses nothing, and `--prior RUN_DIR`
searches the result with the upstream layout."""

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from specdifftree.data.example import STAGES, Example
from specdifftree.prior.backbones.base import on_host
from processes import wait_for_lines
from tests.test_train_prior import _child_process

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone(tiny_hf):
    from specdifftree.prior.backbones.hf import HFBackbone

    return HFBackbone.from_pretrained(str(tiny_hf))


def _sp_config(lora: bool = False, **over):
    from specdifftree.train.config import TrainConfig

    cfg = TrainConfig.from_name("test").for_variant("sp", lora)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def test_training_loss_is_the_search_priors_log_prob(backbone):
    """sp_nll (batched, right-padded, several series) equals prefill + advance through the backbone's
    cache, the path `sdt search` takes, token for token."""
    from specdifftree.prior.encoder import EncoderConfig
    from specdifftree.prior.model import TSLMPrior
    from specdifftree.train.soft_prompt import Layout, SPParts, prompt_segments, sp_nll

    rng = np.random.default_rng(0)
    exs = [Example("stage3_cot", [rng.normal(size=n) for n in lens], [f"Axis {j}" for j in range(len(lens))],
                   "Look.", "Which?", f"Answer: {lab}") for lens, lab in [([9, 30], "up"), ([17], "down"), ([40], "x")]]
    parts = SPParts.fresh(backbone, "hf:x", EncoderConfig.upstream(width=16, layers=1, heads=2, ff=32), seed=1)
    with torch.no_grad():
        for p in parts.projector.parameters():
            p.normal_(std=0.5)
    layout = Layout.of(exs, backbone)
    answers = [backbone.tokenize(e.answer) + [backbone.eos_id] for e in exs]
    with torch.no_grad():
        nll, owner, _ = sp_nll(parts, backbone, layout, [0, 1, 2], answers)
    for r in range(3):
        prior = TSLMPrior(backbone, "", 64, segments=prompt_segments(parts, backbone, layout, r))
        h, lp = prior.start()
        lp = on_host(lp)
        want = []
        for t in answers[r]:
            want.append(-lp[t])
            if t != backbone.eos_id:
                kids, lps = prior.advance(np.array([h]), np.array([t]))
                h, lp = int(kids[0]), on_host(lps)[0]
        np.testing.assert_allclose(nll[owner == r].numpy(), want, atol=1e-4)


def test_lora_hooks_match_merged_weights(backbone):
    """Training applies LoRA by hooks; search merges it (W + scale B A): the same logits."""
    import copy

    from specdifftree.train.soft_prompt import LoRA

    model = copy.deepcopy(backbone.model)
    lora = LoRA(model, r=2, alpha=4).attach(model)
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(std=0.2)
    ids = torch.tensor([[5, 6, 7, 8]])
    hooked = model(input_ids=ids).logits
    lora.detach()
    with torch.no_grad():
        for path, (a, b) in lora.factors().items():
            model.get_submodule(path).weight.add_(lora.scale * b @ a)
    torch.testing.assert_close(model(input_ids=ids).logits, hooked, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def trained_sp(tiny_hf, tmp_path_factory, run_cli):
    out = tmp_path_factory.mktemp("run") / "sp"
    args = ["train-prior", "--stage", "all", "--preset", "test", "--variant", "sp", "--lora",
            "--backbone", f"hf:{tiny_hf}", "--out", out, "--no-wandb"]
    code, _, err = run_cli(args)
    assert code == 0, err
    return out


@pytest.mark.slow
def test_all_six_stages_write_every_file_and_lora_starts_at_stage_3(trained_sp):
    from specdifftree.prior.opentslm import OpenTSLMWeights

    out = trained_sp
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == list(STAGES)
    assert json.loads((out / "train_prior.json").read_text())["variant"] == "sp"
    for stage in STAGES:
        d = out / stage
        w = OpenTSLMWeights.load(d / "checkpoints" / "best")
        assert w.projector.depth == 1 and not w.encoder.config.norm_first and not w.encoder.config.final_norm
        assert bool(w.lora) == (STAGES.index(stage) >= STAGES.index("stage3_cot"))
        assert {"loss.png", "perplexity.png", "accuracy.png"} <= {p.name for p in d.glob("*.png")}
        assert "test_nll_prior" in (d / "index.html").read_text()
        preds = [json.loads(line) for line in (d / "test_predictions.jsonl").read_text().splitlines()]
        assert len(preds) == 6 and "<series:" in preds[0]["prompt"]
        s = summary[stage]
        assert s["test_nll_prior"] > 0 and s["test_nll_backbone"] > 0 and s["epochs_run"] >= 1
        assert ("test_accuracy" in s) == (stage not in ("stage2_captioning", "stage6_forecast"))
    forecasts = [json.loads(x) for x in (out / "stage6_forecast" / "test_predictions.jsonl").read_text().splitlines()]
    assert all(len(p["generated"].split(",")) == len(p["gold"].split(",")) for p in forecasts)


@pytest.mark.slow
def test_the_run_searches_as_an_opentslm_prior(trained_sp, tmp_path):
    from specdifftree.data.context import context_from_array
    from specdifftree.problem import build_problem
    from specdifftree.search.common import SearchConfig
    from specdifftree.search.registry import run_search

    context = context_from_array(20 + 5 * np.sin(np.arange(24) / 3.0), horizon=4)
    problem, _ = build_problem(str(trained_sp), ["spectral"], context)
    assert problem.prior.describe()["soft_prompt_tokens"] == 6 and problem.prior.segments is not None
    result = run_search(problem, "dts", SearchConfig(iterations=8, samples=4, batch_size=4))
    assert len(result.samples) == 4


def test_bias_only_options_are_refused():
    from specdifftree.errors import SDTError
    from specdifftree.train.config import TrainConfig

    with pytest.raises(SDTError, match="--lora trains adapters of the soft-prompt variant"):
        TrainConfig.from_name("test").for_variant("bias", lora=True)
    sp = TrainConfig.from_name("default").for_variant("sp")
    assert (sp.lr, sp.lr_projector, sp.batch_size, sp.warmup_frac, sp.patience) == (2e-4, 1e-4, 4, 0.03, 5)
    assert sp.epochs_for("stage4_sleep_cot") == 60 and sp.encoder.width == 128 and not sp.encoder.norm_first


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_same_outputs_with_lora(tiny_hf, tmp_path):
    from specdifftree.train.curriculum import train_prior

    stages = ["stage2_captioning", "stage3_cot"]
    cfg = _sp_config(lora=True, n_train=16, n_val=4, n_test=4, batch_size=4, epochs=3, patience=3)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    code = f"from tests.test_train_prior_sp import _sp_config as c; cfg = c(lora=True, n_train=16, n_val=4, " \
           f"n_test=4, batch_size=4, epochs=3, patience=3); stages = {stages!r}"
    q = _child_process(tiny_hf, killed, False, code)
    metrics = killed / "stage3_cot" / "metrics.csv"  # killed inside the LoRA stage, after its first epoch
    wait_for_lines(q, metrics, 2, timeout=300)
    q.send_signal(signal.SIGKILL)
    assert q.wait() == -signal.SIGKILL
    assert not (killed / "stage3_cot" / "stage.json").exists()
    r = _child_process(tiny_hf, killed, True, code)
    train_prior(stages, cfg, f"hf:{tiny_hf}", ref, wandb=False, progress=False)
    assert r.wait() == 0, r.stderr.read().decode()[-2000:]
    for s in stages:
        for f in ("metrics.csv", "checkpoints/best/weights.safetensors", "checkpoints/best/config.json",
                  "test_predictions.jsonl"):
            assert (killed / s / f).read_bytes() == (ref / s / f).read_bytes(), f"{s}/{f}"
