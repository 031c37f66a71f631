import numpy as np
import pytest

from specdifftree.prior.builtin import BUILTIN_PROBLEMS
from specdifftree.search.common import Problem


@pytest.fixture
def toy3():
    """The acceptance problem: 3 tokens + EOS, max_len 4, reward pulling pi* away from the prior."""
    bp = BUILTIN_PROBLEMS["toy3"]()
    return Problem(bp.prior, bp.reward), bp.lam


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and they thrash on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def default_backbone():
    """The embedded default backbone's transformers directory (the packaged one; else built once into
    the shared cache under ~/.cache/specdifftree: a few minutes; waits on another build)."""
    from specdifftree.train.backbone import ensure_backbone

    return ensure_backbone(progress=False)


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="session")
def run_cli():
    """Run `sdt ARGS` in this process: run_cli(args) -> (exit code, stdout, stderr).

    Arguments are passed through str(), so paths and numbers can be given as they are. The command's own
    stdout and stderr are captured here (not through capsys), so fixtures of any scope can use it; the
    command must end by exiting, as click's standalone mode always does."""
    import contextlib
    import io

    from specdifftree.cli import main

    def stream() -> io.TextIOWrapper:
        # a text stream over bytes, like pytest's own capture, so writers that reach for .buffer work too
        return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="", write_through=True)

    def run(args) -> tuple[int, str, str]:
        out, err = stream(), stream()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        return e.value.code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()

    return run


# ------------------------------------------------------------------------------------------ tiny models

# A 2-layer, width-32 random Llama over the byte tokenizer's 258 ids (256 bytes, EOS 256, PAD 257).
TINY_LLAMA = dict(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False, eos_token_id=256,
                  bos_token_id=256)


def _tiny_llama(seed: int = 0, **config):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):  # the same weights for a seed, and torch's global RNG left as it was
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **config})).eval()


@pytest.fixture(scope="session")
def tiny_llama():
    """Build a fresh tiny random Llama: tiny_llama(seed=0, **LlamaConfig overrides of TINY_LLAMA). A new
    model on every call, so a test may change its weights."""
    return _tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random Llama saved as a transformers directory with the byte tokenizer:
    tiny_llama_dir(seed=0, **config) -> Path. Built once per session for each set of arguments; tests
    read it and never write into it."""
    from specdifftree.prior.tokenizer import build_hf_tokenizer

    built: dict = {}

    def make(seed: int = 0, **config):
        key = (seed, tuple(sorted(config.items())))
        if key not in built:
            path = tmp_path_factory.mktemp(f"tiny_llama{seed}") / "hf"
            _tiny_llama(seed, **config).save_pretrained(path)
            build_hf_tokenizer().save_pretrained(path)
            built[key] = path
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_hf(tiny_llama_dir):
    """The seed-0 tiny Llama's transformers directory (read-only), for `hf:DIR` priors and backbones."""
    return tiny_llama_dir()
