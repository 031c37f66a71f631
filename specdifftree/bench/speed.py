"""Throughput of the transformers backbone on a DTS-like workload, against `model.generate`.

Both run in one process on the same model:
  generate: `model.generate(do_sample=True, top_k=0, num_return_sequences=batch)` for n_new tokens
            (prompt prefilled once per returned sequence, as generate does);
  tree:     a random token tree grown through `HFBackbone.advance`, `batch` handles per call, each
            row continuing its own last node (a rollout) or, with probability `branch_prob`, a
            random earlier node (a branch), until batch * n_new new tokens exist. Tokens are drawn
            from the stored logits of the chosen node, as the search tree does.

    python -m specdifftree.bench.speed --prompt 250 --new 128 --batch 16 32
"""

from __future__ import annotations

import time

import numpy as np
import torch

from specdifftree.prior.backbones.hf import HFBackbone


def random_backbone(seed: int = 0, hidden: int = 128, layers: int = 4, heads: int = 4,
                    intermediate: int = 384, vocab: int = 258) -> HFBackbone:
    """A randomly initialised Llama of the embedded default's size, with the byte-level tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from specdifftree.prior.tokenizer import build_hf_tokenizer

    tokenizer = build_hf_tokenizer()
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=4096, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    return HFBackbone(LlamaForCausalLM(config), tokenizer)


def generate_run(backbone: HFBackbone, prompt_ids: list[int], n_new: int, batch: int, seed: int) -> tuple[int, float]:
    """(new tokens produced, seconds) for one batched sampling `generate` call (EOS does not stop it)."""
    model = backbone.model
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=backbone.device)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                             max_new_tokens=n_new, num_return_sequences=batch, eos_token_id=None,
                             pad_token_id=backbone.tokenizer.pad_token_id or 0)
    seconds = time.perf_counter() - t0
    return batch * (out.shape[1] - len(prompt_ids)), seconds


def _gumbel_argmax(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[B, V] logits -> [B] tokens sampled from softmax(logits)."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def tree_run(backbone: HFBackbone, prompt_ids: list[int], n_new: int, batch: int,
             rng: np.random.Generator, branch_prob: float = 0.1) -> tuple[int, float, int]:
    """(new tokens, seconds, forward_tokens) for growing a random tree of batch * n_new nodes.

    Nodes are numbered in creation order (0 = the prompt); `handle[n]` and `logits[n]` are what
    the backbone returned for node n. All handles are released afterwards (not timed).
    """
    n_nodes = 1 + batch * n_new
    handle = np.zeros(n_nodes, dtype=np.int64)
    logits = np.zeros((n_nodes, backbone.vocab_size), dtype=np.float32)
    forward0 = backbone.cost.forward_tokens
    t0 = time.perf_counter()
    handle[0], logits[0] = backbone.start(prompt_ids)
    size, last = 1, np.zeros(batch, dtype=np.int64)
    for _ in range(n_new):
        branch = rng.random(batch) < branch_prob
        pick = np.where(branch, rng.integers(0, size, batch), last)
        kids, logits[size: size + batch] = backbone.advance(handle[pick], _gumbel_argmax(logits[pick], rng))
        handle[size: size + batch] = kids
        last = np.arange(size, size + batch)
        size += batch
    seconds = time.perf_counter() - t0
    backbone.release(handle)
    return batch * n_new, seconds, backbone.cost.forward_tokens - forward0


def speed_report(backbone: HFBackbone, prompt_ids: list[int], n_new: int, batch: int,
                 rng: np.random.Generator, branch_prob: float = 0.1, repeats: int = 3) -> dict:
    """Tokens/s of `generate` and of the tree workload on the same model, and their ratio.

    Each workload runs once untimed (warm-up), then `repeats` times interleaved; the fastest run
    of each counts (the least disturbed by other load on the machine). Prints nothing.
    Returns a dict: generate_tok_s, tree_tok_s, ratio (tree / generate), forward_tokens_per_new
    (1 + prompt / new tokens when nothing is recomputed), plus the settings and all timings.
    """
    seed = int(rng.integers(2**31))
    generate_run(backbone, prompt_ids, min(n_new, 4), batch, seed)
    tree_run(backbone, prompt_ids, min(n_new, 4), batch, rng, branch_prob)
    gen_s, tree_s, forward = [], [], 0
    gen_tokens = tree_tokens = 0
    for r in range(repeats):
        gen_tokens, s = generate_run(backbone, prompt_ids, n_new, batch, seed + r)
        gen_s.append(s)
        tree_tokens, s, forward = tree_run(backbone, prompt_ids, n_new, batch, rng, branch_prob)
        tree_s.append(s)
    gen_rate, tree_rate = gen_tokens / min(gen_s), tree_tokens / min(tree_s)
    return {
        "prompt_len": len(prompt_ids), "n_new": n_new, "batch": batch, "branch_prob": branch_prob,
        "torch_threads": torch.get_num_threads(),
        "generate_tok_s": gen_rate, "tree_tok_s": tree_rate, "ratio": tree_rate / gen_rate,
        "forward_tokens_per_new": forward / tree_tokens,
        "generate_seconds": gen_s, "tree_seconds": tree_s,
    }


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=250, help="prompt length (random byte tokens)")
    ap.add_argument("--new", type=int, default=128, help="new tokens per row")
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    backbone = random_backbone(args.seed)
    prompt = rng.integers(0, 256, args.prompt).tolist()
    for batch in args.batch:
        print(json.dumps(speed_report(backbone, prompt, args.new, batch, rng, repeats=args.repeats)))


if __name__ == "__main__":
    main()
