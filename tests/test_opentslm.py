"""OpenTSLM-SP checkpoints as priors: the upstream format on a tiny random Llama, matched against an
independent plain-torch implementation of the upstream forward; safe loading; convert; search."""

import contextlib
import dataclasses
import enum
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from specdifftree.errors import SDTError

R, ALPHA = 4, 8  # LoRA rank and alpha (upstream: 16, 32), scaled down with everything else
WIDTH, HEADS, LAYERS, FF, MAX_PATCHES = 16, 8, 2, 32, 64  # encoder (upstream: 128, 8, 6, 1024, 1024)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ------------------------------------------------------------------------------ the upstream side, in plain torch


class UpstreamEncoder(nn.Module):
    """OpenTSLM's TransformerCNNEncoder as its checkpoints name it: Conv1d patches (no bias), positions
    [1, P, W], LayerNorm, post-norm transformer layers, no final norm."""

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv1d(1, WIDTH, kernel_size=4, stride=4, bias=False)
        self.pos_embed = nn.Parameter(torch.randn(1, MAX_PATCHES, WIDTH))
        self.input_norm = nn.LayerNorm(WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, FF, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=LAYERS)

    def forward(self, x):  # [B, L], L a multiple of 4 -> [B, L / 4, W]
        h = self.patch_embed(x[:, None, :]).transpose(1, 2)
        return self.encoder(self.input_norm(h + self.pos_embed[:, :h.shape[1]]))


class UpstreamProjector(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.projector = nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, hidden), nn.GELU(), nn.Dropout(0.0))

    def forward(self, h):
        return self.projector(h)


@contextlib.contextmanager
def peft_classes():
    """Stand-ins for peft's LoraConfig and enums, importable under peft's module names while the
    checkpoint is pickled (the pickle then names exactly what a real LoraConfig names); gone after."""
    class PeftType(str, enum.Enum):
        LORA = "LORA"

    class TaskType(str, enum.Enum):
        CAUSAL_LM = "CAUSAL_LM"

    @dataclasses.dataclass
    class LoraRuntimeConfig:
        ephemeral_gpu_offload: bool = False

    @dataclasses.dataclass
    class LoraConfig:
        task_type: TaskType = TaskType.CAUSAL_LM
        peft_type: PeftType = PeftType.LORA
        base_model_name_or_path: str = "meta-llama/Llama-3.2-1B"
        inference_mode: bool = False
        r: int = R
        target_modules: set = dataclasses.field(default_factory=lambda: set(TARGETS))
        lora_alpha: int = ALPHA
        lora_dropout: float = 0.0
        fan_in_fan_out: bool = False
        bias: str = "none"
        use_rslora: bool = False
        modules_to_save: list = None
        init_lora_weights: bool = True
        rank_pattern: dict = dataclasses.field(default_factory=dict)
        alpha_pattern: dict = dataclasses.field(default_factory=dict)
        loftq_config: dict = dataclasses.field(default_factory=dict)
        use_dora: bool = False
        runtime_config: LoraRuntimeConfig = dataclasses.field(default_factory=LoraRuntimeConfig)

    homes = {"peft.utils.peft_types": (PeftType, TaskType), "peft.tuners.lora.config": (LoraConfig, LoraRuntimeConfig)}
    names = ["peft", "peft.utils", "peft.tuners", "peft.tuners.lora", *homes]
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        sys.modules[n] = types.ModuleType(n)
    for module, classes in homes.items():
        for cls in classes:
            cls.__module__, cls.__qualname__ = module, cls.__name__
            setattr(sys.modules[module], cls.__name__, cls)
    try:
        yield LoraConfig
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def randomize(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 and p.shape[0] == WIDTH else 0.0))
    return module.eval()


