"""GGUF export + LlamaCppBackbone against transformers on one tiny random Llama.

The model is exported once (module fixture); every check compares llama.cpp's next-token
log-probs with a full HF forward over the same ids.
"""

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_thread")

from specdifftree.errors import SDTError  # noqa: E402
from specdifftree.prior.backbones.llamacpp import LlamaCppBackbone  # noqa: E402
from specdifftree.prior.gguf import export_gguf  # noqa: E402

PROMPTS = ["12, 34.5\n-7", "héllo wörld! 3,141 ;)", "  a  b\n\n c", "x", "mean 0.25, std 1.5\nAnswer: 0.1, 0.2, 0.3;"]
TOL, TOL_F16 = 1e-3, 1e-2  # measured: f32 ~1e-6, f16 weights ~1.1e-3


@pytest.fixture(scope="module")
def model(tiny_llama, tmp_path_factory):
    """(hf model, hf tokenizer, f32 gguf path, f16 gguf path)."""
    from transformers import AutoTokenizer

    from specdifftree.prior.tokenizer import build_hf_tokenizer

    root = tmp_path_factory.mktemp("gguf")
    hf = tiny_llama(hidden_size=64, intermediate_size=128, max_position_embeddings=512, bos_token_id=None,
                    pad_token_id=257)
    with torch.no_grad():  # sharpen the distribution so that mistakes show
        hf.model.embed_tokens.weight.mul_(5)
        hf.lm_head.weight.mul_(5)
    hf.save_pretrained(root / "hf")
    build_hf_tokenizer().save_pretrained(root / "hf")
    f32 = export_gguf(root / "hf", root / "m.gguf")
    f16 = export_gguf(root / "hf", root / "m16.gguf", dtype="f16")
    return hf, AutoTokenizer.from_pretrained(root / "hf"), f32, f16


@pytest.fixture(scope="module")
def bb(model):
    return LlamaCppBackbone(model[2])


def hf_logp(hf, ids):
    """Next-token log-probs [V] (float64) after `ids`, by a full forward."""
    with torch.no_grad():
        return torch.log_softmax(hf(torch.tensor([ids])).logits[0, -1].double(), -1).numpy()


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def check_rows(hf, paths, kids, logits, tol=TOL):
    for kid, row in zip(kids, logits):
        assert np.abs(log_softmax(row) - hf_logp(hf, paths[int(kid)])).max() < tol


def test_tokenizer_ids_match(model, bb):
    hf, tok = model[:2]
    for p in PROMPTS:
        assert bb.tokenize(p) == tok.encode(p)
        assert bb.detokenize(bb.tokenize(p)) == p
    assert bb.eos_id == 256 and bb.vocab_size == 258
    assert bb.token_strings()[256] == "<|endoftext|>"


def test_start_matches_hf(model, bb):
    hf, tok = model[:2]
    for p in PROMPTS:
        ids = tok.encode(p)
        _, logits = bb.start(ids)
        assert logits.shape == (258,) and logits.dtype == np.float32
        assert np.abs(log_softmax(logits) - hf_logp(hf, ids)).max() < TOL


def test_branching_tree_one_batch(model, bb):
    hf, tok = model[:2]
    prompt = tok.encode("7, 8, ")
    root, _ = bb.start(prompt)
    kids, logits = bb.advance(np.array([root] * 4), np.array([48, 49, 50, 44]))
    paths = {root: prompt, **{int(k): prompt + [t] for k, t in zip(kids, [48, 49, 50, 44])}}
    check_rows(hf, paths, kids, logits)
    grand, _ = bb.advance(kids[:1], np.array([51]))
    paths[int(grand[0])] = paths[int(kids[0])] + [51]
    # depths 1, 1, 2, 0, 2 in one call: siblings, a grandchild, the root again
    par, toks = np.array([kids[0], kids[0], grand[0], root, kids[2]]), np.array([52, 53, 32, 57, 10])
    before = (bb.cost.forward_tokens, bb.cost.model_calls)
    new, logits = bb.advance(par, toks)
    assert (bb.cost.forward_tokens - before[0], bb.cost.model_calls - before[1]) == (5, 1)
    for k, p, t in zip(new, par, toks):
        paths[int(k)] = paths[int(p)] + [int(t)]
    check_rows(hf, paths, new, logits)
    bb.release(np.concatenate([kids, grand, new, [root]]))


