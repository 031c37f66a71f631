"""OpenTSLM-Flamingo checkpoints as priors: tiny models written in upstream's exact key layout (the
trainer's form and `store_to_file`'s), matched against an independent plain-torch implementation of
upstream's forward (open-flamingo 2.0's helpers as OpenTSLM uses them); safe loading; convert."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from specdifftree.errors import SDTError

VIS, DEPTH, LATENTS, PATCH, MAX_PATCHES = 32, 2, 64, 4, 128  # upstream: 128, 6, 64, 4, 1024
HEADS, DIM_HEAD = 8, 64  # open-flamingo's, in the perceiver and the cross-attention
PRE, POST = "You are an expert in time series.", "Predict the next values. Answer:"
CONTINUATION = [ord(c) for c in "12, 3"]  # byte tokens of the tiny tokenizer, after the answer's space


# ------------------------------------------------------------------------------ upstream, in plain torch


def ff(dim, mult=4):
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class UpCNNTokenizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv1d(1, VIS, PATCH, stride=PATCH, bias=False)
        self.pos_embed = nn.Parameter(torch.randn(1, MAX_PATCHES, VIS))
        self.input_norm = nn.LayerNorm(VIS)

    def forward(self, x):  # [B, L] -> [B, N, VIS]
        x = self.patch_embed(x.unsqueeze(1)).transpose(1, 2)
        return self.input_norm(x + self.pos_embed[:, : x.size(1), :])


def split_heads(t):  # "b ... n (h d) -> b ... h n d"
    return t.reshape(*t.shape[:-1], HEADS, DIM_HEAD).movedim(-2, -3)


class UpPerceiverAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm_media, self.norm_latents = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, HEADS * DIM_HEAD, bias=False)
        self.to_kv = nn.Linear(dim, 2 * HEADS * DIM_HEAD, bias=False)
        self.to_out = nn.Linear(HEADS * DIM_HEAD, dim, bias=False)

    def forward(self, x, latents):  # x [b, T, n1, D], latents [b, T, n2, D]
        x, latents = self.norm_media(x), self.norm_latents(latents)
        q = split_heads(self.to_q(latents)) * DIM_HEAD ** -0.5
        k, v = (split_heads(t) for t in self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1))
        sim = torch.einsum("...id,...jd->...ij", q, k)
        attn = (sim - sim.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
        out = torch.einsum("...ij,...jd->...id", attn, v).movedim(-3, -2)
        return self.to_out(out.reshape(*out.shape[:-2], -1))


class UpPerceiver(nn.Module):
    def __init__(self):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(LATENTS, VIS))
        self.layers = nn.ModuleList(nn.ModuleList([UpPerceiverAttention(VIS), ff(VIS)]) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(VIS)

    def forward(self, x):  # [b, T, F, v, D] -> [b, T, n, D]
        b, T, F, v, D = x.shape
        x = x.reshape(b, T, F * v, D)
        latents = self.latents.expand(b, T, -1, -1)
        for attn, f in self.layers:
            latents = attn(x, latents) + latents
            latents = f(latents) + latents
        return self.norm(latents)


class UpMaskedCrossAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, HEADS * DIM_HEAD, bias=False)
        self.to_kv = nn.Linear(VIS, 2 * HEADS * DIM_HEAD, bias=False)
        self.to_out = nn.Linear(HEADS * DIM_HEAD, dim, bias=False)

    def forward(self, x, media, media_locations):  # only_attend_immediate_media=True, no cached media
        T_img, n = media.shape[1:3]
        q = split_heads(self.to_q(self.norm(x))) * DIM_HEAD ** -0.5
        k, v = (split_heads(t) for t in self.to_kv(media.reshape(media.shape[0], T_img * n, -1)).chunk(2, dim=-1))
        sim = torch.einsum("...id,...jd->...ij", q, k)
        text_time = media_locations.cumsum(dim=-1)
        media_time = torch.arange(T_img) + 1
        mask = text_time[:, None, :, None] == media_time.repeat_interleave(n)[None, None, None, :]
        sim = sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)
        attn = (sim - sim.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
        attn = attn.masked_fill((text_time == 0)[:, None, :, None], 0.0)
        out = torch.einsum("...ij,...jd->...id", attn, v).movedim(-3, -2)
        return self.to_out(out.reshape(*out.shape[:-2], -1))


class UpGatedCrossAttentionBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.attn = UpMaskedCrossAttention(dim)
        self.attn_gate = nn.Parameter(torch.tensor([0.0]))
        self.ff = ff(dim)
        self.ff_gate = nn.Parameter(torch.tensor([0.0]))

    def forward(self, x, media, media_locations):
        x = self.attn(x, media, media_locations) * self.attn_gate.tanh() + x
        return self.ff(x) * self.ff_gate.tanh() + x


class UpFlamingoLayer(nn.Module):
    def __init__(self, gated_cross_attn_layer, decoder_layer):
        super().__init__()
        self.gated_cross_attn_layer, self.decoder_layer = gated_cross_attn_layer, decoder_layer
        self.vis_x = self.media_locations = None

    def forward(self, lang_x, attention_mask=None, **kwargs):
        if self.gated_cross_attn_layer is not None:
            lang_x = self.gated_cross_attn_layer(lang_x, self.vis_x, self.media_locations)
        return self.decoder_layer(lang_x, attention_mask=attention_mask, **kwargs)


class UpFlamingo(nn.Module):
    """TimeSeriesFlamingoWithTrainableEncoder's module tree: vision_encoder, perceiver, lang_encoder
    (the LLM with `old_decoder_blocks`, `gated_cross_attn_layers` and its layers wrapped)."""

    def __init__(self, llm, every: int = 1):
        super().__init__()
        self.vision_encoder, self.perceiver, self.lang_encoder = UpCNNTokenizer(), UpPerceiver(), llm
        dim = llm.config.hidden_size
        llm.old_decoder_blocks = llm.model.layers
        llm.gated_cross_attn_layers = nn.ModuleList(UpGatedCrossAttentionBlock(dim) if (i + 1) % every == 0 else None
                                                    for i in range(len(llm.model.layers)))
        llm.model.layers = nn.ModuleList(UpFlamingoLayer(g, d) for g, d in
                                         zip(llm.gated_cross_attn_layers, llm.old_decoder_blocks))

    def logits(self, ids: list[int], series: list, media_id: int):
        """Upstream's forward on one sample: series padded to the longest (a multiple of the
        patch), encoded as frames of one media, resampled; every layer conditioned on the media
        and the <image> locations; the LLM on the ids."""
        zs = [torch.tensor(x, dtype=torch.float32) for x in series]
        zs = [(x - x.mean()) / (x.std() + 1e-8) for x in zs]
        L = -(-max(len(z) for z in zs) // PATCH) * PATCH
        images = torch.stack([torch.cat([z, torch.zeros(L - len(z))]) for z in zs])[None, None]  # [b, T=1, F, L]
        b, T, F, L = images.shape
        vis = self.vision_encoder(images.reshape(b * T * F, L))
        vis = self.perceiver(vis.reshape(b, T, F, *vis.shape[1:]))
        ids_t = torch.tensor([ids])
        for layer in self.lang_encoder.model.layers:
            layer.vis_x, layer.media_locations = vis, ids_t == media_id
        return self.lang_encoder(input_ids=ids_t).logits[0]


class OpenTSLMFlamingoLike(nn.Module):
    """OpenTSLMFlamingo keeps the model as both `model` and `llm`: its state dict names every tensor twice."""

    def __init__(self, flamingo):
        super().__init__()
        self.model = flamingo
        self.llm = flamingo


def randomize(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if p.ndim == 1 and "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------------------ fixtures


def tokenizer():
    """The byte tokenizer with a BOS added to every text and no pad token (as Llama-3's)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from specdifftree.prior.tokenizer import EOS_TOKEN, build_tokenizer

    tok = build_tokenizer()
    tok.add_special_tokens(["<bos>"])
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token=EOS_TOKEN)


