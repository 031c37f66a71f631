"""HFBackbone: the pooled, tree-shaped KV cache gives the logits of a plain full forward."""

import numpy as np
import pytest
import torch

from specdifftree.errors import SDTError
from specdifftree.prior.backbones.hf import HFBackbone
from specdifftree.prior.tokenizer import build_hf_tokenizer

ATOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama()


@pytest.fixture(scope="module")
def tokenizer():
    return build_hf_tokenizer()


def make(model, tokenizer, capacity: int = 16) -> HFBackbone:
    return HFBackbone(model, tokenizer, pool_capacity=capacity)


def full_forward(model, seq: list[int]):
    """Logits [V] and last-layer hidden state [D] at the last position of a plain forward."""
    with torch.inference_mode():
        out = model(torch.tensor([seq]), output_hidden_states=True)
    return out.logits[0, -1].numpy(), out.hidden_states[-1][0, -1].numpy()


def assert_exact(model, seqs: dict, got: dict) -> None:
    """Every handle's logits equal a full forward of its sequence."""
    for h, seq in seqs.items():
        np.testing.assert_allclose(got[h], full_forward(model, seq)[0], atol=ATOL)


def grow_random_tree(bb: HFBackbone, rng, prompt: list[int], steps: int, batch: int):
    """Advance random existing handles (repeats allowed) `steps` times.
    Returns {handle: sequence}, {handle: logits} and the number of advanced rows."""
    root, logits = bb.start(prompt)
    seqs, got, rows = {root: list(prompt)}, {root: logits}, 0
    for _ in range(steps):
        handles = rng.choice(np.array(list(seqs)), size=int(rng.integers(1, batch + 1)))
        tokens = rng.integers(0, 256, len(handles))
        kids, logits = bb.advance(handles, tokens)
        rows += len(handles)
        for kid, h, t, lg in zip(kids.tolist(), handles.tolist(), tokens.tolist(), logits):
            seqs[kid] = seqs[h] + [t]
            got[kid] = lg
    return seqs, got, rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_advance_matches_full_forward_on_random_trees(model, tokenizer, seed):
    rng = np.random.default_rng(seed)
    bb = make(model, tokenizer, capacity=8)  # small: the pool must grow on the way
    prompt = rng.integers(0, 256, int(rng.integers(1, 12))).tolist()
    seqs, got, _ = grow_random_tree(bb, rng, prompt, steps=25, batch=6)
    depths = {len(s) for s in seqs.values()}
    assert len(depths) > 5
    assert_exact(model, seqs, got)


def test_same_handle_advanced_many_times_in_one_batch(model, tokenizer):
    bb = make(model, tokenizer)
    root, _ = bb.start([5, 6, 7])
    kids, logits = bb.advance(np.array([root] * 4), np.array([1, 2, 1, 3]))
    assert len(set(kids.tolist())) == 4
    for t, lg in zip([1, 2, 1, 3], logits):
        np.testing.assert_allclose(lg, full_forward(model, [5, 6, 7, t])[0], atol=ATOL)


def test_cost_counts_prompt_once_and_one_position_per_row(model, tokenizer):
    rng = np.random.default_rng(3)
    bb = make(model, tokenizer)
    seqs, _, rows = grow_random_tree(bb, rng, [1, 2, 3, 4, 5, 6, 7], steps=10, batch=5)
    assert bb.cost.forward_tokens == 7 + rows
    assert bb.cost.model_calls == 1 + 10
    assert bb.pool.in_use == 7 + rows


def test_release_frees_slots_only_when_no_descendant_needs_them(model, tokenizer):
    bb = make(model, tokenizer)
    root, _ = bb.start([1, 2, 3])
    (a,), _ = bb.advance(np.array([root]), np.array([4]))
    (b,), _ = bb.advance(np.array([a]), np.array([5]))
    bb.release(np.array([root, a]))
    assert bb.pool.in_use == 5                       # b still needs the whole path
    with pytest.raises(ValueError):
        bb.advance(np.array([a]), np.array([1]))
    bb.release(np.array([b, b]))                     # releasing twice is harmless
    assert bb.pool.in_use == 0