def lora_factors(model, seed: int) -> dict:
    """peft's key layout: base_model.model.<module>.lora_{A,B}.default.weight, A [r, in], B [out, r]."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in TARGETS:
            out_f, in_f = module.weight.shape
            state[f"base_model.model.{name}.lora_A.default.weight"] = torch.randn(R, in_f, generator=g) * 0.1
            state[f"base_model.model.{name}.lora_B.default.weight"] = torch.randn(out_f, R, generator=g) * 0.1
    return state


def write_upstream_checkpoint(path: Path, llm, lora: bool = True) -> dict:
    """An SP checkpoint as upstream's trainer writes it (torch.save of one dict), scaled down."""
    from transformers import get_linear_schedule_with_warmup

    encoder, projector = randomize(UpstreamEncoder(), 1), randomize(UpstreamProjector(llm.config.hidden_size), 2)
    params = list(encoder.parameters()) + list(projector.parameters())
    opt = torch.optim.AdamW([{"params": list(encoder.parameters()), "lr": 2e-4, "weight_decay": 0.01},
                             {"params": list(projector.parameters()), "lr": 1e-4, "weight_decay": 0.01}])
    sum(p.sum() for p in params).backward()
    opt.step()
    sched = get_linear_schedule_with_warmup(opt, 2, 10)
    ckpt = {"encoder_state": encoder.state_dict(), "projector_state": projector.state_dict(),
            "optimizer_state": opt.state_dict(), "scheduler_state": sched.state_dict(), "val_loss": 1.25,
            "epoch": 3, "lora_enabled": lora}
    with peft_classes() as LoraConfig:
        if lora:
            ckpt["lora_state"] = lora_factors(llm, 3)
            ckpt["lora_config"] = {"default": LoraConfig()}
        torch.save(ckpt, path)
    return {"encoder": encoder, "projector": projector, "lora": ckpt.get("lora_state", {})}


def reference_logprobs(llm_dir: Path, parts: dict, pre: str, series: list, post: str, continuation: list[int],
                       llm=None):
    """Upstream's SP forward, written independently: each text segment tokenized with the default
    special tokens, each series z-normalised in float32 (unbiased std + 1e-8), all series zero-padded
    to the longest rounded up to a multiple of 4 and encoded as one batch, then projected; segments
    concatenated; the answer tokenized with the special tokens (BOS first) as upstream's loss does;
    LoRA merged as W + (alpha / r) B A; the LLM on inputs_embeds. `llm`: a model that applies its
    LoRA itself (peft) instead. Returns next-token log-probs [len(continuation) + 1, V] (float64),
    the first row the one after the answer's BOS."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(llm_dir)
    if llm is None:
        llm = LlamaForCausalLM.from_pretrained(llm_dir, dtype=torch.float32).eval()
        sd = llm.state_dict()
        for key, a in parts["lora"].items():
            if ".lora_A." in key:
                module = key[len("base_model.model."):].split(".lora_A.")[0]
                b = parts["lora"][key.replace(".lora_A.", ".lora_B.")]
                sd[f"{module}.weight"] = sd[f"{module}.weight"] + (ALPHA / R) * (b @ a)
        llm.load_state_dict(sd)
    emb = llm.get_input_embeddings()
    with torch.no_grad():
        zs = [torch.tensor(x, dtype=torch.float32) for _, x in series]
        zs = [(x - x.mean()) / (x.std() + 1e-8) for x in zs]
        padded_len = -(-max(len(z) for z in zs) // 4) * 4
        proj = parts["projector"](parts["encoder"](torch.stack([torch.cat([z, torch.zeros(padded_len - len(z))])
                                                               for z in zs])))
        pieces = [emb(tok([pre], return_tensors="pt").input_ids[0])]
        for (text, _), p in zip(series, proj):
            pieces += [emb(tok([text], return_tensors="pt").input_ids[0]), p]
        answer = [tok.bos_token_id, *continuation]  # tokenizer(answer) with special tokens: BOS + the answer's ids
        pieces += [emb(tok([post], return_tensors="pt").input_ids[0]), emb(torch.tensor(answer, dtype=torch.long))]
        logits = llm(inputs_embeds=torch.cat(pieces)[None]).logits[0, -(len(continuation) + 1):]
    return torch.log_softmax(logits.double(), -1).numpy()


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny_llm(tiny_llama, tmp_path_factory):
    """A tiny random Llama whose tokenizer adds a BOS to every encoded text, as Llama-3's does."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from specdifftree.prior.tokenizer import EOS_TOKEN, PAD_TOKEN, build_tokenizer

    tok = build_tokenizer()
    tok.add_special_tokens(["<bos>"])
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", bos)])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    llm = tiny_llama(vocab_size=259, intermediate_size=48, bos_token_id=bos, pad_token_id=257)
    path = tmp_path_factory.mktemp("tiny_llama")
    llm.save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path, llm


@pytest.fixture(scope="module")
def upstream(tiny_llm, tmp_path_factory):
    path = tmp_path_factory.mktemp("upstream") / "llama-tiny-sp" / "model_checkpoint.pt"
    path.parent.mkdir()
    parts = write_upstream_checkpoint(path, tiny_llm[1])
    return path, parts


