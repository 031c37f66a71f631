"""Many queries at once (search/many.py): every method through `run_many` gives each query what it gets
alone with the same seed: exactly on Markov priors; on a tiny random Llama through transformers and
through llama.cpp the same samples, their log-probs within 1e-5, while the rows of all queries run
in shared forwards."""

from pathlib import Path

import numpy as np
import pytest

from specdifftree.data.context import Context, context_from_array
from specdifftree.errors import SDTError
from specdifftree.problem import Queries
from specdifftree.search.common import SearchConfig
from specdifftree.search.many import Lockstep, ManyStats, run_many
from specdifftree.search.registry import run_search

pytestmark = pytest.mark.usefixtures("one_thread")

PLAIN = ["dts", "dts-star", "mcts", "smc", "beam", "best-of-n", "best-of-n-is", "sample", "greedy"]
LOGP_TOL = 1e-5


def configs(n: int, **extra) -> list[SearchConfig]:
    """Small configs, one seed each; every other query under a forward-token budget."""
    base = dict(iterations=24, batch_size=4, samples=6, n=6, particles=6, beam_width=4)
    return [SearchConfig(**{**base, **extra}, seed=s, budget=None if s % 2 == 0 else 150) for s in range(n)]


def alone_and_many(queries: Queries, contexts: list, method: str, cfgs: list, **kw):
    alone = [run_search(queries.problem(c), method, cfg) for c, cfg in zip(contexts, cfgs)]
    stats = ManyStats()
    many = run_many([queries.problem(c) for c in contexts], method, cfgs, stats=stats, **kw)
    return alone, many, stats


@pytest.fixture(scope="module")
def toy3_flow(tmp_path_factory):
    """A small flow network for toy3 (S-ADT methods), trained through the API."""
    from specdifftree.amortize.pipeline import collect_buffer, train_flow
    from specdifftree.amortize.train import AmortizeConfig

    root = tmp_path_factory.mktemp("flow")
    collect_buffer(root / "buf", "markov:toy3", [], [Context()], SearchConfig(iterations=100))
    train_flow([root / "buf"], "markov:toy3", [], root / "flow", cfg=AmortizeConfig(steps=20, eval_every=10))
    return str(root / "flow")


@pytest.mark.parametrize("method,extra", [(m, {}) for m in PLAIN] + [
    ("sadt", {"flow": True}), ("sadt", {"flow": True, "rollout": "flow"}), ("sadt-sample", {"flow": True}),
    ("smc", {"flow": True, "potential": "flow"})])
def test_every_method_on_a_markov_prior_is_exactly_its_one_at_a_time_run(method, extra, request):
    if extra.get("flow"):
        extra = {**extra, "flow": request.getfixturevalue("toy3_flow")}
    queries = Queries.open("markov:toy3")
    cfgs = configs(5, lam=queries.lam, **extra)
    alone, many, stats = alone_and_many(queries, [None] * 5, method, cfgs)
    for a, b in zip(alone, many):
        assert [s.to_dict() for s in a.samples] == [s.to_dict() for s in b.samples]
        assert (a.forward_tokens, a.model_calls, a.tree_nodes) == (b.forward_tokens, b.model_calls, b.tree_nodes)
    assert stats.queries == 5 and stats.rounds >= 1


@pytest.fixture(scope="module")
def tiny_specs(tiny_hf, tmp_path_factory):
    """The tiny random Llama as hf:DIR and as an f32 GGUF (gguf:FILE, when llama.cpp is installed)."""
    specs = {"hf": f"hf:{tiny_hf}"}
    try:
        from specdifftree.prior.gguf import export_gguf

        import llama_cpp  # noqa: F401

        specs["gguf"] = f"gguf:{export_gguf(tiny_hf, tmp_path_factory.mktemp('tiny') / 'tiny.gguf', dtype='f32')}"
    except ImportError:
        pass
    return specs