def test_reuse_after_release_stays_exact(model, tokenizer):
    rng = np.random.default_rng(4)
    bb = make(model, tokenizer, capacity=64)
    for _ in range(4):
        prompt = rng.integers(0, 256, int(rng.integers(2, 9))).tolist()
        seqs, got, _ = grow_random_tree(bb, rng, prompt, steps=8, batch=4)
        assert_exact(model, seqs, got)
        bb.release(np.array(list(seqs)))
        assert bb.pool.in_use == 0
    assert bb.pool.capacity == 64                    # freed slots were reused, the pool never grew


def test_batch_mixing_depths_1_and_50(model, tokenizer):
    rng = np.random.default_rng(5)
    bb = make(model, tokenizer)
    shallow, _ = bb.start([7])                        # depth 1
    deep, _ = bb.start([3, 1, 4])                     # another root, grown to depth 50
    seq = [3, 1, 4]
    while len(seq) < 50:
        t = int(rng.integers(0, 256))
        (deep,), _ = bb.advance(np.array([deep]), np.array([t]))
        seq.append(t)
    kids, logits = bb.advance(np.array([shallow, deep, shallow]), np.array([9, 8, 10]))
    for lg, s in zip(logits, [[7, 9], seq + [8], [7, 10]]):
        np.testing.assert_allclose(lg, full_forward(model, s)[0], atol=ATOL)


def test_hidden_matches_output_hidden_states(model, tokenizer):
    rng = np.random.default_rng(6)
    bb = make(model, tokenizer)
    seqs, _, _ = grow_random_tree(bb, rng, [10, 20, 30], steps=6, batch=4)
    handles = np.array(list(seqs))
    hidden = bb.hidden(handles)
    assert hidden.shape == (len(handles), model.config.hidden_size)
    for row, h in zip(hidden, handles.tolist()):
        np.testing.assert_allclose(row, full_forward(model, seqs[h])[1], atol=ATOL)


@pytest.mark.parametrize("cascade", [True, False])
def test_rows_of_several_prompts_in_one_forward_are_exact(model, tokenizer, cascade):
    """Rows of three prompts of different lengths, at mixed depths, share forwards: in cascade mode
    (each prompt's K/V read once per forward, hf_cascade.py) and with padded paths, every handle's
    logits are a full forward's (the tiny Llama has grouped K/V heads: 4 query heads, 2 K/V)."""
    bb = HFBackbone(model, tokenizer, pool_capacity=16, cascade=cascade)
    assert bb.cascade is cascade
    rng = np.random.default_rng(3)
    seqs, got = {}, {}
    for n in (3, 11, 6):
        prompt = rng.integers(0, 256, n).tolist()
        root, logits = bb.start(prompt)
        seqs[root], got[root] = prompt, logits
    for _ in range(12):
        handles = rng.choice(np.array(list(seqs)), size=int(rng.integers(2, 9)))
        tokens = rng.integers(0, 256, len(handles))
        kids, logits = bb.advance(handles, tokens)
        for kid, h, t, lg in zip(kids.tolist(), handles.tolist(), tokens.tolist(), logits):
            seqs[kid], got[kid] = seqs[h] + [t], lg
    assert_exact(model, seqs, got)


def test_cascade_switched_on_after_the_pool_exists_stays_exact(model, tokenizer):
    bb = HFBackbone(model, tokenizer, pool_capacity=16, cascade=False)
    rng = np.random.default_rng(5)
    seqs, got, _ = grow_random_tree(bb, rng, [1, 2, 3], steps=3, batch=3)
    bb.cascade = True
    handles = np.array(list(seqs))
    kids, logits = bb.advance(handles, np.full(len(handles), 7))
    assert_exact(model, {k: seqs[h] + [7] for k, h in zip(kids.tolist(), handles.tolist())},
                 dict(zip(kids.tolist(), logits)))


def test_cascade_is_off_where_layers_are_not_all_full_attention(tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         use_sliding_window=True, sliding_window=5, max_window_layers=1)
    assert not make(Qwen3ForCausalLM(config).eval(), tokenizer).cascade


