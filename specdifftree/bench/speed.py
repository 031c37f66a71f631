"""Search speed on a real backbone: DTS against plain batched sampling, same model, same process.

    context = bench_context(None, None, context_length=96, horizon=24)   # the first ETTh1 eval window
    problem = Queries.open(bench_spec("default", "gguf"), ["spectral"]).problem(context)
    report = speed_report(problem, SpeedConfig(batch=16, iterations=64))
    print(summary(report))

The problem's prior is a forecasting `TSLMPrior` (prompt = a series window written with the
number codec, grammar mask, encoder bias) on either backend. Two workloads, timed alternately
after one untimed warm-up of each; the fastest of `repeats` runs of each counts (the least
disturbed by other load on the machine):

  dts       `run_dts` with the problem's reward, `batch` leaves per round (their rollouts advance
            together, one forward call per step), `iterations` iterations. New tokens = tree nodes
            - 1 (every node is a token the search generated); forward tokens = positions the
            backbone ran (the prompt once, plus any prefix it had to rebuild after an eviction).
  sampling  plain batched ancestral sampling of as many tokens: `batch` sequences of
            ceil(new / batch) tokens, with the backend's own batched sampler:
              transformers  model.generate(do_sample=True, top_k=0, num_return_sequences=batch)
              llama.cpp     LlamaCppBackbone.sample: the prompt decoded once and shared by
                            `batch` sequence ids, then one llama_decode of `batch` tokens per step
                            (in as many calls as the context's KV cells need, the prompt once per call)

Targets (issue 3): DTS tokens/s >= 0.7x sampling tokens/s; forward tokens per new token <= 1.2.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from specdifftree.errors import SDTError

TARGET_RATIO, TARGET_FORWARD = 0.7, 1.2


@dataclass
class SpeedConfig:
    batch: int = 16  # DTS leaves per round = sampled sequences
    iterations: int = 64  # DTS iterations per run
    repeats: int = 3  # timed runs of each workload; the fastest counts
    seed: int = 0

    def __post_init__(self):
        if min(self.batch, self.iterations, self.repeats) < 1:
            raise SDTError("--batch, --iterations and --repeats must be >= 1")


def bench_spec(backbone: str, backend: str | None = None) -> str:
    """The --prior spec to open: `default` on the gguf backend is its f32 GGUF export (made once)."""
    from specdifftree.problem import parse_prior

    kind = "gguf" if parse_prior(backbone).kind == "gguf" else "hf"
    backend = backend or kind
    if backend == "gguf" and backbone == "default":
        from specdifftree.prior.gguf import default_gguf

        return f"gguf:{default_gguf()}"
    if backend != kind:
        raise SDTError(f"--backend {backend} cannot run --backbone {backbone}; export it with "
                       "`sdt export-gguf DIR --out F.gguf` and pass --backbone gguf:F.gguf")
    return backbone


def bench_context(series: str | None, column: str | None, context_length: int, horizon: int):
    """The Context of the first evaluation window (`data/splits.py`) of `series`, by default the
    shared ETTh1 file's OT column."""
    from specdifftree.data.series import read_csv_column
    from specdifftree.paths import default_data_dir
    from specdifftree.data.splits import ett_range
    from specdifftree.problem import build_context

    if series is None:
        root = default_data_dir()
        if root is None:
            raise SDTError("no --series given and shared/data was not found beside the checkout; pass --series FILE.csv")
        series, column = str(root / "ett" / "ETTh1.csv"), column or "OT"
    end = ett_range(len(read_csv_column(series, column)), "eval")[0] + context_length
    return build_context(series, column, horizon, context_length, end)


def _is_hf(backbone) -> bool:
    from specdifftree.prior.backbones.hf import HFBackbone

    return isinstance(backbone, HFBackbone)


def dts_run(problem, cfg: SpeedConfig, iterations: int) -> tuple[int, float, int]:
    """(new tokens, seconds, forward tokens) of one DTS search; its handles are released after (untimed)."""
    from specdifftree.search.common import Problem, SearchConfig
    from specdifftree.search.registry import run_search

    fresh = Problem(problem.prior, problem.reward, problem.context)  # no reward cache from earlier runs
    search = SearchConfig(iterations=iterations, batch_size=cfg.batch, samples=1, seed=cfg.seed)
    result = run_search(fresh, "dts", search)
    tree = result.tree
    problem.prior.release(tree.handle[: tree.size][tree.evaluated[: tree.size]])
    return tree.size - 1, result.wall_s, result.forward_tokens


