import numpy as np
import pytest

from specdifftree.problem import BUILTIN_PROBLEMS
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