@pytest.fixture(scope="module")
def series_csv(tmp_path_factory):
    t = np.arange(200)
    values = 50 + 10 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 1, len(t))
    path = tmp_path_factory.mktemp("csv") / "s.csv"
    path.write_text("v\n" + "\n".join(f"{v:.3f}" for v in values) + "\n")
    return path


# ------------------------------------------------------------------------------ parity with the reference


PRE, POST = "You are an expert in time series analysis.", "Predict the trend. Answer:"
X1 = 3.0 + np.sin(np.arange(30) / 3.0)                    # 30 points: padded to 32, as upstream does
X2 = np.random.default_rng(1).normal(10.0, 2.0, 17)       # a second series: 17 points -> 20
CONTINUATION = [ord(c) for c in " up, 12"]                # byte tokens of the tiny tokenizer


def upstream_texts(series) -> list[str]:
    """Upstream's descriptions: mean and std of float32 torch tensors, printed with 4 decimals."""
    from specdifftree.prior.opentslm import SERIES_TEXT

    return [SERIES_TEXT.format(mean=t.mean(), std=t.std()) for t in (torch.tensor(x, dtype=torch.float32)
                                                                     for x in series)]


def our_logprobs(weights, llm_dir: Path, max_len: int = 16, series=(X1, X2)):
    from specdifftree.prior.backbones.hf import HFBackbone
    from specdifftree.prior.opentslm import UpstreamPrompt, opentslm_prior
    from specdifftree.prior.backbones.base import on_host

    texts = upstream_texts(series)
    prompt = UpstreamPrompt.described(PRE, list(series), POST)
    assert [t for t, _ in prompt.series] == texts
    backbone = HFBackbone.from_pretrained(str(llm_dir))
    prior = opentslm_prior(weights, backbone, prompt, max_len)
    handle, lp = prior.start()
    rows = [on_host(lp)]
    for t in CONTINUATION:
        kids, lps = prior.advance(np.array([handle]), np.array([t]))
        handle, lp = int(kids[0]), on_host(lps)[0]
        rows.append(lp)
    return np.stack(rows), prior, list(zip(texts, series))


def test_matches_an_independent_upstream_forward_from_the_original_and_the_converted_checkpoint(
        tiny_llm, upstream, tmp_path, one_thread):
    from specdifftree.api import convert_opentslm
    from specdifftree.prior.opentslm import OpenTSLMWeights

    llm_dir, (path, parts) = tiny_llm[0], upstream
    ours, prior, texts = our_logprobs(OpenTSLMWeights.load(path), llm_dir)
    want = reference_logprobs(llm_dir, parts, PRE, texts, POST, CONTINUATION)
    assert np.abs(ours - want).max() < 1e-4

    # the LoRA matters (so the merge is tested), and BOS starts every text segment and the answer
    no_lora = reference_logprobs(llm_dir, {**parts, "lora": {}}, PRE, texts, POST, CONTINUATION)
    assert np.abs(no_lora - want).max() > 1e-2
    bos = prior.backbone.tokenizer.bos_token_id
    assert sum(seg[0] == bos for seg in prior.segments if np.asarray(seg).ndim == 1) == 5
    assert list(prior.segments[-1]) == [bos]

    out = convert_opentslm(path, tmp_path / "converted", f"hf:{llm_dir}")
    assert not list(out.glob("*.pt")) and (out / "weights.safetensors").is_file()
    again, _, _ = our_logprobs(OpenTSLMWeights.load(out), llm_dir)
    assert np.abs(again - want).max() < 1e-4
    assert OpenTSLMWeights.load(out).weights_sha256() == OpenTSLMWeights.load(path).weights_sha256()


def test_a_checkpoint_without_lora_and_a_download_folder(tiny_llm, tmp_path, one_thread):
    from specdifftree.prior.opentslm import OpenTSLMWeights

    path = tmp_path / "model_checkpoint.pt"
    parts = write_upstream_checkpoint(path, tiny_llm[1], lora=False)
    weights = OpenTSLMWeights.load(tmp_path)  # the folder `huggingface-cli download` fills
    assert weights.lora == {}
    ours, _, texts = our_logprobs(weights, tiny_llm[0])
    want = reference_logprobs(tiny_llm[0], parts, PRE, texts, POST, CONTINUATION)
    assert np.abs(ours - want).max() < 1e-4


