"""S-ADT: search buffers, the flow network and its loss, `sdt amortize`, and sadt / sadt-sample / smc-flow."""

import json
import math
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from specdifftree.amortize.buffer import append_record, read_buffer, save_search
from specdifftree.amortize.flow import Flow, FlowNet, load_flow
from specdifftree.amortize.losses import flow_loss
from specdifftree.bench.exact import enumerate_sequences, target, tv
from specdifftree.prior.builtin import BUILTIN_PROBLEMS
from specdifftree.errors import SDTError
from specdifftree.prior.markov import MarkovPrior
from specdifftree.data.context import build_context
from specdifftree.problem import build_problem
from specdifftree.search.registry import run_search
from specdifftree.search.common import Problem, SearchConfig
from specdifftree.search.dts import run_dts

pytestmark = pytest.mark.usefixtures("one_thread")

ETTH1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ett" / "ETTh1.csv"
needs_etth1 = pytest.mark.skipif(not ETTH1.is_file(), reason="needs ../shared/data/ett/ETTh1.csv beside the checkout")


def toy3() -> tuple[Problem, float]:
    bp = BUILTIN_PROBLEMS["toy3"]()
    return Problem(bp.prior, bp.reward), bp.lam


def dts_buffer(path: Path, seed: int, problem=None, prior: str = "markov:toy3", rewards=(), lam: float = 1.0,
               iterations: int = 300):
    problem = problem or toy3()[0]
    cfg = SearchConfig(iterations=iterations, lam=lam, seed=seed)
    result = run_dts(problem, cfg, np.random.default_rng(seed))
    return save_search(path, problem, result, prior=prior, rewards=list(rewards), lam=lam, cfg=cfg), result


def q_distribution(flow: Flow, problem: Problem) -> dict:
    """The exact distribution of sadt-sample: the product of q along every path, enumerated."""
    prior, out = problem.prior, {}
    root, logp = prior.start()
    frontier = [((), 0.0, root, logp)]
    while frontier:
        nxt = []
        for seq, lq, h, logp in frontier:
            log_q = flow.log_q(np.array([h]), [list(seq)], logp[None])[0]
            for a in np.flatnonzero(np.isfinite(log_q)).tolist():
                if a == prior.eos_id or len(seq) + 1 == prior.max_len:
                    out[seq if a == prior.eos_id else seq + (a,)] = math.exp(lq + log_q[a])
                else:
                    kids, kid_logp = prior.advance(np.array([h]), np.array([a]))
                    nxt.append((seq + (a,), lq + log_q[a], kids[0], kid_logp[0]))
        frontier = nxt
    return out


# ------------------------------------------------------------------------------------------------ buffer


def test_buffer_holds_the_trees_trajectories_and_accumulates(tmp_path):
    path = tmp_path / "buf.safetensors"
    rec0, result = dts_buffer(path, seed=0)
    dts_buffer(path, seed=1)
    header, records = read_buffer(path)
    assert len(records) == 2 and header.vocab_size == 4 and header.lam == 1.0 and header.reward == []
    tree, problem = result.tree, toy3()[0]
    leaves = np.flatnonzero(tree.terminal[: tree.size] & (tree.visits[: tree.size] > 0))
    r = records[0]
    assert len(r) == len(leaves) and np.allclose(np.exp(r.tree_logq).sum(), 1.0)
    for i, n in enumerate(r.lengths.tolist()):
        acts = r.actions[i, :n]
        seq = [int(a) for a in acts if a != 3]
        assert r.reward[i] == problem.score(seq) and r.values[i, n] == r.reward[i]  # a leaf's value is its reward
        assert r.values[i, 0] == tree.value[0] and (r.actions[i, n:] == -1).all()
        assert np.isclose(r.logp[i, :n].sum(), enumerate_sequences(problem.prior)[tuple(seq)])
    assert records[0].context == {"series": None, "horizon": None, "meta": {}}


def test_buffer_refuses_another_prior_vocabulary_reward_or_lambda(tmp_path):
    path = tmp_path / "buf.safetensors"
    dts_buffer(path, seed=0)
    before = path.read_bytes()
    other = MarkovPrior.from_dict({**BUILTIN_PROBLEMS["toy3"]().prior.to_dict(), "initial": [0.25] * 4})
    deep2 = BUILTIN_PROBLEMS["deep2"]()
    cases = [
        (dict(problem=Problem(deep2.prior, deep2.reward)), "vocabulary"),
        (dict(problem=Problem(other, toy3()[0].reward)), "prior"),
        (dict(rewards=["zero"]), "reward"),
        (dict(lam=2.0), "lambda"),
    ]
    for kwargs, what in cases:
        with pytest.raises(SDTError, match=f"different {what}"):
            dts_buffer(path, seed=1, iterations=20, **kwargs)
    assert path.read_bytes() == before


