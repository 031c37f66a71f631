"""The soft-prompt variant of the curriculum (`sdt train-prior --variant sp`): OpenTSLM-SP trained
through the frozen LLM.

    parts = SPParts.fresh(backbone, ref, EncoderConfig.upstream(...), seed)   # encoder + projector
    nll, owner, hits = sp_nll(parts, backbone, split, idx)                    # per answer token [M]

Each example is laid out as upstream does (`prior/opentslm.py`): [pre_prompt, text_1, series_1
patches, ..., post_prompt], each text tokenized with the tokenizer's default special tokens, each
series z-normalised (unbiased std + 1e-8) and zero-padded to a multiple of the patch; the text of
series i is "<name>, it has mean M and std S." (stage 6: the forecast layout `sdt search` builds
for an opentslm prior, `data.prompts.opentslm_forecast_prompt`). The gold answer + EOS follows,
and the loss is its per-token NLL, as the bias variant's, so the two variants' numbers compare.

Unlike the bias variant nothing can be cached: the encoder's output enters the LLM's input, so
every step runs the LLM forward and backward (its weights frozen; gradients reach the encoder and
the projector through the soft-prompt positions). With `--lora`, stages 3 on also train LoRA
adapters (r 16, alpha 32, on q/k/v/o/gate/up/down, as upstream), applied by forward hooks while
training and merged into the weights when the checkpoint is loaded for search.

A checkpoint is written in the format `sdt convert opentslm` writes, so `--prior RUN_DIR` searches it
with the upstream prompt layout (`load_opentslm`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from specdifftree.data.example import Example
from specdifftree.errors import SDTError
from specdifftree.machine import seeded
from specdifftree.prior.opentslm_prompt import UpstreamPrompt, answer_prefix, padded_series, series_stats, text_ids

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_R, LORA_ALPHA = 16, 32
LORA_FROM_STAGE = "stage3_cot"


class LoRA(nn.Module):
    """Trainable low-rank adapters on a frozen model's linear layers, applied by forward hooks:
    y = W x + (alpha / r) B A x. A starts Kaiming-uniform, B at zero (the model's own output)."""

    def __init__(self, model: nn.Module, r: int = LORA_R, alpha: float = LORA_ALPHA, targets=LORA_TARGETS):
        super().__init__()
        self.r, self.alpha, self.scale = int(r), float(alpha), float(alpha) / int(r)
        self.paths = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
        self.A, self.B = nn.ParameterDict(), nn.ParameterDict()
        for path in self.paths:
            out_f, in_f = model.get_submodule(path).weight.shape
            key = path.replace(".", "__")
            self.A[key] = nn.Parameter(torch.empty(self.r, in_f))
            nn.init.kaiming_uniform_(self.A[key], a=math.sqrt(5))
            self.B[key] = nn.Parameter(torch.zeros(out_f, self.r))
        self._hooks = []
        self.enabled = True

    def attach(self, model: nn.Module) -> "LoRA":
        for path in self.paths:
            key = path.replace(".", "__")
            self._hooks.append(model.get_submodule(path).register_forward_hook(self._hook(key)))
        return self

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _hook(self, key: str):
        def add(module, inputs, output):
            if not self.enabled:
                return output
            a, b = self.A[key], self.B[key]
            return output + (inputs[0].to(a.dtype) @ a.T @ b.T).to(output.dtype) * self.scale
        return add

    def factors(self) -> dict:
        """{module path: (A [r, in], B [out, r])}, detached copies (the checkpoint's `lora` group)."""
        return {p: (self.A[p.replace(".", "__")].detach().clone(), self.B[p.replace(".", "__")].detach().clone())
                for p in self.paths}

    def load_factors(self, factors: dict) -> None:
        with torch.no_grad():
            for p, (a, b) in factors.items():
                self.A[p.replace(".", "__")].copy_(a)
                self.B[p.replace(".", "__")].copy_(b)


@dataclass
class SPParts:
    """The soft-prompt prior's trainable parts: encoder (OpenTSLM layout), projector (depth 1), LoRA or None."""

    encoder: nn.Module
    projector: nn.Module
    backbone_ref: str
    lora: Optional[LoRA] = None

    @classmethod
    def fresh(cls, backbone, backbone_ref: str, encoder_config, seed: int = 0) -> "SPParts":
        from specdifftree.prior.encoder import TransformerCNNEncoder
        from specdifftree.prior.heads import SoftPromptProjector

        width = backbone.model.get_input_embeddings().weight.shape[1]
        with seeded(seed):
            parts = cls(TransformerCNNEncoder(encoder_config).eval(),
                        SoftPromptProjector(encoder_config.width, width, depth=1).eval(), backbone_ref)
        return parts

    @classmethod
    def load(cls, directory, backbone, backbone_ref: str) -> "SPParts":
        """From a checkpoint this variant wrote (a LoRA in it is attached to `backbone` by hooks)."""
        from specdifftree.prior.opentslm import OpenTSLMWeights

        w = OpenTSLMWeights.load(directory)
        parts = cls(w.encoder, w.projector, backbone_ref)
        if w.lora:
            parts.add_lora(backbone, seed=0)
            parts.lora.load_factors(w.lora)
        return parts

    def add_lora(self, backbone, seed: int) -> None:
        """Fresh adapters on the backbone's LLM (seeded), unless it has them already."""
        if self.lora is None:
            with seeded(seed):
                self.lora = LoRA(backbone.model).attach(backbone.model)

    def release(self) -> None:
        """Take the adapters' hooks off the backbone (the next stage attaches its own)."""
        if self.lora is not None:
            self.lora.detach()

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "projector": self.projector} | ({"lora": self.lora} if self.lora else {})

    def param_groups(self, cfg) -> list[dict]:
        """Upstream's learning rates: encoder cfg.lr (2e-4), projector cfg.lr_projector (1e-4), LoRA cfg.lr_lora."""
        groups = [{"params": list(self.encoder.parameters()), "lr": cfg.lr, "base_lr": cfg.lr},
                  {"params": list(self.projector.parameters()), "lr": cfg.lr_projector, "base_lr": cfg.lr_projector}]
        if self.lora is not None:
            groups.append({"params": list(self.lora.parameters()), "lr": cfg.lr_lora, "base_lr": cfg.lr_lora})
        return groups

    def save(self, directory, vocab_size: int, extra: dict) -> None:
        from specdifftree.prior.opentslm import OpenTSLMWeights

        lora = self.lora.factors() if self.lora else {}
        config = {"r": self.lora.r, "lora_alpha": self.lora.alpha, "target_modules": list(LORA_TARGETS)} if self.lora else {}
        OpenTSLMWeights(self.encoder, self.projector, lora, self.lora.scale if self.lora else 0.0, config,
                        "sdt train-prior --variant sp").save(directory, self.backbone_ref, vocab_size, extra)