def test_eviction_recomputes_and_counts(model):
    hf, tok = model[:2]
    bb = LlamaCppBackbone(model[2], n_seq_max=4)
    prompt = tok.encode("1, 2")
    paths = {}

    def adv(handles, toks, expect_tokens):
        before = bb.cost.forward_tokens
        kids, logits = bb.advance(np.array(handles), np.array(toks))
        assert bb.cost.forward_tokens - before == expect_tokens
        for k, h, t in zip(kids, handles, toks):
            paths[int(k)] = paths[int(h)] + [t]
        check_rows(hf, paths, kids, logits)
        return [int(k) for k in kids]

    root, _ = bb.start(prompt)
    paths[root] = prompt
    (c1,) = adv([root], [44], 1)
    (c2,) = adv([c1], [32], 1)
    (c3,) = adv([c2], [51], 1)  # 4 live handles = n_seq_max
    adv([c1] * 3, [52, 53, 54], 3)  # evicts root, c2, c3 (least recently used)
    assert bb.live_handles() == 4
    adv([c3], [44], 2 + 1)  # c2, c3 rebuilt from live c1
    for _ in range(4):  # four new prompts push every old handle out
        bb.start(tok.encode("9"))
    adv([c2], [55], len(prompt) + 2 + 1)  # nothing live above c2: prompt + 2 tokens again
    adv([c2, c2], [56, 57], 2)  # c2 is live again: no recomputation


def test_evicted_prefix_held_by_a_live_descendant_costs_nothing(model):
    hf, tok = model[:2]
    bb = LlamaCppBackbone(model[2], n_seq_max=4)
    prompt = tok.encode("5, 6, 7, 8")
    root, _ = bb.start(prompt)
    paths, h = {root: prompt}, root
    for t in (44, 32, 57, 50):  # a chain of 4 more handles: the 4th evicts the root (least recently used)
        (kid,), _ = bb.advance(np.array([h]), np.array([t]))
        paths[int(kid)], h = paths[h] + [t], int(kid)
    before = bb.cost.forward_tokens
    kids, logits = bb.advance(np.array([root, root]), np.array([51, 52]))  # the root's cells live on in its chain
    assert bb.cost.forward_tokens - before == 2
    paths.update({int(k): prompt + [t] for k, t in zip(kids, [51, 52])})
    check_rows(hf, paths, kids, logits)


def test_many_handles_few_sequences_exact(model):
    hf, tok = model[:2]
    bb = LlamaCppBackbone(model[2], n_seq_max=4)
    rng = np.random.default_rng(0)
    prompt = tok.encode("3, 1, 4")
    root, _ = bb.start(prompt)
    paths, handles = {root: prompt}, [root]
    for _ in range(6):
        par, toks = rng.choice(handles, size=5), rng.integers(40, 60, size=5)
        before = bb.cost.forward_tokens
        kids, logits = bb.advance(par, toks)
        assert bb.cost.forward_tokens - before >= 5
        for k, p, t in zip(kids, par, toks):
            paths[int(k)] = paths[int(p)] + [int(t)]
        check_rows(hf, paths, kids, logits)
        handles += [int(k) for k in kids]
    assert bb.live_handles() <= 4


def cells_on_paths(bb, handles) -> int:
    """KV cells the paths of `handles` hold, counted from scratch (for bb._lru: what `bb._cells` tracks)."""
    nodes = set()
    for h in handles:
        while h >= 0 and h not in nodes:
            nodes.add(h)
            h = bb._nodes[h].parent
    return sum(len(bb._nodes[n].tokens) for n in nodes)


def test_a_chain_of_single_forks_extends_one_sequence_id(model):
    """A rollout (each new handle advanced once) hands its id down: one live handle, no copies."""
    hf, tok = model[:2]
    bb = LlamaCppBackbone(model[2], n_seq_max=4)
    prompt = tok.encode("2, 7, 1")
    root, _ = bb.start(prompt)
    (h,), _ = bb.advance(np.array([root]), np.array([44]))  # the root keeps its id (it is no fork's only parent)
    paths = {root: prompt, int(h): prompt + [44]}
    for t in (50, 51, 52, 53, 54, 55, 56):
        (kid,), logits = bb.advance(np.array([h]), np.array([t]))
        paths[int(kid)], h = paths[int(h)] + [t], int(kid)
        check_rows(hf, paths, [kid], logits)
    assert bb.live_handles() == 2  # the root and the chain's end, not one id per token
    assert bb.cost.forward_tokens == len(prompt) + 8
    kids, logits = bb.advance(np.array([root, h, int(list(paths)[3])]), np.array([60, 61, 62]))  # a mid-chain handle
    assert bb.cost.forward_tokens == len(prompt) + 8 + 3  # ... is held by the chain's end: copied, not re-decoded
    for k, p, t in zip(kids, [root, h, int(list(paths)[3])], [60, 61, 62]):
        paths[int(k)] = paths[p] + [t]
    check_rows(hf, paths, kids, logits)
    assert bb._cells == cells_on_paths(bb, bb._lru)