def test_buffer_append_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "buf.safetensors"
    record, _ = dts_buffer(path, seed=0)
    before = path.read_bytes()
    header, _ = read_buffer(path)

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        append_record(path, header, record)
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [".buf.safetensors.lock",
                                                                                          "buf.safetensors"]


def _append_one(path: str, seed: int) -> None:
    dts_buffer(Path(path), seed=seed, iterations=30)


def test_concurrent_appends_accumulate(tmp_path):
    path = tmp_path / "buf.safetensors"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_one, args=(str(path), s)) for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(r.meta["seed"] for r in read_buffer(path)[1]) == [0, 1, 2, 3]


def test_a_corrupt_buffer_is_refused_in_one_line(tmp_path, run_cli):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    code, _, err = run_cli(["amortize", "--buffer", bad, "--prior", "markov:toy3", "--out", tmp_path / "f",
                            "--no-wandb"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a readable search buffer" in err


def test_save_buffer_needs_a_soft_value_tree_method(tmp_path, run_cli):
    code, _, err = run_cli(["search", "--prior", "markov:toy3", "--method", "mcts", "--save-buffer", tmp_path / "b"])
    assert code == 2 and "--save-buffer needs dts or dts-star" in err and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------ loss and q


class ExactFlow(torch.nn.Module):
    """The true soft values of toy3, read back from the Markov features (which spell the prefix out)."""

    def __init__(self, problem: Problem, lam: float):
        super().__init__()
        prior = problem.prior
        self.V, self.L, self.lam, self.eos = prior.vocab_size, prior.max_len, lam, prior.eos_id
        self.feature_dim = self.L * self.V + self.V + 1
        logp = enumerate_sequences(prior)
        self.value = {}
        for seq in {s[:k] for s in logp for k in range(min(len(s), self.L - 1) + 1)}:  # non-terminal prefixes
            ext = [(lp, problem.score(x)) for x, lp in logp.items() if x[: len(seq)] == seq]
            lp = np.array([e[0] for e in ext])
            r = np.array([e[1] for e in ext])
            self.value[seq] = (np.logaddexp.reduce(lp + lam * r) - np.logaddexp.reduce(lp)) / lam

    def prefix(self, row: torch.Tensor) -> tuple:
        depth = round(float(row[-1]) * self.L)
        return tuple(int(row[k * self.V:(k + 1) * self.V].argmax()) for k in range(depth))

    def forward(self, x):
        out = torch.zeros(len(x), self.V, dtype=torch.float64)
        for i, row in enumerate(x):
            s = self.prefix(row)
            for a in range(self.V):
                out[i, a] = self.value.get(s + (a,), 0.0)  # terminal children: replaced by their reward
        return out

    def log_z(self, root_x):
        return torch.full((len(root_x),), self.lam * self.value[()], dtype=torch.float64)


def test_the_exact_flow_has_zero_trajectory_balance_loss_and_q_is_pi_star(tmp_path):
    problem, lam = toy3()
    exact = ExactFlow(problem, lam)
    flow = Flow(exact, problem, lam)
    _, pi = target(problem, lam)
    q = q_distribution(flow, problem)
    assert math.isclose(sum(q.values()), 1.0, abs_tol=1e-12) and tv(q, pi) < 1e-9

    from specdifftree.amortize.data import PrefixStore, make_batch, make_traj, walk_prefixes

    store = PrefixStore()
    seqs = [np.array(list(s) + ([3] if len(s) < 4 else [])) for s in pi]
    walk_prefixes(problem, store, seqs)
    batch = make_batch([make_traj(problem, 0, store, s) for s in seqs])
    batch.logp, batch.reward = batch.logp.double(), batch.reward.double()
    loss, parts = flow_loss(exact, batch, lam)
    assert parts["tb"] < 1e-12 and float(loss) < 1e-12
    exact.value[(2,)] += 0.1  # any error in one value shows
    assert flow_loss(exact, batch, lam)[1]["tb"] > 1e-4


def test_q_sums_to_one_and_is_zero_where_the_prior_is(tmp_path):
    problem, lam = toy3()
    torch.manual_seed(0)
    net = FlowNet(21, 4, hidden=16)
    torch.nn.init.normal_(net.values[-1].weight)  # a random, far from exact, flow
    flow = Flow(net, problem, lam)
    prior = problem.prior
    h, logp = prior.start()
    handles, logps = prior.advance(np.array([h, h, h]), np.array([0, 1, 2]))
    log_q = flow.log_q(handles, [[0], [1], [2]], logps)
    assert np.allclose(np.exp(log_q).sum(axis=1), 1.0)
    cost = (prior.cost.forward_tokens, prior.cost.model_calls)
    flow.evaluate(handles, [[0], [1], [2]], logps)
    assert (prior.cost.forward_tokens, prior.cost.model_calls) == cost  # features cost no forward pass
    assert math.isclose(sum(q_distribution(flow, problem).values()), 1.0, abs_tol=1e-9)


# ------------------------------------------------------------------------------------------------ acceptance


@pytest.fixture(scope="module")
def toy3_flow(tmp_path_factory, run_cli):
    """Buffers from three DTS runs on toy3, then `sdt amortize` on them."""
    root = tmp_path_factory.mktemp("toy3")
    buf = root / "buf.safetensors"
    for seed in range(3):
        code, _, err = run_cli(["search", "--prior", "markov:toy3", "--method", "dts", "--iterations", "300",
                                "--seed", seed, "--save-buffer", buf, "-q"])
        assert code == 0, err
    code, _, err = run_cli(["amortize", "--buffer", buf, "--prior", "markov:toy3", "--out", root / "flow",
                            "--steps", "400", "--no-wandb", "-q"])
    assert code == 0, err
    return root / "flow"


def test_sadt_sample_is_exact_on_an_enumerable_problem(toy3_flow):
    problem, lam = toy3()
    p, pi = target(problem, lam)
    q = q_distribution(load_flow(str(toy3_flow), problem, lam), problem)
    assert tv(p, pi) >= 0.3
    assert tv(q, pi) <= 0.05, tv(q, pi)
    print(f"TV(q, pi*) = {tv(q, pi):.4f}, TV(prior, pi*) = {tv(p, pi):.4f}")
    cfg = json.loads((toy3_flow / "config.json").read_text())
    assert cfg["kind"] == "sdt-flow" and cfg["vocab_size"] == 4 and cfg["lam"] == 1.0 and cfg["reward"] == []
    assert cfg["prior_weights_sha256"] == problem.prior.weights_sha256() and cfg["prior"] == "markov:toy3"
    assert (toy3_flow / "tracking.jsonl").is_file()


@pytest.mark.parametrize("args", [["--method", "sadt-sample"], ["--method", "sadt", "--iterations", "40"],
                                  ["--method", "sadt", "--iterations", "20", "--rollout", "flow", "--alpha", "1"],
                                  ["--method", "smc", "--potential", "flow", "--particles", "16"]])
def test_flow_methods_run_through_the_cli(args, toy3_flow, tmp_path, run_cli):
    out = tmp_path / "o.json"
    code, _, err = run_cli(["search", "--prior", "markov:toy3", "--flow", toy3_flow, "--samples", "200", "--out", out,
                            "-q", *args])
    assert code == 0, err
    rec = json.loads(out.read_text())
    problem = toy3()[0]
    assert len(rec["samples"]) == 200 and rec["stats"]["forward_tokens"] > 0
    assert all(s["reward"] == problem.score(s["tokens"]) for s in rec["samples"])  # complete, scored sequences


def test_sadt_sample_pays_one_forward_token_per_generated_token(toy3_flow):
    problem, lam = toy3()
    result = run_search(problem, "sadt-sample", SearchConfig(flow=str(toy3_flow), samples=500, lam=lam))
    advanced = sum(len(s.tokens) - (len(s.tokens) == problem.prior.max_len) for s in result.samples)
    generated = sum(len(s.tokens) + (len(s.tokens) < problem.prior.max_len) for s in result.samples)  # + EOS
    assert result.forward_tokens == 1 + advanced  # the implicit BOS once, then one per non-final token
    assert 0.5 * generated <= result.forward_tokens <= generated + 1


@pytest.mark.parametrize("change,expected", [
    (["--prior", "markov:deep2"], "vocabulary of 4 tokens"),
    (["--prior", "markov:toy3", "--lambda", "2.0"], "lambda 1.0"),
    (["--prior", "markov:toy3", "--reward", "zero"], "reward"),
])
def test_a_mismatched_flow_is_refused_in_one_line(change, expected, toy3_flow, run_cli):
    code, _, err = run_cli(["search", "--method", "sadt-sample", "--flow", toy3_flow, "-q", *change])
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_flow_for_another_prior_with_the_same_vocabulary_is_refused(toy3_flow):
    other = MarkovPrior.from_dict({**BUILTIN_PROBLEMS["toy3"]().prior.to_dict(), "initial": [0.25] * 4})
    with pytest.raises(SDTError, match="another prior"):
        load_flow(str(toy3_flow), Problem(other, toy3()[0].reward), 1.0)


@pytest.mark.parametrize("method", ["sadt-sample", "sadt"])
def test_run_search_refuses_a_flow_trained_for_another_reward(method, toy3_flow):
    """The registry path (what experiments, the pipeline and the benchmarks call) checks the reward
    too: the flow was trained for toy3's own reward, the problem's is `zero`."""
    from specdifftree.rewards import parse_reward

    problem = Problem(toy3()[0].prior, parse_reward("zero"))
    with pytest.raises(SDTError, match="trained for the reward '[(]built-in[)]', not 'zero'") as e:
        run_search(problem, method, SearchConfig(flow=str(toy3_flow), samples=5, iterations=5, lam=1.0))
    assert len(str(e.value).splitlines()) == 1


def test_flows_and_buffers_of_older_versions_are_refused_in_one_line(toy3_flow, tmp_path):
    """They named the prior by a fingerprint, not its weights' sha256: retrain / collect again."""
    import shutil

    from safetensors.numpy import load, save

    from specdifftree.amortize.buffer import _META, _metadata

    old = tmp_path / "old_flow"
    shutil.copytree(toy3_flow, old)
    config = json.loads((old / "config.json").read_text())
    config["fingerprint"] = config.pop("prior_weights_sha256")[:16]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(SDTError, match="train it again with `sdt amortize`"):
        load_flow(str(old), toy3()[0], 1.0)
    buf = tmp_path / "old.safetensors"
    dts_buffer(buf, 0, iterations=20)
    blob = buf.read_bytes()
    meta = json.loads(_metadata(blob)[_META])
    meta["header"]["fingerprint"] = meta["header"].pop("prior_weights_sha256")[:16]
    buf.write_bytes(save(load(blob), metadata={_META: json.dumps(meta)}))
    with pytest.raises(SDTError, match="collect it again"):
        read_buffer(buf)


def test_training_a_flow_leaves_torchs_random_stream_as_it_was(tmp_path):
    from specdifftree.amortize.pipeline import train_flow
    from specdifftree.amortize.train import AmortizeConfig

    dts_buffer(tmp_path / "buf", 0, iterations=30)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    cfg = AmortizeConfig(steps=4, eval_every=2, save_every=2, val_samples=1, hidden=8)
    train_flow([tmp_path / "buf"], "markov:toy3", [], tmp_path / "flow", cfg=cfg)
    assert torch.equal(torch.get_rng_state(), before)
    first = (tmp_path / "flow" / "weights.safetensors").read_bytes()
    train_flow([tmp_path / "buf"], "markov:toy3", [], tmp_path / "again", cfg=cfg)
    assert (tmp_path / "again" / "weights.safetensors").read_bytes() == first  # seeded by cfg.seed alone


def test_reward_specs_compare_in_one_normal_form(tmp_path):
    from specdifftree.rewards import parse_reward, reward_spec

    assert reward_spec(["spectral + 0.5*format"]) == reward_spec(["spectral", " 0.5 * format"]) == "spectral+0.5*format"
    assert reward_spec("1*spectral+2*length+1e+1*format") == "spectral+2*length+10*format" and reward_spec([]) == ""
    assert parse_reward("spectral + 0.5*format").spec == "spectral+0.5*format" == parse_reward(["spectral", "0.5*format"]).spec
    assert parse_reward("zero").spec == "zero" and parse_reward("1*spectral").spec == "spectral"


def test_a_corrupt_or_missing_flow_is_refused_in_one_line(toy3_flow, tmp_path, run_cli):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(toy3_flow, broken)
    blob = bytearray((broken / "weights.safetensors").read_bytes())
    blob[-3] ^= 0xFF
    (broken / "weights.safetensors").write_bytes(bytes(blob))
    for flow, expected in [(broken, "sha256"), (tmp_path / "nowhere", "not found"), (tmp_path, "config.json")]:
        code, _, err = run_cli(["search", "--prior", "markov:toy3", "--method", "sadt", "--flow", flow, "-q"])
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    code, _, err = run_cli(["search", "--prior", "markov:toy3", "--method", "sadt-sample", "-q"])
    assert code == 2 and "needs --flow DIR" in err


# ------------------------------------------------------------------------------------------------ neural prior


@pytest.mark.slow
@needs_etth1
def test_the_whole_loop_runs_on_a_tslm_prior(tiny_hf, tiny_llama_dir, tmp_path):
    from specdifftree.amortize.pipeline import collect_buffer, train_flow
    from specdifftree.amortize.train import AmortizeConfig

    prior, rewards = f"hf:{tiny_hf}", ["spectral"]
    train_contexts = [build_context(str(ETTH1), "OT", 4, 32, end) for end in (10600, 11000, 11400)]  # flow part
    rows = collect_buffer(tmp_path / "buf", prior, rewards, train_contexts, SearchConfig(iterations=12, batch_size=6))
    assert len(rows) == 3 and all(r["trajectories"] > 0 for r in rows)
    summary = train_flow([tmp_path / "buf"], prior, rewards, tmp_path / "flow",
                         cfg=AmortizeConfig(steps=6, eval_every=3, batch_size=4, val_samples=2, val_fraction=0.34))
    assert summary["held_out_validation"] and summary["val_contexts"] == 1 and summary["train_contexts"] == 2
    assert math.isfinite(summary["val/tb"]) and summary["walk_forward_tokens"] > 0

    eval_context = build_context(str(ETTH1), "OT", 4, 32, 15000)  # eval part
    for method, extra in [("sadt-sample", {}), ("sadt", {"iterations": 8}), ("sadt", {"iterations": 8, "rollout": "flow"}),
                          ("smc", {"potential": "flow"})]:
        problem, _ = build_problem(prior, rewards, eval_context)
        cfg = SearchConfig(flow=str(tmp_path / "flow"), samples=6, particles=6, batch_size=4, **extra)
        result = run_search(problem, method, cfg)
        assert len(result.samples) == 6 and all(len(s.text.split(",")) == 4 for s in result.samples)
        if method == "sadt-sample":  # prompt once, then one forward token per non-final generated token
            advanced = sum(len(s.tokens) - (len(s.tokens) == problem.prior.max_len) for s in result.samples)
            assert result.forward_tokens == len(problem.prior.prompt_ids) + advanced

    from specdifftree.prior.model import PriorParts

    for seed in (0, 1):  # as a checkpoint DIR: the same parts as hf:DIR's fresh ones (seed 0), or others
        PriorParts.fresh(258, prior, seed=seed).save(tmp_path / f"parts{seed}")
    same, _ = build_problem(str(tmp_path / "parts0"), rewards, eval_context)
    load_flow(str(tmp_path / "flow"), same, 1.0)  # the identity is the weights, not the spec
    for spec in (str(tmp_path / "parts1"), f"hf:{tiny_llama_dir(1)}"):  # other encoder/head; other backbone weights
        other, _ = build_problem(spec, rewards, eval_context)
        with pytest.raises(SDTError, match="another prior"):
            load_flow(str(tmp_path / "flow"), other, 1.0)


def test_amortize_help_has_examples(run_cli):
    code, out, _ = run_cli(["amortize", "--help"])
    assert code == 0 and "Examples:" in out and "--save-buffer" in out


# ------------------------------------------------------------------------------------------------ resume


def _amortize_process(buf: Path, out: Path, resume: bool, steps: int):
    import subprocess
    import sys

    sdt = Path(sys.executable).with_name("sdt")
    args = [sdt, "amortize", "--buffer", buf, "--prior", "markov:toy3", "--out", out, "--steps", steps,
            "--eval-every", 20, "--save-every", 3, "--no-wandb", "-q"] + (["--resume"] if resume else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(a) for a in args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _committed_step(out: Path) -> int:
    from specdifftree.train.state import load_state

    state = load_state(out / "state.safetensors")
    return 0 if state is None else state[1]["step"]


def _next_commit(proc, out: Path, before: int) -> float:
    """Wait until the run in `proc` commits a step past `before`; the time it was seen."""
    deadline = time.time() + 60
    while _committed_step(out) == before:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.005)
    return time.time()


@pytest.mark.slow
def test_amortize_killed_at_five_random_points_resumes_to_the_same_bytes(tmp_path):
    """SIGKILL at 5 random moments (before, between and inside commits), `--resume` after each: the
    checkpoint ends byte for byte as an uninterrupted run's. The moment is drawn within two commits' time
    as measured on this machine, so a fast machine cannot run to the end before the kill (CI once did:
    a fixed 0.3 s let the fifth run finish)."""
    import signal

    buf, steps = tmp_path / "buf.safetensors", 120
    for seed in range(2):
        dts_buffer(buf, seed=seed, iterations=200)
    ref = _amortize_process(buf, tmp_path / "ref", False, steps)
    assert ref.wait() == 0, ref.stderr.read().decode()[-2000:]
    out, rng, seen = tmp_path / "killed", np.random.default_rng(15), []
    for k in range(5):
        proc = _amortize_process(buf, out, k > 0, steps)
        commits = [_next_commit(proc, out, _committed_step(out))]  # the run is under way: it has committed
        commits.append(_next_commit(proc, out, _committed_step(out)))  # twice: time one commit on this machine
        gap = commits[1] - commits[0]
        time.sleep(float(rng.uniform(0, 2 * gap)))  # then a random moment: mid-step, mid-evaluation or mid-write
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        seen.append(_committed_step(out))
    assert seen == sorted(seen) and seen[-1] < steps, seen  # every kill landed before the end
    last = _amortize_process(buf, out, True, steps)
    assert last.wait() == 0, last.stderr.read().decode()[-2000:]
    for name in ("weights.safetensors", "config.json"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert _committed_step(out) == steps


def test_amortize_resume_refuses_another_runs_state(tmp_path, run_cli):
    buf = tmp_path / "buf.safetensors"
    dts_buffer(buf, seed=0, iterations=100)
    args = ["amortize", "--buffer", buf, "--prior", "markov:toy3", "--out", tmp_path / "f", "--steps", "6",
            "--eval-every", "3", "--no-wandb", "-q"]
    assert run_cli(args)[0] == 0
    before = (tmp_path / "f" / "weights.safetensors").read_bytes()
    assert run_cli(args + ["--resume"])[0] == 0  # a finished run: nothing left to do, nothing changes
    assert (tmp_path / "f" / "weights.safetensors").read_bytes() == before
    for change in (["--lr", "0.5"], ["--buffer", buf]):  # other options; the buffer twice: other inputs
        code, _, err = run_cli(args + change + ["--resume"])
        assert code == 2 and "state of another amortize run" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_amortize_under_torchrun_matches_one_process_and_resumes(tmp_path):
    """Two DDP ranks share every batch: the network of one process within 1e-5; a SIGKILLed rank
    and --resume end with the uninterrupted DDP run's checkpoint bytes."""
    import signal
    import subprocess

    from processes import BIN, children, free_port
    from safetensors.torch import load_file

    buf = tmp_path / "buf.safetensors"
    dts_buffer(buf, seed=0, iterations=200)

    def run(out: Path, ranks: int, resume: bool = False) -> subprocess.Popen:
        args = ["amortize", "--buffer", buf, "--prior", "markov:toy3", "--out", out, "--steps", 90, "--eval-every", 30,
                "--save-every", 3, "--no-wandb", "-q"] + (["--resume"] if resume else [])
        launch = [BIN / "sdt"] if ranks == 1 else [BIN / "torchrun", "--nproc-per-node", ranks, "--master-addr",
                                                   "127.0.0.1", "--master-port", free_port(), BIN / "sdt"]
        return subprocess.Popen([str(a) for a in launch + args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    one, ddp = run(tmp_path / "one", 1), run(tmp_path / "ddp", 2)
    for p in (one, ddp):
        assert p.wait() == 0, p.stderr.read().decode()[-3000:]
    a, b = load_file(tmp_path / "one" / "weights.safetensors"), load_file(tmp_path / "ddp" / "weights.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)
    assert (tmp_path / "ddp" / "tracking.jsonl").read_text().count('"event": "start"') == 1  # rank 0 alone

    killed = tmp_path / "killed"
    q = run(killed, 2)
    while _committed_step(killed) < 30:
        assert q.poll() is None, q.stderr.read().decode()[-3000:]
        time.sleep(0.01)
    os.kill(children(q.pid)[0], signal.SIGKILL)
    assert q.wait(timeout=120) != 0 and _committed_step(killed) < 90
    r = run(killed, 2, resume=True)
    assert r.wait() == 0, r.stderr.read().decode()[-3000:]
    for name in ("weights.safetensors", "config.json"):
        assert (killed / name).read_bytes() == (tmp_path / "ddp" / name).read_bytes(), name