def test_sliding_window_layers_are_exact(tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         use_sliding_window=True, sliding_window=5, max_window_layers=1)
    model = Qwen3ForCausalLM(config).eval()
    rng = np.random.default_rng(7)
    seqs, got, _ = grow_random_tree(make(model, tokenizer), rng, [1, 2, 3, 4], steps=20, batch=4)
    assert max(len(s) for s in seqs.values()) > config.sliding_window + 2
    assert_exact(model, seqs, got)


def test_text_side(model, tokenizer):
    bb = make(model, tokenizer)
    assert bb.vocab_size == 258 and bb.eos_id == tokenizer.eos_token_id == 256
    assert bb.tokenize("12.5 ab") == list(b"12.5 ab")
    assert bb.detokenize(bb.tokenize("1.5, é") + [bb.eos_id]) == "1.5, é"
    strings = bb.token_strings()
    assert len(strings) == bb.vocab_size
    assert strings[ord("7")] == "7" and strings[ord(" ")] == " " and strings[256] == "<|endoftext|>"


def test_from_pretrained_local_folder(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    bb = HFBackbone.from_pretrained(str(tmp_path))
    _, logits = bb.start([1, 2, 3])
    np.testing.assert_allclose(logits, full_forward(model, [1, 2, 3])[0], atol=ATOL)
    with pytest.raises(SDTError):
        HFBackbone.from_pretrained(str(tmp_path / "missing"))


# ------------------------------------------------------------------ soft prompt (OpenTSLM-SP)


def soft_forward(model, soft: torch.Tensor, seq: list[int]) -> np.ndarray:
    """Logits [V] at the last position of a plain forward of soft [P, D] followed by seq's embeddings."""
    with torch.inference_mode():
        embeds = torch.cat([soft, model.get_input_embeddings()(torch.tensor(seq))])[None]
        return model(inputs_embeds=embeds).logits[0, -1].numpy()


def test_soft_prompt_prefill_and_tree_match_full_forward(model, tokenizer):
    torch.manual_seed(1)
    soft = torch.randn(5, model.config.hidden_size)
    bb = make(model, tokenizer)
    prompt = [11, 12, 13]
    root, logits = bb.start([soft.numpy(), prompt])
    logits = logits.numpy()
    assert bb.cost.forward_tokens == 5 + 3 and bb.depth(root) == 8   # the soft rows live in the KV pool
    np.testing.assert_allclose(logits, soft_forward(model, soft, prompt), atol=ATOL)
    assert np.abs(logits - full_forward(model, prompt)[0]).max() > 1e-2  # and they matter
    kids, logits = bb.advance(np.array([root, root]), np.array([40, 41]))
    (grand,), glog = bb.advance(kids[:1], np.array([42]))
    assert isinstance(logits, torch.Tensor) and logits.device == bb.device  # logits stay where the model is
    for lg, seq in zip([*logits, glog[0]], [prompt + [40], prompt + [41], prompt + [40, 42]]):
        np.testing.assert_allclose(lg, soft_forward(model, soft, seq), atol=ATOL)
    assert bb.cost.forward_tokens == 8 + 3                              # one position per new token


def test_prepend_soft_prompt_padded_batch_matches_single_rows(model):
    from specdifftree.train.soft_prompt import prepend_soft_prompt

    torch.manual_seed(2)
    D = model.config.hidden_size
    soft = torch.randn(2, 4, D)
    soft_mask = torch.tensor([[True] * 4, [True, True, False, False]])  # row 1: two padded patches
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    attention = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with torch.inference_mode():
        batch = model(**prepend_soft_prompt(model, ids, soft, soft_mask, attention)).logits
    np.testing.assert_allclose(batch[0, -1].numpy(), soft_forward(model, soft[0], [5, 6, 7]), atol=ATOL)
    np.testing.assert_allclose(batch[1, -2].numpy(), soft_forward(model, soft[1, :2], [8, 9]), atol=ATOL)
    with pytest.raises(SDTError, match="does not fit this backbone"):
        prepend_soft_prompt(model, ids, torch.randn(2, 4, D + 1))