def tiny_contexts() -> list:
    """Five forecasting queries whose prompts have different lengths."""
    rng = np.random.default_rng(0)
    return [context_from_array(np.sin(np.arange(n) / 3.0) * 4 + 10 + rng.normal(size=n), horizon=3)
            for n in (16, 24, 40, 16, 32)]


@pytest.mark.parametrize("backend", ["hf", "gguf"])
@pytest.mark.parametrize("method", PLAIN)
def test_every_method_on_a_tiny_llama_draws_the_same_samples_in_shared_forwards(backend, method, tiny_specs):
    if backend not in tiny_specs:
        pytest.skip("llama.cpp (llama-cpp-python, gguf) is not installed")
    queries = Queries.open(tiny_specs[backend], ["spectral"])
    contexts = tiny_contexts()
    alone, many, stats = alone_and_many(queries, contexts, method, configs(len(contexts)))
    for a, b in zip(alone, many):
        assert [s.tokens for s in a.samples] == [s.tokens for s in b.samples]
        for x, y in zip(a.samples, b.samples):
            assert abs(x.logp - y.logp) <= LOGP_TOL or not np.isfinite(x.logp)
            assert x.reward == y.reward
        if backend == "hf":  # llama.cpp may re-decode evicted prefixes, which depends on the cache's other users
            assert (a.forward_tokens, a.model_calls) == (b.forward_tokens, b.model_calls)
    assert stats.forwards < sum(r.model_calls for r in many)  # rows of several queries shared forwards


@pytest.mark.parametrize("backend", ["hf", "gguf"])
def test_shared_forwards_give_each_query_its_next_token_log_probs(backend, tiny_specs):
    """Row by row: log p(.|prefix) of every query through one fused forward is its own forward's, to 1e-5."""
    if backend not in tiny_specs:
        pytest.skip("llama.cpp (llama-cpp-python, gguf) is not installed")
    from specdifftree.prior.backbones.base import on_host

    queries = Queries.open(tiny_specs[backend], ["spectral"])
    contexts = tiny_contexts()

    def walk(i, problem):
        prior, rows = problem.prior, []
        h, logp = prior.start()
        for t in range(3):
            kids, logp = prior.advance(np.array([h, h]), np.array([48 + t, 49 + i % 3]))
            rows.append(on_host(logp).astype(np.float64))
            h = int(kids[0])
        return rows

    alone = [walk(i, queries.problem(c)) for i, c in enumerate(contexts)]
    lock = Lockstep()
    fused = lock.run([queries.problem(c) for c in contexts], walk)
    for a, b in zip(alone, fused):
        for x, y in zip(a, b):
            finite = np.isfinite(x)
            assert (finite == np.isfinite(y)).all() and np.abs(x[finite] - y[finite]).max() <= LOGP_TOL
    assert lock.stats.forwards == 3 and lock.stats.rows == 3 * 2 * len(contexts)


def test_a_row_cap_and_fewer_active_queries_change_nothing(tiny_specs):
    queries = Queries.open(tiny_specs["hf"], ["spectral"])
    contexts = tiny_contexts()
    cfgs = configs(len(contexts))
    base = [[s.tokens for s in r.samples] for r in run_many([queries.problem(c) for c in contexts], "dts", cfgs)]
    stats = ManyStats()
    capped = run_many([queries.problem(c) for c in contexts], "dts", cfgs, max_rows=3, max_active=2, stats=stats)
    assert [[s.tokens for s in r.samples] for r in capped] == base
    assert stats.max_rows == 3
    alone = [run_search(queries.problem(c), "dts", cfg) for c, cfg in zip(contexts, cfgs)]
    # a query's model calls are its own, however the row cap splits the forwards it shares
    assert [r.model_calls for r in capped] == [r.model_calls for r in alone]


def test_a_failing_query_raises_its_error_and_the_others_stop():
    queries = Queries.open("markov:toy3")
    calls = []

    def fn(i, problem):
        calls.append(i)
        if i == 1:
            problem.prior.advance(np.array([-1]), np.array([0]))
            raise SDTError("query 1 failed")
        return run_search(problem, "dts", SearchConfig(iterations=50, batch_size=2, lam=queries.lam))

    with pytest.raises(SDTError, match="query 1 failed"):
        Lockstep().run([queries.problem() for _ in range(3)], fn)
    assert sorted(calls) == [0, 1, 2]