def test_a_checkpoint_saved_by_real_peft_matches_the_peft_model(tiny_llm, tmp_path, one_thread):
    """lora_state and lora_config exactly as upstream stores them from a peft model (its trainable
    `lora_` parameters, and `peft_config`); the reference is the peft model's own forward."""
    peft = pytest.importorskip("peft")
    from transformers import LlamaForCausalLM

    from specdifftree.prior.opentslm import OpenTSLMWeights

    base = LlamaForCausalLM.from_pretrained(tiny_llm[0], dtype=torch.float32)
    config = peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(TARGETS), lora_dropout=0.0, bias="none",
                             task_type=peft.TaskType.CAUSAL_LM)
    model = peft.get_peft_model(base, config).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    parts = write_upstream_checkpoint(tmp_path / "ignored.pt", tiny_llm[1], lora=False)
    ckpt = {"encoder_state": parts["encoder"].state_dict(), "projector_state": parts["projector"].state_dict(),
            "lora_enabled": True, "epoch": 1, "val_loss": 0.5,
            "lora_state": {n: p.data.clone() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n},
            "lora_config": model.peft_config}
    torch.save(ckpt, tmp_path / "model_checkpoint.pt")
    weights = OpenTSLMWeights.load(tmp_path / "model_checkpoint.pt")
    assert weights.lora_config["target_modules"] == sorted(TARGETS) and len(weights.lora) == 2 * len(TARGETS)
    ours, _, texts = our_logprobs(weights, tiny_llm[0])
    want = reference_logprobs(tiny_llm[0], parts, PRE, texts, POST, CONTINUATION, llm=model)
    assert np.abs(ours - want).max() < 1e-4


def test_prefill_counts_the_patch_positions_once(tiny_llm, upstream, one_thread):
    from specdifftree.prior.opentslm import OpenTSLMWeights

    _, prior, _ = our_logprobs(OpenTSLMWeights.load(upstream[0]), tiny_llm[0])
    patches = 2 * 32 // 4  # the 17-point series is padded to the 30-point one's 32
    assert prior.describe()["soft_prompt_tokens"] == patches
    assert prior.cost.forward_tokens == len(prior.prompt_ids) + patches + len(CONTINUATION)
    assert prior.cost.model_calls == 1 + len(CONTINUATION)


def test_two_series_of_unequal_length_are_padded_together_as_upstream(tiny_llm, upstream, one_thread):
    """250 and 97 points: both padded to 252 (63 patches each), so the prefill holds 126 patch
    positions (padding each series alone would give 63 + 25), and the log-probs match upstream's."""
    from specdifftree.prior.opentslm import OpenTSLMWeights

    rng = np.random.default_rng(4)
    series = (1500 + 40 * np.sin(np.arange(250) / 5) + rng.normal(0, 3, 250), rng.normal(-20, 4, 97))
    ours, prior, texts = our_logprobs(OpenTSLMWeights.load(upstream[0]), tiny_llm[0], series=series)
    want = reference_logprobs(tiny_llm[0], upstream[1], PRE, texts, POST, CONTINUATION)
    assert np.abs(ours - want).max() < 1e-4
    assert [np.asarray(s).shape[0] for s in prior.segments if np.asarray(s).ndim == 2] == [63, 63]
    assert prior.cost.forward_tokens == len(prior.prompt_ids) + 126 + len(CONTINUATION)


def test_series_text_prints_float32_statistics():
    from specdifftree.prior.opentslm_prompt import series_stats, series_text

    x = np.random.default_rng(7).normal(1322.4, 35.0, 500)
    t = torch.tensor(x, dtype=torch.float32)
    assert series_stats(x) == (float(t.mean()), float(t.std()))
    assert series_text(x, "{mean:.4f} {std:.4f}") == f"{float(t.mean()):.4f} {float(t.std()):.4f}"


def test_the_answer_prefix_is_what_the_tokenizer_adds(tiny_llm):
    from transformers import AutoTokenizer

    from specdifftree.prior.opentslm_prompt import answer_prefix
    from specdifftree.prior.tokenizer import build_hf_tokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm[0])
    assert answer_prefix(types.SimpleNamespace(tokenizer=tok)) == [tok.bos_token_id]
    assert answer_prefix(types.SimpleNamespace(tokenizer=build_hf_tokenizer())) == []


# ------------------------------------------------------------------------------ safe loading