def tiny_gemma3(vocab: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=6,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=1024,
                           bos_token_id=258, eos_token_id=256, pad_token_id=257)
    torch.manual_seed(0)
    return Gemma3ForCausalLM(cfg).eval()


def write_checkpoint(root: Path, llm, form: str = "trainer", every: int = 1) -> tuple[Path, Path, UpFlamingo, object]:
    """The LLM folder (config + tokenizer, as downloaded) and an upstream checkpoint of a Flamingo
    model on it: tokens added and embeddings resized as OpenTSLMFlamingo does, every part random."""
    llm_dir = root / "llm"
    tok = tokenizer()
    llm.save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|endofchunk|>", "<image>"]})
    tok.add_special_tokens({"pad_token": "<PAD>"})
    llm.resize_token_embeddings(len(tok))
    up = UpFlamingo(llm, every)
    randomize(up.vision_encoder, 1)
    randomize(up.perceiver, 2)
    randomize(up.lang_encoder.gated_cross_attn_layers, 3)
    with torch.no_grad():
        up.lang_encoder.get_input_embeddings().weight[-3:].normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    up.eval()
    path = root / "ckpt" / "model_checkpoint.pt"
    path.parent.mkdir(parents=True)
    if form == "trainer":
        torch.save({"model_state": OpenTSLMFlamingoLike(up).state_dict(), "optimizer_state": {"state": {}},
                    "scheduler_state": {"last_epoch": 3}, "val_loss": 0.5, "epoch": 3}, path)
    else:
        torch.save({"llm": up.state_dict()}, path)
    return llm_dir, path, up, tok