def sampling_run(backbone, prompt_ids: list[int], n_new: int, batch: int, seed: int) -> tuple[int, float]:
    """(new tokens, seconds) of plain batched ancestral sampling of `batch` x `n_new` tokens."""
    if _is_hf(backbone):
        import torch

        ids = torch.tensor([prompt_ids], dtype=torch.long, device=backbone.device)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with torch.inference_mode():  # eos_token_id=None: EOS does not stop a row
            out = backbone.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                          max_new_tokens=n_new, num_return_sequences=batch, eos_token_id=None,
                                          pad_token_id=backbone.tokenizer.pad_token_id or 0)
        return batch * (out.shape[1] - len(prompt_ids)), time.perf_counter() - t0
    from specdifftree.search.sampling import sample_tokens

    rng = np.random.default_rng(seed)
    per_call = max(1, (backbone.n_ctx - len(prompt_ids)) // batch)  # what fits in the KV cells at once
    t0 = time.perf_counter()
    done = 0
    while done < n_new:
        done += backbone.sample(prompt_ids, min(per_call, n_new - done), batch,
                                lambda lg: sample_tokens(lg - lg.max(1, keepdims=True), rng)).shape[1]
    return batch * done, time.perf_counter() - t0


def speed_report(problem, cfg: SpeedConfig) -> dict:
    """Tokens/s of DTS and of batched sampling of as many tokens on the problem's backbone; the two
    ratios against their targets, the settings and every timing. Prints nothing."""
    prior = problem.prior
    backbone, prompt_ids = prior.backbone, prior.prompt_ids
    dts_run(problem, cfg, min(cfg.iterations, cfg.batch))  # warm-up
    sampling_run(backbone, prompt_ids, 4, cfg.batch, cfg.seed)
    dts_s, sampling_s = [], []
    for r in range(cfg.repeats):
        new, seconds, forward = dts_run(problem, cfg, cfg.iterations)  # same seed: the same tree every time
        dts_s.append(seconds)
        sampled, seconds = sampling_run(backbone, prompt_ids, math.ceil(new / cfg.batch), cfg.batch, cfg.seed + r)
        sampling_s.append(seconds)
    dts_rate, sampling_rate = new / min(dts_s), sampled / min(sampling_s)
    return {
        "backend": "transformers" if _is_hf(backbone) else "llama.cpp", "prior": prior.name,
        "prompt_tokens": len(prompt_ids), "horizon": problem.context.horizon, **asdict(cfg),
        "threads": _threads(backbone), "cpus": os.cpu_count(),
        "dts_new_tokens": new, "dts_forward_tokens": forward, "sampled_tokens": sampled,
        "dts_tok_s": dts_rate, "sampling_tok_s": sampling_rate,
        "throughput_ratio": dts_rate / sampling_rate, "forward_per_new": forward / new,
        "dts_seconds": dts_s, "sampling_seconds": sampling_s,
    }


def _threads(backbone) -> int:
    if _is_hf(backbone):
        import torch

        return torch.get_num_threads()
    return int(backbone.lib.llama_n_threads(backbone.ctx))


def summary(report: dict) -> str:
    """The two ratios against their targets, and one sentence on how they were measured."""
    r = report
    sampler = ("model.generate(do_sample=True, num_return_sequences={batch})" if r["backend"] == "transformers"
               else "one llama_decode of {batch} sequences per step, the prompt decoded once per "
                    "call of as many tokens as the KV cells hold").format(**r)

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    return (
        f"throughput ratio DTS / sampling: {r['throughput_ratio']:.2f} ({r['dts_tok_s']:.0f} vs "
        f"{r['sampling_tok_s']:.0f} tokens/s; {verdict(r['throughput_ratio'] >= TARGET_RATIO)} the "
        f">= {TARGET_RATIO} target)\n"
        f"forward tokens per new token in DTS: {r['forward_per_new']:.3f} ({r['dts_forward_tokens']} for "
        f"{r['dts_new_tokens']}; {verdict(r['forward_per_new'] <= TARGET_FORWARD)} the <= {TARGET_FORWARD} target)\n"
        f"How: {r['backend']} backend, {r['threads']} thread(s) on {r['cpus']} CPUs, one process. DTS ran "
        f"{r['iterations']} iterations with {r['batch']} leaves per round on a {r['prompt_tokens']}-token "
        f"forecast prompt (horizon {r['horizon']}); plain batched sampling ({sampler}) drew "
        f"{r['sampled_tokens']} tokens, about as many. Each workload ran once untimed, then {r['repeats']} "
        f"times alternately; the fastest run of each counts."
    )