class Stranger:
    """Any class outside the allowed set (here: one that is perfectly harmless)."""


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_only_the_peft_config_is_unpickled_and_read_as_plain_data(upstream, monkeypatch):
    from specdifftree.prior.opentslm import OpenTSLMWeights, plain, read_upstream

    for name in ("peft", "peft.utils", "peft.utils.peft_types", "peft.tuners", "peft.tuners.lora",
                 "peft.tuners.lora.config"):
        monkeypatch.setitem(sys.modules, name, None)  # importing peft now fails: the loader must not need it
    ckpt = read_upstream(upstream[0])
    config = plain(ckpt["lora_config"])["default"]
    assert config["r"] == R and config["lora_alpha"] == ALPHA and config["task_type"] == "CAUSAL_LM"
    assert config["peft_type"] == "LORA" and config["target_modules"] == sorted(TARGETS)
    assert config["runtime_config"] == {"ephemeral_gpu_offload": False}
    weights = OpenTSLMWeights.load(upstream[0])
    assert weights.lora_scale == ALPHA / R and len(weights.lora) == 2 * len(TARGETS)


@pytest.mark.parametrize("payload, name", [("evil", "system"), ("stranger", "test_opentslm.Stranger"),
                                           ("namespace", "argparse.Namespace")])
def test_any_other_pickled_object_is_refused_in_one_line_and_never_runs(payload, name, tiny_llm, tmp_path, run_cli):
    import argparse

    marker = tmp_path / "ran"
    obj = {"evil": lambda: Evil(marker), "stranger": Stranger, "namespace": lambda: argparse.Namespace(lr=1e-4)}[payload]()
    bad = tmp_path / "model_checkpoint.pt"
    torch.save({"encoder_state": {}, "projector_state": {}, "lora_enabled": True, "lora_config": {"default": obj}}, bad)

    from specdifftree.prior.opentslm import read_upstream

    with pytest.raises(SDTError, match=f"refused to load: the pickle needs the class .*{name}"):
        read_upstream(bad)
    code, _, err = run_cli(["convert", "opentslm", bad, "--backbone", f"hf:{tiny_llm[0]}", "--out", tmp_path / "o"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and name in err, err
    assert not marker.exists()
    assert not (tmp_path / "o").exists()


def test_bad_checkpoints_and_backbones_are_one_line_errors(upstream, tmp_path):
    from specdifftree.prior.opentslm import OpenTSLMWeights, default_backbone_ref

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for path, match in [(tmp_path / "missing.pt", "not found"), (tmp_path / "junk.pt", "not a readable")]:
        with pytest.raises(SDTError, match=match):
            OpenTSLMWeights.load(path)
    torch.save({"model_state": {}}, tmp_path / "flamingo.pt")
    with pytest.raises(SDTError, match="not an OpenTSLM-SP checkpoint"):
        OpenTSLMWeights.load(tmp_path / "flamingo.pt")
    assert default_backbone_ref("hub/OpenTSLM/llama-3.2-1b-m4-sp/model_checkpoint.pt") == "hf:meta-llama/Llama-3.2-1B"
    with pytest.raises(SDTError, match="--backbone hf:LLM_DIR"):
        default_backbone_ref(str(upstream[0]))


def test_a_backbone_of_another_width_is_refused(upstream, tiny_llama):
    from specdifftree.prior.backbones.hf import HFBackbone
    from specdifftree.prior.opentslm import OpenTSLMWeights, attach
    from specdifftree.prior.tokenizer import build_hf_tokenizer

    llm = tiny_llama(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(SDTError, match="16-wide"):
        attach(OpenTSLMWeights.load(upstream[0]), HFBackbone(llm, build_hf_tokenizer()))


# ------------------------------------------------------------------------------ search


def search_args(spec, tiny_llm, series_csv, *extra):
    return ["search", "--prior", spec, "--backbone", f"hf:{tiny_llm[0]}", "--series", series_csv, "--column", "v",
            "--context-length", 30, "--horizon", 4, "--reward", "spectral", "-q", *extra]


@pytest.mark.slow
def test_dts_smc_and_sadt_sample_search_the_checkpoint(tiny_llm, upstream, series_csv, tmp_path, one_thread, run_cli):
    spec = f"opentslm:{upstream[0]}"
    for method in ("dts", "smc"):
        out = tmp_path / f"{method}.json"
        code, _, err = run_cli(search_args(spec, tiny_llm, series_csv, "--method", method, "--iterations", 12,
                                           "--samples", 4, "--particles", 4, "--batch-size", 4, "--out", out))
        assert code == 0, err
        rec = json.loads(out.read_text())
        assert len(rec["samples"]) == 4 and all(len(s["values"]) == 4 for s in rec["samples"])
        assert rec["prior"]["soft_prompt_tokens"] == 8 and rec["config"]["backbone"] == f"hf:{tiny_llm[0]}"

    buf = tmp_path / "buf"
    for end in (120, 160):
        code, _, err = run_cli(search_args(spec, tiny_llm, series_csv, "--end", end, "--method", "dts",
                                           "--iterations", 10, "--batch-size", 5, "--save-buffer", buf))
        assert code == 0, err
    code, _, err = run_cli(["amortize", "--buffer", buf, "--prior", spec, "--backbone", f"hf:{tiny_llm[0]}",
                            "--reward", "spectral", "--out", tmp_path / "flow", "--steps", 4, "--eval-every", 2,
                            "--batch-size", 4, "--val-fraction", 0.5, "--no-wandb", "-q"])
    assert code == 0, err
    out = tmp_path / "sadt.json"
    code, _, err = run_cli(search_args(spec, tiny_llm, series_csv, "--method", "sadt-sample", "--flow",
                                       tmp_path / "flow", "--samples", 4, "--out", out))
    assert code == 0, err
    rec = json.loads(out.read_text())
    prefill = rec["prior"]["prompt_tokens"] + rec["prior"]["soft_prompt_tokens"]
    advanced = sum(len(s["tokens"]) - (len(s["tokens"]) == rec["prior"]["max_len"]) for s in rec["samples"])
    assert rec["stats"]["forward_tokens"] == prefill + advanced  # the patches are paid for once


def test_search_takes_several_series_files(tiny_llm, upstream, series_csv, tmp_path, one_thread, run_cli):
    """--series twice: both described and encoded (padded together), the first forecast."""
    out = tmp_path / "two.json"
    args = search_args(f"opentslm:{upstream[0]}", tiny_llm, series_csv, "--method", "dts", "--iterations", 6,
                       "--samples", 2, "--out", out)
    code, _, err = run_cli(args[:5] + ["--series", series_csv] + args[5:])
    assert code == 0, err
    assert json.loads(out.read_text())["prior"]["soft_prompt_tokens"] == 2 * 8


def test_search_tree_shares_the_prefill(tiny_llm, upstream, series_csv, one_thread):
    """DTS on the checkpoint: one prefill (text + patches), then exactly one position per advanced row."""
    from specdifftree.data.context import build_context
    from specdifftree.problem import build_problem
    from specdifftree.search.registry import run_search
    from specdifftree.search.common import SearchConfig

    context = build_context(str(series_csv), "v", 4, 30)
    problem, _ = build_problem(f"opentslm:{upstream[0]}", ["spectral"], context, backbone=f"hf:{tiny_llm[0]}")
    bb, rows = problem.prior.backbone, []
    advance, start, starts = bb.advance, bb.start, []
    bb.advance = lambda h, t: (rows.append(len(h)), advance(h, t))[1]
    bb.start = lambda segs: (starts.append(1), start(segs))[1]
    result = run_search(problem, "dts", SearchConfig(iterations=16, samples=4, batch_size=4))
    prefill = len(problem.prior.prompt_ids) + 8
    assert len(starts) == 1 and result.forward_tokens == prefill + sum(rows)


def test_backbone_option_is_refused_where_it_means_nothing(tiny_llm, run_cli):
    code, _, err = run_cli(["search", "--prior", "markov:toy3", "--backbone", f"hf:{tiny_llm[0]}", "-q"])
    assert code == 2 and "--backbone applies to opentslm" in err


def test_experiment_files_take_a_backbone_key(tmp_path):
    from specdifftree.experiments.config import from_dict

    raw = {"name": "x", "prior": "opentslm:ckpt", "backbone": "hf:llm", "reward": "spectral", "budgets": [100],
           "datasets": {"d": {"source": "ett", "file": "ett/ETTh1.csv", "column": "OT", "horizon": 4, "windows": 1}},
           "methods": {"dts": {}}}
    assert from_dict(raw).backbone == "hf:llm"
    assert from_dict({k: v for k, v in raw.items() if k != "backbone"}).backbone is None
