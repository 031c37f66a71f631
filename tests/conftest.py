import numpy as np
import pytest

from specdifftree.bench.problems import BUILTIN_PROBLEMS
from specdifftree.search.common import Problem


@pytest.fixture
def toy3():
    """The acceptance problem: 3 tokens + EOS, max_len 4, reward pulling pi* away from the prior."""
    bp = BUILTIN_PROBLEMS["toy3"]()
    return Problem(bp.prior, bp.reward), bp.lam


@pytest.fixture
def rng():
    return np.random.default_rng(0)