@pytest.fixture(scope="module")
def llama_ckpt(tiny_llama, tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("flamingo_llama"), tiny_llama(vocab_size=259))


def series_pair():
    rng = np.random.default_rng(3)
    return [1500 + 40 * np.sin(np.arange(50) / 4) + rng.normal(0, 3, 50), rng.normal(-2, 4, 21)]


def texts(series):
    from specdifftree.prior.opentslm_prompt import SERIES_TEXT

    return [SERIES_TEXT.format(mean=t.mean(), std=t.std()) for t in (torch.tensor(x, dtype=torch.float32)
                                                                     for x in series)]


def reference(up, tok, series, continuation):
    text = PRE + "".join(f" <image> {t} <|endofchunk|>" for t in texts(series)) + f" {POST}"
    ids = tok(text).input_ids + [ord(" ")]  # the answer " {answer}" starts with a space: one byte token here
    with torch.no_grad():
        logits = up.logits(ids + continuation, series, tok.convert_tokens_to_ids("<image>"))
    return ids, torch.log_softmax(logits[len(ids) - 1:].double(), -1).numpy()


def ours(weights, llm_dir, series, continuation):
    from specdifftree.prior.flamingo import flamingo_backbone, flamingo_prior
    from specdifftree.prior.opentslm_prompt import UpstreamPrompt
    from specdifftree.prior.backbones.base import on_host

    backbone = flamingo_backbone(weights, str(llm_dir))
    prior = flamingo_prior(weights, backbone, UpstreamPrompt.described(PRE, series, POST), 16)
    handle, lp = prior.start()
    rows, handles = [on_host(lp)], [handle]
    for t in continuation:
        kids, lps = prior.advance(np.array([handle]), np.array([t]))
        handle = int(kids[0])
        rows.append(on_host(lps)[0])
        handles.append(handle)
    return prior, np.stack(rows), handles


# ------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("n_series", [1, 2])
def test_llama_matches_upstreams_forward(llama_ckpt, n_series, one_thread):
    from specdifftree.prior.flamingo_ckpt import FlamingoWeights, load_opentslm

    llm_dir, path, up, tok = llama_ckpt
    series = series_pair()[:n_series]
    weights = load_opentslm(path)
    assert isinstance(weights, FlamingoWeights) and weights.xattn_layers() == [0, 1]
    prior, got, _ = ours(weights, llm_dir, series, CONTINUATION)
    ids, want = reference(up, tok, series, CONTINUATION)
    assert prior.prompt_ids == ids and ids.count(tok.bos_token_id) == 1
    assert np.abs(got - want).max() < 1e-4
    assert prior.media.describe()["latents"] == LATENTS and prior.media.kv.shape[0] == 2
    print(f"llama, {n_series} series: max |ours - upstream| = {np.abs(got - want).max():.2e}")


