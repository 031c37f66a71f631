"""Run tracking: a local record always, Weights & Biases when enabled.

Every run writes what it logs to `DIR/tracking.jsonl` (one JSON object a line), so nothing
depends on W&B. W&B mirrors it: offline by default (runs land in `DIR/wandb/` and can be
uploaded later with `wandb sync DIR/wandb/offline-run-*`), online when the user is logged in
(`WANDB_API_KEY` or a `wandb login` entry in ~/.netrc), and off with `enabled=False`
(`--no-wandb`). `WANDB_MODE` set by the user wins. Tracking never breaks a run: the first
W&B error prints one warning and turns W&B off for the rest of that run.

    with Tracker(out_dir, project="specdifftree", name="stage1", config=asdict(cfg)) as run:
        run.log({"train_loss": 0.7}, step=1)
        run.image("loss", out_dir / "loss.png")
"""

from __future__ import annotations

import json
import netrc
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from specdifftree.files import jsonable
from specdifftree.paths import wandb_env

WANDB_HOST = "api.wandb.ai"


def wandb_mode() -> str:
    """'online' when the user is logged in, else 'offline'; an explicit WANDB_MODE wins."""
    env = wandb_env()
    if env.get("WANDB_MODE"):
        return env["WANDB_MODE"]
    if env.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators(WANDB_HOST):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class Tracker:
    """One tracked run. Local record in `out_dir/tracking.jsonl`; W&B mirror when enabled."""

    def __init__(self, out_dir: os.PathLike | str, *, project: str = "specdifftree", name: Optional[str] = None,
                 group: Optional[str] = None, tags: Sequence[str] = (), config: Optional[dict] = None,
                 job_type: Optional[str] = None, enabled: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._record = open(self.out_dir / "tracking.jsonl", "a", encoding="utf-8")
        self._wandb = None
        self._write({"event": "start", "time": time.time(), "project": project, "name": name, "group": group,
                     "tags": list(tags), "job_type": job_type, "config": config or {}})
        if enabled:
            self._guard(self._init_wandb, project=project, name=name, group=group, tags=list(tags),
                        config=jsonable(config or {}), job_type=job_type)

    # -- W&B plumbing ------------------------------------------------------------------------
    def _init_wandb(self, **kw) -> None:
        import wandb

        mode = wandb_mode()
        self._wandb = wandb.init(dir=str(self.out_dir), mode=mode, reinit="finish_previous",
                                 settings=wandb.Settings(silent=True, console="off"), **kw)

    def _guard(self, fn, *args, **kw) -> None:
        """Call a W&B function; on any failure warn once and stop using W&B for this run."""
        try:
            fn(*args, **kw)
        except Exception as exc:  # noqa: BLE001 - tracking must never break a run
            print(f"warning: W&B tracking turned off for this run ({type(exc).__name__}: {exc}); "
                  f"the local record in {self.out_dir} is complete", file=sys.stderr)
            self._wandb = None

    def _write(self, obj: dict) -> None:
        self._record.write(json.dumps(jsonable(obj)) + "\n")
        self._record.flush()

    @property
    def wandb_run(self):
        """The live `wandb.Run`, or None when W&B is off."""
        return self._wandb

    @property
    def wandb_dir(self) -> Optional[str]:
        return getattr(self._wandb, "dir", None)

    # -- what runs log -----------------------------------------------------------------------
    def log(self, metrics: dict, step: Optional[int] = None) -> None:
        """Scalars (or anything JSON-able) at an optional step."""
        self._write({"event": "log", "step": step, "metrics": metrics})
        if self._wandb is not None:
            self._guard(self._wandb.log, jsonable(metrics), step=step)

    def summary(self, values: dict) -> None:
        """Final numbers of the run (W&B run summary)."""
        self._write({"event": "summary", "values": values})
        if self._wandb is not None:
            self._guard(self._wandb.summary.update, jsonable(values))

    def table(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        rows = [list(r) for r in rows]
        self._write({"event": "table", "name": name, "columns": list(columns), "rows": rows})
        if self._wandb is not None:
            import wandb

            self._guard(lambda: self._wandb.log({name: wandb.Table(columns=list(columns), data=jsonable(rows))}))

    def image(self, name: str, path: os.PathLike | str) -> None:
        """A plot already saved as PNG (the local copy is the file itself)."""
        self._write({"event": "image", "name": name, "path": str(path)})
        if self._wandb is not None:
            import wandb

            self._guard(lambda: self._wandb.log({name: wandb.Image(str(path))}))

    def artifact(self, name: str, path: os.PathLike | str, kind: str = "result") -> None:
        """A file or directory attached as a W&B artifact."""
        self._write({"event": "artifact", "name": name, "path": str(path), "type": kind})
        if self._wandb is not None:
            import wandb

            def _log():
                art = wandb.Artifact(name, type=kind)
                (art.add_dir if Path(path).is_dir() else art.add_file)(str(path))
                self._wandb.log_artifact(art)

            self._guard(_log)

    def finish(self, status: str = "finished") -> None:
        if self._record.closed:
            return
        self._write({"event": "finish", "time": time.time(), "status": status})
        self._record.close()
        if self._wandb is not None:
            self._guard(self._wandb.finish, exit_code=0 if status == "finished" else 1)
            self._wandb = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish("finished" if exc_type is None else "failed")


class NoTracker:
    """Tracker's methods, recording nothing: the ranks other than 0 under torchrun."""

    wandb_run = None

    def log(self, *args, **kwargs) -> None:
        """Nothing."""

    summary = table = image = artifact = finish = log

    def __enter__(self) -> "NoTracker":
        return self

    def __exit__(self, *exc) -> None:
        """Nothing."""
