"""Ray for `sdt experiment run --ray [ADDRESS]`: calls of the runner's functions as Ray tasks.

    --ray                    a Ray instance started by this process (ray.init()), on this machine
    --ray auto               the running cluster that `ray start --head` began (workers joined it
                             with `ray start --address HEAD:6379`)
    --ray ray://HOST:10001   a cluster reached through Ray Client

    with RaySession("local", {"num_cpus": 1, "num_gpus": 0}, max_retries=2) as session:
        flow = session.call(fn, *args)                        # one task, its result
        failed = session.map(fn, [args, ...], on_done)        # tasks in parallel; on_done(i) as each ends

Every task reserves `resources` (the experiment file's), so GPU tasks are placed on GPU nodes;
a task that fails (an exception, or its worker lost) is retried up to `max_retries` times. Workers
get this process's SDT_* and WANDB_* variables (paths.forwarded_env), so they find the same
cache and tracking mode. Tasks read and write files themselves: every path they are given must
mean the same place on every node (one shared filesystem, mounted at the same path).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from specdifftree.errors import SDTError
from specdifftree.paths import forwarded_env


class RaySession:
    def __init__(self, address: str, resources: dict, max_retries: int):
        self.address, self.resources, self.max_retries = address, dict(resources), int(max_retries)
        self.cwd = str(Path.cwd())  # tasks run from here, so relative paths mean what they mean here

    def __enter__(self) -> "RaySession":
        ray = _ray()
        env = {"env_vars": forwarded_env()}
        try:
            if self.address == "local":
                ray.init(runtime_env=env, include_dashboard=False, log_to_driver=True)
            else:
                ray.init(address=self.address, runtime_env=env, log_to_driver=True)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise SDTError(f"--ray {self.address}: cannot start or reach Ray ({str(e).splitlines()[0][:200]})") from None
        return self

    def __exit__(self, *exc) -> None:
        _ray().shutdown()

    def _task(self):
        return _ray().remote(max_retries=self.max_retries, retry_exceptions=True, **self.resources)(_in_dir)

    def call(self, fn: Callable, *args):
        """fn(*args) as one task; its result (its error, re-raised here, after the retries)."""
        ray = _ray()
        try:
            return ray.get(self._task().remote(self.cwd, fn, args))
        except ray.exceptions.RayError as e:
            raise _cause(e) from None

    def map(self, fn: Callable, calls: list[tuple], on_done: Callable[[int], None]) -> list[tuple[int, Exception]]:
        """fn(*args) for every args of `calls`, as parallel tasks; on_done(i) as call i succeeds.
        Returns [(i, error)] of the calls that still failed after their retries."""
        ray = _ray()
        task = self._task()
        pending = {task.remote(self.cwd, fn, args): i for i, args in enumerate(calls)}
        failed = []
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as e:
                failed.append((i, _cause(e)))
                continue
            on_done(i)
        return failed


def _in_dir(cwd: str, fn: Callable, args: tuple):
    """fn(*args) run from the driver's working directory (where it exists on this node)."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return fn(*args)


def _cause(e: Exception) -> Exception:
    """The task's own exception when Ray carries one (RayTaskError.cause), else Ray's."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, Exception) else e


def _ray():
    try:
        import ray
    except ImportError:
        raise SDTError("--ray needs Ray: pip install -e '.[ray]'") from None
    return ray
