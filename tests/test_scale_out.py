"""The multi-node dry run on one machine: a Ray cluster of a head and a worker started as two
processes (`ray start --head`, `ray start --address`), and two torchrun nodes on localhost
(`--nnodes 2 --node-rank 0|1`), each running the smallest configuration of the tests."""

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from processes import BIN, free_port
from test_experiments import DATA, _rows_without_wall_times, _run_grid, needs_data, tiny_prior  # noqa: F401
from test_train_prior import DDP_RTOL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def tiny(tiny_hf, tiny_prior) -> tuple[Path, Path]:
    """(transformers dir, prior checkpoint DIR) of the tiny random Llama (test_experiments' prior)."""
    return tiny_hf, tiny_prior


def _node_ip() -> str:
    """The address Ray gives this machine. Ray rewrites a 127.0.0.1 bootstrap address to it
    (`resolve_ip_for_localhost`), so nodes bound to 127.0.0.1 alone are unreachable for the driver
    on a machine with a routable address."""
    import ray.util

    return ray.util.get_node_ip_address()


def _node(ip: str, *args: str) -> subprocess.Popen:
    """`ray start ... --block` in its own process group (stopped with it, not with `ray stop`,
    which would stop every Ray on the machine)."""
    return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--num-cpus", "1", "--node-ip-address", ip,
                             "--object-store-memory", str(80 * 2**20), *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(node: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        try:
            node.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for_nodes(address: str, n: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while True:
        status = subprocess.run([str(BIN / "ray"), "status", "--address", address], capture_output=True, text=True)
        if status.returncode == 0 and status.stdout.count("node_") >= n:
            return
        assert time.time() < deadline, status.stdout + status.stderr
        time.sleep(1)


@needs_data
def test_a_two_process_ray_cluster_writes_the_serial_results(tiny, tmp_path, monkeypatch, run_cli):
    import secrets

    monkeypatch.setenv("SDT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # Ray 2.60's token authentication, with a token of this
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))  # test's own for nodes, `ray status`, driver
    serial = _run_grid(run_cli, tmp_path, tiny[1], "serial")
    port = free_port()
    ip = _node_ip()
    address = f"{ip}:{port}"
    temp = tempfile.mkdtemp(prefix="sdtray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head = _node(ip, "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp)
    worker = None
    try:
        _wait_for_nodes(address, 1)
        worker = _node(ip, "--address", address)
        _wait_for_nodes(address, 2)
        # the driver in a process of its own: an earlier in-process `ray.init` of the suite (the
        # local --ray test) leaves auth state behind that this cluster's token does not match
        on_ray = tmp_path / "cluster"
        run = subprocess.run([str(a) for a in (BIN / "sdt", "experiment", "run", tmp_path / "grid.yaml", "--out", on_ray,
                                               "--no-wandb", "--ray", address)], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        for node in (worker, head):
            if node is not None:
                _stop(node)
    assert _rows_without_wall_times(on_ray / "results.csv") == _rows_without_wall_times(serial / "results.csv")


def test_two_torchrun_nodes_on_localhost_match_one_process(tiny, tmp_path):
    """`torchrun --nnodes 2 --node-rank 0|1` (one rank each) of `sdt train-prior --preset test`: the
    test NLLs of one process within DDP_RTOL."""
    data = DATA if (DATA / "ett").is_dir() else tmp_path

    def train(out: Path, launch: list) -> subprocess.Popen:
        args = ["train-prior", "--stage", "stage6_forecast", "--preset", "test", "--backbone", f"hf:{tiny[0]}",
                "--out", out, "--no-wandb", "--data-dir", data]
        return subprocess.Popen([str(a) for a in launch + [BIN / "sdt"] + args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    port = free_port()
    nodes = [train(tmp_path / "two", [BIN / "torchrun", "--nnodes", 2, "--node-rank", rank, "--nproc-per-node", 1,
                                      "--master-addr", "127.0.0.1", "--master-port", port]) for rank in (0, 1)]
    one = train(tmp_path / "one", [])
    for p in [one, *nodes]:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-3000:]
    got = json.loads((tmp_path / "two" / "summary.json").read_text())["stage6_forecast"]
    want = json.loads((tmp_path / "one" / "summary.json").read_text())["stage6_forecast"]
    for key in ("test_nll_prior", "test_nll_backbone", "best_val_loss"):
        assert got[key] == pytest.approx(want[key], rel=DDP_RTOL), key
