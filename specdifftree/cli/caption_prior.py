"""`sdt caption --prior SPEC`: a caption written by a model under the caption grammar (`sdt search
--task caption` on one window), printed beside the window's reference caption with its fact accuracy."""

from __future__ import annotations

import json
from typing import Optional

import click

DEFAULT_WINDOW = 512  # points captioned when --context-length is not given


def write_caption(file, columns, variant: Optional[str], fs, label_column, seed: int, as_json: bool, prior: str,
                  method: str, rewards, options: dict, end: Optional[int], context_length: Optional[int],
                  max_chars: Optional[int]) -> None:
    """Search captions of the window [end - context_length, end) of `file` and print them (or JSON)."""
    from specdifftree import validate
    from specdifftree.api import make_task, search_run, task_context
    from specdifftree.data.captions import caption_series
    from specdifftree.data.tasks import captioned
    from specdifftree.search.registry import get_method

    get_method(method)
    validate.task_options("caption", None, None, None, max_chars)
    fields = {"variant": variant} if variant else {}
    task = make_task("caption", max_chars=max_chars, **fields)
    context = task_context(task, file, list(columns) or None, context_length or DEFAULT_WINDOW, end, fs, label_column)
    opts = {k: v for k, v in options.items() if v is not None}
    run = search_run(prior, context, reward=list(rewards) or ["caption-consistency"], method=method, seed=seed, **opts)
    samples, metrics = run.text
    reference = caption_series(captioned(context, with_truth=True), seed=seed).text(context.task.variant, context.task.cap)
    if as_json:
        click.echo(json.dumps({"file": str(file), "window": [context.meta["end"] - len(context.series),
                                                             context.meta["end"]],
                               "task": context.task.describe(), "reference": reference, "captions": samples,
                               "task_metrics": metrics}, indent=2))
        return
    click.echo(f"reference: {reference}")
    for i, s in enumerate(samples):
        acc = ", ".join(f"{k} {v:.2f}" for k, v in s["fact_accuracy"].items() if v is not None)
        click.echo(f"caption {i + 1} (reward {s['reward']:.3f}; fact accuracy {acc}): {s['text']}")