# ------------------------------------------------------------------------------------------- layout


def series_text(name: str, x: np.ndarray) -> str:
    mean, std = series_stats(x)  # float32, as upstream
    return f"{name}, it has mean {mean:.4f} and std {std:.4f}."


def upstream_prompt(ex: Example) -> UpstreamPrompt:
    """An example in OpenTSLM-SP's layout (stage 6: the one `sdt search --prior opentslm:` builds)."""
    if ex.text is not None:  # stage 6: a forecast
        from specdifftree.data.prompts import forecast_codec, opentslm_forecast_prompt

        history = np.asarray(ex.series[0], dtype=np.float64)
        pre, post = opentslm_forecast_prompt(history, len(ex.answer.split(",")), forecast_codec(history))
        return UpstreamPrompt.one_series(pre, history, post)
    return UpstreamPrompt(ex.pre_prompt, [(series_text(n, x), np.asarray(x, np.float64))
                                          for n, x in zip(ex.names, ex.series)], ex.post_prompt)


@dataclass
class Layout:
    """A split's text segments, tokenized once: per example, ids of [pre, text_1, ..., text_n, post +
    answer prefix] (the answer prefix: the BOS upstream's loss puts before every answer)."""

    prompts: list[UpstreamPrompt]
    text_ids: list[list[list[int]]]

    @classmethod
    def of(cls, examples: list[Example], backbone) -> "Layout":
        prompts = [upstream_prompt(ex) for ex in examples]
        ids = [[text_ids(backbone, t) for t in (p.pre_prompt, *(s for s, _ in p.series), p.post_prompt)]
               for p in prompts]
        prefix = answer_prefix(backbone)
        return cls(prompts, [[*seg[:-1], seg[-1] + prefix] for seg in ids])


def _patches(parts: SPParts, prompts: list[UpstreamPrompt]) -> list[torch.Tensor]:
    """Projected patches of every series of the prompts, in order: each prompt's series padded to
    its longest (a multiple of the patch) as upstream lays out a sample, so series of one prompt
    share a patch count; one encoder call per patch count."""
    patch = parts.encoder.config.patch
    zs = [padded_series(p.raw_series(), patch) for p in prompts if p.series]
    out: dict[tuple[int, int], torch.Tensor] = {}
    for length in sorted({z.shape[1] for z in zs}):
        group = [(k, z) for k, z in enumerate(zs) if z.shape[1] == length]
        h, _ = parts.encoder(torch.cat([z for _, z in group]))
        proj = iter(parts.projector(h))
        for k, z in group:
            for j in range(len(z)):
                out[k, j] = next(proj)
    return [out[k, j] for k, z in enumerate(zs) for j in range(len(z))]