@pytest.fixture(scope="module")
def gemma_ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("flamingo_gemma"), tiny_gemma3(259))


@pytest.mark.parametrize("n_series", [1, 2])
def test_gemma3_with_sliding_window_matches_upstreams_forward(gemma_ckpt, n_series, one_thread):
    from specdifftree.prior.flamingo_ckpt import load_opentslm

    llm_dir, path, up, tok = gemma_ckpt
    series = series_pair()[:n_series]
    _, got, _ = ours(load_opentslm(path), llm_dir, series, CONTINUATION)
    ids, want = reference(up, tok, series, CONTINUATION)
    assert len(ids) > 6 and np.abs(got - want).max() < 1e-4  # longer than the sliding window
    print(f"gemma-3, {n_series} series: max |ours - upstream| = {np.abs(got - want).max():.2e}")


def test_cross_attention_every_second_layer(tmp_path, tiny_llama, one_thread):
    from specdifftree.prior.flamingo_ckpt import load_opentslm

    llm_dir, path, up, tok = write_checkpoint(tmp_path, tiny_llama(vocab_size=259), every=2)
    weights = load_opentslm(path)
    assert weights.xattn_layers() == [1]
    prior, got, _ = ours(weights, llm_dir, series_pair(), CONTINUATION)
    _, want = reference(up, tok, series_pair(), CONTINUATION)
    assert prior.media.kv.shape[0] == 1 and np.abs(got - want).max() < 1e-4


def test_prefill_once_then_branch_equals_a_full_forward_per_branch(llama_ckpt, one_thread):
    from specdifftree.prior.flamingo_ckpt import load_opentslm
    from specdifftree.prior.backbones.base import on_host

    llm_dir, path, up, tok = llama_ckpt
    series = series_pair()
    prior, _, handles = ours(load_opentslm(path), llm_dir, series, CONTINUATION[:2])
    before = prior.cost.forward_tokens
    branches = [[ord("7"), ord("0")], [ord("4")]]
    for branch in branches:  # from the node after the first continuation token
        h, rows = handles[1], []
        for t in branch:
            kids, lps = prior.advance(np.array([h]), np.array([t]))
            h, rows = int(kids[0]), rows + [on_host(lps)[0]]
        _, want = reference(up, tok, series, CONTINUATION[:1] + branch)
        assert np.abs(np.stack(rows) - want[2:]).max() < 1e-4
    assert prior.cost.forward_tokens == before + 3  # each branch pays for its own tokens only
    assert prior.cost.forward_tokens - 3 - 2 == len(prior.prompt_ids)  # the prompt once
    # memory: one pool slot (self-attention K/V of every layer) per prompt position and per node, nothing
    # per node for the media, whose keys and values are one tensor per context
    assert prior.backbone.pool.in_use == len(prior.prompt_ids) + 2 + 3
    assert prior.media.kv.shape == (2, 2, HEADS, LATENTS, DIM_HEAD)