def test_search_many_returns_one_search_run_per_context_as_search_run_would():
    import specdifftree as sdt

    runs = sdt.search_many("markov:toy3", [None] * 3, method="smc", seeds=[4, 5, 6], particles=8, samples=4)
    for seed, run in zip((4, 5, 6), runs):
        one = sdt.search_run("markov:toy3", None, method="smc", seed=seed, particles=8, samples=4)
        assert run.cfg.seed == seed and run.result.to_dict()["samples"] == one.result.to_dict()["samples"]
        assert run.record()["stats"]["forward_tokens"] == one.record()["stats"]["forward_tokens"]


ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT.parent / "shared" / "data" / "ett" / "ETTh1.csv"
needs_etth1 = pytest.mark.skipif(not ETTH1.is_file(), reason="needs ../shared/data/ett/ETTh1.csv beside the checkout")


@needs_etth1
def test_search_windows_writes_one_record_per_window_each_its_own_runs(tmp_path, run_cli):
    import json

    args = ["search", "--prior", f"markov:{ROOT / 'examples' / 'digits.json'}",
            "--series", ETTH1, "--column", "OT", "--context-length", "32", "--horizon", "4", "--reward", "spectral",
            "--method", "dts", "--iterations", "20", "-q"]
    code, _, err = run_cli([*args, "--windows", "3", "--end", "15000", "--out", tmp_path / "w.json"])
    assert code == 0, err
    records = json.loads((tmp_path / "w.json").read_text())
    assert len(records) == 3
    for end, record in zip((14992, 14996, 15000), records):
        code, _, err = run_cli([*args, "--end", end, "--out", tmp_path / "one.json"])
        assert code == 0, err
        one = json.loads((tmp_path / "one.json").read_text())
        assert set(one) == set(record) and one["samples"] == record["samples"]
        assert one["stats"]["forward_tokens"] == record["stats"]["forward_tokens"]
    code, _, err = run_cli([*args, "--windows", "2", "--plot", tmp_path / "p.png"])
    assert code == 2 and "--windows" in err


@needs_etth1
def test_bench_speed_queries_reports_both_modes(tiny_specs, run_cli):
    import json

    code, out, err = run_cli(["bench", "speed", "--backbone", tiny_specs["hf"], "--queries", "2", "--iterations", "2",
                              "--batch", "2", "--repeats", "1", "--context-length", "16", "--horizon", "3", "--json"])
    assert code == 0, err
    (report,) = json.loads(out)
    assert report["queries"] == 2 and report["same_samples"] and report["ratio"] > 0
    assert report["model_calls"][1] < report["model_calls"][0]  # the batched run shared its forwards


@needs_etth1
def test_bench_queries_sizes_llamacpp_for_every_round(tiny_specs):
    """`sdt bench speed --queries N` on llama.cpp: the context holds every query's prompt and `batch`
    full answers at once, with a sequence id per row (the 12-query bench once ran out of cells)."""
    if "gguf" not in tiny_specs:
        pytest.skip("llama.cpp (llama-cpp-python, gguf) is not installed")
    from specdifftree.bench.queries import bench_windows, sized_for_queries
    from specdifftree.problem import Queries

    base = Queries.open(tiny_specs["gguf"], ["spectral"])
    contexts = bench_windows(None, None, 16, 3, 12)
    need = sum(len(p.prompt_ids) + 16 * p.max_len for p in (base.problem(c).prior for c in contexts))
    sized = sized_for_queries(base, contexts, batch=16)
    backbone = sized.source.backbone
    assert backbone.n_ctx >= max(4096, need)
    assert backbone.n_seq_max >= min(int(backbone.lib.llama_max_parallel_sequences()), 12 * 17)
    assert backbone.cell_budget >= max(4096, need) // 2  # half the cells requested (llama.cpp pads n_ctx up)