def sp_nll(parts: SPParts, backbone, layout: Layout, idx: list[int], answers: list[list[int]],
           with_series: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token NLL of answers[r] (answer + EOS) after example idx[r]'s upstream layout, in one LLM forward.

    Returns nll [M] (differentiable in the encoder, projector and LoRA), owner [M] (row r) and
    hits [M] bool (argmax == target). with_series False: the text segments alone (the frozen
    LLM without the series, the baseline the prior is compared with).
    """
    model = backbone.model
    embed = model.get_input_embeddings()
    patches = iter(_patches(parts, [layout.prompts[i] for i in idx])) if with_series else None
    seqs, starts = [], []
    for r, i in enumerate(idx):
        ids = layout.text_ids[i]
        pieces = [embed(torch.tensor(ids[0], dtype=torch.long))]
        for k in range(1, len(ids) - 1):
            pieces.append(embed(torch.tensor(ids[k], dtype=torch.long)))
            if patches is not None:
                pieces.append(next(patches).to(embed.weight.dtype))
        pieces.append(embed(torch.tensor(ids[-1], dtype=torch.long)))
        starts.append(sum(p.shape[0] for p in pieces))
        pieces.append(embed(torch.tensor(answers[r][:-1], dtype=torch.long)))
        seqs.append(torch.cat(pieces))
    T = max(s.shape[0] for s in seqs)
    inputs = torch.zeros(len(seqs), T, seqs[0].shape[1], dtype=seqs[0].dtype)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for r, s in enumerate(seqs):
        inputs[r, : len(s)], mask[r, : len(s)] = s, 1  # right padding: positions 0.. as each row alone
    logits = model(inputs_embeds=inputs, attention_mask=mask).logits  # [B, T, V]
    rows, cols, targets = [], [], []
    for r in range(len(idx)):
        n = len(answers[r])
        rows += [r] * n
        cols += list(range(starts[r] - 1, starts[r] - 1 + n))
        targets += answers[r]
    picked = logits[torch.tensor(rows), torch.tensor(cols)].float()  # [M, V]
    targets_t = torch.tensor(targets, dtype=torch.long)
    nll = -torch.log_softmax(picked, -1).gather(1, targets_t[:, None])[:, 0]
    return nll, torch.tensor(rows, dtype=torch.long), picked.argmax(-1) == targets_t


def prepend_soft_prompt(model, input_ids: torch.Tensor, soft: torch.Tensor,
                        soft_mask: torch.Tensor | None = None,
                        attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Keyword inputs for `model(**inputs)` with soft-prompt rows before each row's token embeddings.

    input_ids [B, T]; soft [B, P, D] (from `PriorParts.soft_prompt`); soft_mask [B, P] bool
    (False: a padded patch); attention_mask [B, T] (1: a real token). Returns inputs_embeds
    [B, P+T, D], attention_mask [B, P+T] and position_ids [B, P+T] that skip masked entries, so a
    padded row gets the logits it gets alone. Gradients flow into `soft`; the model may stay frozen.
    """
    embed = model.get_input_embeddings()
    B, D = input_ids.shape[0], embed.weight.shape[1]
    if soft.ndim != 3 or soft.shape[0] != B or soft.shape[2] != D:
        raise SDTError(f"soft prompt of shape {list(soft.shape)} does not fit this backbone, which wants "
                       f"[{B}, P, {D}]: was the projector trained for another backbone?")
    ones = {"dtype": torch.long, "device": input_ids.device}
    soft_mask = torch.ones(soft.shape[:2], **ones) if soft_mask is None else soft_mask.to(**ones)
    attention_mask = torch.ones(input_ids.shape, **ones) if attention_mask is None else attention_mask.to(**ones)
    mask = torch.cat([soft_mask, attention_mask], dim=1)
    embeds = torch.cat([soft.to(embed.weight.dtype), embed(input_ids)], dim=1)
    return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp_min(0)}


def prompt_segments(parts: SPParts, backbone, layout: Layout, i: int) -> list:
    """Example i's prefill segments for decoding (`Backbone.start`)."""
    from specdifftree.prior.opentslm import segments

    return segments(parts.encoder, parts.projector, backbone, layout.prompts[i])


