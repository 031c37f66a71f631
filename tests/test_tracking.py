"""Tracking: local record always, W&B offline runs on disk, and W&B failures never break a run."""

import json

import pytest

from specdifftree.tracking import Tracker, wandb_mode


def _events(path):
    return [json.loads(line) for line in (path / "tracking.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_local_record_and_offline_wandb(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    assert wandb_mode() == "offline"
    with Tracker(tmp_path / "run", name="t", group="g", tags=["dts"], config={"lam": 2.0}) as run:
        run.log({"loss": 1.0}, step=0)
        run.summary({"best": float("nan")})
        run.table("results", ["a", "b"], [[1, 2.5]])
        assert run.wandb_run is not None
    events = _events(tmp_path / "run")
    assert [e["event"] for e in events] == ["start", "log", "summary", "table", "finish"]
    assert events[0]["config"] == {"lam": 2.0} and events[2]["values"] == {"best": None}
    assert events[-1]["status"] == "finished"
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_disabled_writes_only_the_local_record(tmp_path):
    with Tracker(tmp_path, enabled=False) as run:
        run.log({"x": 1})
    assert run.wandb_run is None and not (tmp_path / "wandb").exists()
    assert _events(tmp_path)[1]["metrics"] == {"x": 1}


def test_wandb_failure_never_breaks_a_run(tmp_path, monkeypatch, capsys):
    import wandb

    def boom(*a, **k):
        raise RuntimeError("no service")

    monkeypatch.setattr(wandb, "init", boom)
    with Tracker(tmp_path, name="t") as run:
        run.log({"x": 1}, step=3)
    assert run.wandb_run is None
    assert "W&B tracking turned off" in capsys.readouterr().err
    assert _events(tmp_path)[-1]["status"] == "finished"


def test_failed_run_is_marked(tmp_path):
    try:
        with Tracker(tmp_path, enabled=False):
            raise ValueError("crash")
    except ValueError:
        pass
    assert _events(tmp_path)[-1]["status"] == "failed"