@pytest.mark.parametrize("budget", [0, 12, None])
def test_the_cell_budget_evicts_old_prefixes_and_stays_exact(model, budget):
    """Random branching with a cell budget: the tracked cell count is the live paths' true count, it
    stays within the budget whenever the call's own paths allow, and every row is still exact."""
    hf, tok = model[:2]
    bb = LlamaCppBackbone(model[2], n_seq_max=8, cell_budget=budget)
    rng = np.random.default_rng(1)
    prompt = tok.encode("9, 8, 7")
    root, _ = bb.start(prompt)
    paths, handles = {root: prompt}, [root]
    for _ in range(8):
        par, toks = rng.choice(handles, size=4), rng.integers(40, 60, size=4)
        kids, logits = bb.advance(par, toks)
        for k, p, t in zip(kids, par, toks):
            paths[int(k)] = paths[int(p)] + [int(t)]
        check_rows(hf, paths, kids, logits)
        handles += [int(k) for k in kids]
        assert bb._cells == cells_on_paths(bb, bb._lru)
        own = cells_on_paths(bb, kids.tolist())  # what this call's rows need (their parents' paths included)
        assert bb._cells <= max(own, bb.cell_budget + len(kids))
    if budget is not None:
        assert bb.cost.forward_tokens > len(prompt) + 32  # evicted prefixes were re-decoded, and counted


def test_plain_batched_sampling_matches_hf(model, bb):
    hf, tok = model[:2]
    prompt, rng, seen = tok.encode("4, 5, "), np.random.default_rng(0), []

    def draw(logits):  # [3, V] -> [3]: any tokens will do; the logits are what we check
        seen.append(logits.copy())
        return rng.integers(40, 60, len(logits))

    before = (bb.cost.forward_tokens, bb.cost.model_calls)
    out = bb.sample(prompt, 4, 3, draw)
    assert out.shape == (3, 4) and len(seen) == 4
    assert (bb.cost.forward_tokens - before[0], bb.cost.model_calls - before[1]) == (len(prompt) + 3 * 3, 1 + 3)
    for step, logits in enumerate(seen):
        for row, lg in zip(out, logits):
            assert np.abs(log_softmax(lg) - hf_logp(hf, prompt + row[:step].tolist())).max() < TOL
    with pytest.raises(SDTError, match="KV cells"):
        bb.sample(prompt, 4096, 2, draw)


def test_f16_export_close(model):
    hf, tok, _, f16 = model
    bb = LlamaCppBackbone(f16)
    for p in PROMPTS:
        ids = tok.encode(p)
        _, logits = bb.start(ids)
        assert np.abs(log_softmax(logits) - hf_logp(hf, ids)).max() < TOL_F16


def test_bad_inputs(tmp_path, model):
    with pytest.raises(SDTError, match="does not exist"):
        LlamaCppBackbone(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file")
    with pytest.raises(SDTError, match="cannot load"):
        LlamaCppBackbone(junk)
    with pytest.raises(SDTError, match="config.json is missing"):
        export_gguf(tmp_path, tmp_path / "out.gguf")
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(SDTError, match="Llama only"):
        export_gguf(tmp_path, tmp_path / "out.gguf")
    with pytest.raises(SDTError, match="does not exist"):
        export_gguf(tmp_path / "nope", tmp_path / "out.gguf")
    bb = LlamaCppBackbone(model[2])
    with pytest.raises(SDTError, match="handle"):
        bb.advance(np.array([12345]), np.array([1]))
    with pytest.raises(SDTError, match="needs a transformers backbone"):
        bb.start([np.zeros((3, 64), dtype=np.float32), [1, 2]])