def test_both_on_disk_forms_and_the_conversion_give_the_same_prior(tmp_path, tiny_llama, one_thread):
    import safetensors.torch

    from specdifftree.api import convert_opentslm
    from specdifftree.prior.flamingo_ckpt import load_opentslm

    llm_dir, path, up, tok = write_checkpoint(tmp_path / "a", tiny_llama(vocab_size=259), form="store_to_file")
    series = series_pair()
    _, want, _ = ours(load_opentslm(path), llm_dir, series, CONTINUATION)
    trainer = tmp_path / "trainer.pt"
    torch.save({"model_state": OpenTSLMFlamingoLike(up).state_dict(), "epoch": 1}, trainer)
    assert sum(1 for k in torch.load(trainer, weights_only=True)["model_state"] if "old_decoder_blocks" in k) > 0
    out = convert_opentslm(trainer, tmp_path / "converted", f"hf:{llm_dir}")
    tensors = safetensors.torch.load_file(out / "weights.safetensors")
    assert not any("old_decoder_blocks" in k or "gated_cross_attn_layers" in k for k in tensors)
    assert sum(t.numel() for t in tensors.values()) == sum(
        t.numel() for t in {id(t): t for t in up.state_dict(keep_vars=True).values()}.values())
    for source in (trainer, out):
        weights = load_opentslm(source)
        _, got, _ = ours(weights, llm_dir, series, CONTINUATION)
        assert np.abs(got - want).max() < 1e-6
        assert weights.weights_sha256() == load_opentslm(path).weights_sha256()


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_flamingo_file_is_refused_in_one_line(tmp_path, run_cli, llama_ckpt):
    from specdifftree.prior.flamingo_ckpt import load_opentslm

    marker = tmp_path / "ran"
    bad = tmp_path / "model_checkpoint.pt"
    torch.save({"model_state": {"model.perceiver.latents": torch.zeros(2), "model.x": Evil(marker)}}, bad)
    with pytest.raises(SDTError, match="refused to load: the pickle needs the class .*system"):
        load_opentslm(bad)
    code, _, err = run_cli(["convert", "opentslm", bad, "--backbone", f"hf:{llama_ckpt[0]}", "--out", tmp_path / "o"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "system" in err, err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_a_backbone_of_another_vocabulary_is_refused(llama_ckpt, tmp_path):
    from specdifftree.prior.flamingo import flamingo_backbone
    from specdifftree.prior.flamingo_ckpt import load_opentslm
    from specdifftree.prior.tokenizer import build_hf_tokenizer

    other = tmp_path / "other"
    llm_dir = llama_ckpt[0]
    other.mkdir()
    (other / "config.json").write_text((llm_dir / "config.json").read_text())
    build_hf_tokenizer().save_pretrained(other)  # has a pad token: one token fewer is added
    with pytest.raises(SDTError, match="token rows"):
        flamingo_backbone(load_opentslm(llama_ckpt[1]), str(other))


# ------------------------------------------------------------------------------ search


@pytest.fixture(scope="module")
def three_columns(tmp_path_factory):
    t = np.arange(120)
    rng = np.random.default_rng(0)
    cols = [50 + 10 * np.sin(t / 4), 3 * np.cos(t / 7) + rng.normal(0, 0.3, 120), rng.normal(0, 1, 120).cumsum()]
    path = tmp_path_factory.mktemp("csv") / "xyz.csv"
    path.write_text("x,y,z\n" + "\n".join(",".join(f"{c[i]:.3f}" for c in cols) for i in range(120)) + "\n")
    return path


def search(run_cli, prior, llm_dir, csv, out, method, *extra):
    args = ["search", "--prior", prior, "--backbone", f"hf:{llm_dir}", "--series", csv, "--column", "x",
            "--column", "y", "--column", "z", "--context-length", 40, "--horizon", 4, "--reward", "spectral",
            "--method", method, "--iterations", 8, "--samples", 3, "--particles", 3, "--batch-size", 3,
            "--beam-width", 3, "-q", "--out", out, *extra]
    code, _, err = run_cli(args)
    assert code == 0, err
    return json.loads(Path(out).read_text())


@pytest.mark.slow
def test_every_method_searches_a_flamingo_checkpoint_on_three_series(llama_ckpt, three_columns, tmp_path, run_cli,
                                                                       one_thread):
    from specdifftree.search.registry import METHODS

    llm_dir, path = llama_ckpt[0], llama_ckpt[1]
    methods = [m for m in METHODS if not m.startswith(("sadt", "stats:")) and "naive" not in m]
    for method in methods:
        rec = search(run_cli, f"opentslm:{path}", llm_dir, three_columns, tmp_path / f"{method}.json", method)
        assert rec["samples"] and rec["prior"]["media"]["series"] == 3, method
        assert rec["prior"]["soft_prompt_tokens"] == 0 and rec["prior"]["media"]["patches"] == 3 * 10
    rec = search(run_cli, f"opentslm:{path}", llm_dir, three_columns, tmp_path / "dts.json", "dts")
    advanced = sum(len(s["tokens"]) - (len(s["tokens"]) == rec["prior"]["max_len"]) for s in rec["samples"])
    assert rec["stats"]["forward_tokens"] >= rec["prior"]["prompt_tokens"] + advanced


def test_the_converted_checkpoint_gives_the_same_samples(llama_ckpt, three_columns, tmp_path, run_cli, one_thread):
    llm_dir, path = llama_ckpt[0], llama_ckpt[1]
    code, _, err = run_cli(["convert", "opentslm", path, "--backbone", f"hf:{llm_dir}", "--out", tmp_path / "conv"])
    assert code == 0, err
    a = search(run_cli, f"opentslm:{path}", llm_dir, three_columns, tmp_path / "a.json", "dts", "--seed", 3)
    b = search(run_cli, str(tmp_path / "conv"), llm_dir, three_columns, tmp_path / "b.json", "dts", "--seed", 3)
    assert [s["tokens"] for s in a["samples"]] == [s["tokens"] for s in b["samples"]]
    assert a["prior"]["media"] == b["prior"]["media"]


def test_several_series_need_an_opentslm_prior(tiny_hf, three_columns, run_cli):
    code, _, err = run_cli(["search", "--prior", f"hf:{tiny_hf}", "--series", three_columns, "--column", "x",
                            "--column", "y", "--horizon", 4, "--context-length", 20, "--reward", "spectral", "-q"])
    assert code == 2 and "opentslm" in err, err


@pytest.mark.slow
def test_sadt_sample_runs_on_a_flow_trained_from_flamingo_trees(llama_ckpt, three_columns, tmp_path, run_cli,
                                                                one_thread):
    llm_dir, path = llama_ckpt[0], llama_ckpt[1]
    spec, buf = f"opentslm:{path}", tmp_path / "buf"
    for end in (80, 100):
        search(run_cli, spec, llm_dir, three_columns, tmp_path / f"t{end}.json", "dts", "--end", end,
               "--save-buffer", buf)
    code, _, err = run_cli(["amortize", "--buffer", buf, "--prior", spec, "--backbone", f"hf:{llm_dir}",
                            "--reward", "spectral", "--out", tmp_path / "flow", "--steps", 4, "--eval-every", 2,
                            "--batch-size", 4, "--val-fraction", 0.5, "--no-wandb", "-q"])
    assert code == 0, err
    from specdifftree.amortize.buffer import read_buffer

    assert all(len(r.query().covariates) == 2 for r in read_buffer(buf)[1])  # the flow sees the trees' three series
    rec = search(run_cli, spec, llm_dir, three_columns, tmp_path / "sadt.json", "sadt-sample",
                 "--flow", tmp_path / "flow")
    assert rec["samples"] and rec["prior"]["media"]["series"] == 3


@pytest.mark.slow
def test_bench_memory_on_a_flamingo_prior_is_the_self_attention_kv_per_node(llama_ckpt, run_cli):
    """`sdt bench memory`: per extra tree node a Flamingo prior holds its self-attention KV and the
    tree's arrays; the media (cross-attention keys and values) is one allocation per context, so it
    does not grow with the tree."""
    llm_dir, path = llama_ckpt[0], llama_ckpt[1]
    code, out, err = run_cli(["bench", "memory", "--prior", f"opentslm:{path}", "--backbone", f"hf:{llm_dir}",
                              "--context-length", 40, "--horizon", 4, "--json"])
    assert code == 0, err
    m = json.loads(out)
    assert m["tree_nodes"][1] > m["tree_nodes"][0]
    assert m["kv_bytes_per_node"] > 0  # the self-attention KV grows with the tree
    assert m["beyond_kv_per_node"] <= m["bound_bytes"]  # nothing else does, media included