# ------------------------------------------------------------------------------------------- the variant


class SPVariant:
    """What the stage loop (train/stage.py) asks of a variant, for the soft prompt (see the module
    docstring); train/bias.py's `BiasVariant` is its counterpart. `run`: the stage loop's Run
    (backbone, backbone_ref, cfg, seed)."""

    def __init__(self, run):
        self.run = run
        self._frozen = False

    @property
    def backbone(self):
        bb = self.run.backbone
        if not self._frozen and bb is not None:
            if not hasattr(bb, "model"):
                from specdifftree.errors import SDTError

                raise SDTError("--variant sp trains through the LLM: use a transformers backbone (default or hf:DIR)")
            for p in bb.model.parameters():
                p.requires_grad_(False)
            self._frozen = True
        return bb

    def _with_lora(self, parts: SPParts, stage: str) -> SPParts:
        from specdifftree.data.example import STAGES

        if self.run.cfg.lora and STAGES.index(stage) >= STAGES.index(LORA_FROM_STAGE):
            parts.add_lora(self.backbone, seed=self.run.seed)
        return parts

    def fresh(self, stage: str) -> SPParts:
        run = self.run
        return self._with_lora(SPParts.fresh(self.backbone, run.backbone_ref, run.cfg.encoder, seed=run.seed), stage)

    def load(self, directory, stage: str) -> SPParts:
        return self._with_lora(SPParts.load(directory, self.backbone, self.run.backbone_ref), stage)

    def modules(self, parts: SPParts) -> dict:
        return parts.modules()

    def param_groups(self, parts: SPParts) -> list[dict]:
        return parts.param_groups(self.run.cfg)

    def train(self, parts: SPParts) -> None:
        for m in parts.modules().values():
            m.train()

    def eval(self, parts: SPParts) -> None:
        for m in parts.modules().values():
            m.eval()

    def prepare(self, split, what: str) -> None:
        if split.layout is None:
            split.layout = Layout.of(split.examples, self.backbone)

    @contextlib.contextmanager
    def _base(self, parts: SPParts, base: bool):
        """With base, the LLM as it was (adapters off)."""
        if parts.lora is None or not base:
            yield
            return
        parts.lora.enabled = False
        try:
            yield
        finally:
            parts.lora.enabled = True

    def nll(self, parts: SPParts, split, idx: list[int], base: bool = False):
        with self._base(parts, base):
            nll, owner, hits = sp_nll(parts, self.backbone, split.layout, idx, [split.answer_ids[i] for i in idx],
                                      with_series=not base)
        return nll, owner, hits, None

    def choose(self, parts: SPParts, split, ev: dict, base: bool) -> list:
        """Each example's most probable option (likelihood of the whole candidate answer + EOS; the
        shared stem adds the same to every option), or None where the answer does not hold its label."""
        from specdifftree.train.examples import candidates

        bb = self.backbone
        pairs = [(i, k, bb.tokenize(c) + [int(bb.eos_id)]) for i, ex in enumerate(split.examples)
                 for k, c in enumerate(candidates(ex) or [])]
        scores: dict[int, list] = {}
        size = self.run.cfg.batch_size
        with torch.no_grad(), self._base(parts, base):
            for lo in range(0, len(pairs), size):
                chunk = pairs[lo: lo + size]
                nll, owner, _ = sp_nll(parts, bb, split.layout, [i for i, _, _ in chunk], [a for _, _, a in chunk],
                                       with_series=not base)
                per = torch.zeros(len(chunk), dtype=torch.float64).index_add(0, owner, nll.double())
                for (i, k, _), v in zip(chunk, per.tolist()):
                    scores.setdefault(i, []).append((v, k))
        return [ex.options[min(scores[i])[1]] if i in scores else None for i, ex in enumerate(split.examples)]

    def decode(self, split, parts: SPParts, ev: dict, forecast: bool) -> list[str]:
        from specdifftree.train.decode import decode_answers

        segs = [prompt_segments(parts, self.backbone, split.layout, i) for i in range(len(split.examples))]
        bias = np.zeros((len(split.examples), self.backbone.vocab_size), np.float32)
        return decode_answers(self.backbone, split, bias, self.run.cfg, forecast, segments=segs)

    def prompt_text(self, split, i: int) -> str:
        return split.layout.prompts[i].text()

    def save(self, parts: SPParts, target, extra: dict) -> None:
        parts.save(target, self.backbone.vocab_size, extra)

    def finish(self, parts: SPParts) -> None:
        parts.release()
