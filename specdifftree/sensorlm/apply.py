"""What `sdt sensorlm classify` and `retrieve` do, checks first, the model last.

    s = read_windows("har_chest_acc/6.csv", (), window=512)         # Windowed: windows, truths
    out = classify("runs/slm", "har_chest_acc/6.csv", ["walking", "standing"])     # dict (the --json)
    out = retrieve("runs/slm", "ETTh1.csv", ["A rising trend.", ...], columns=["OT"], k=3)

A file is read as `sdt caption` reads it (data/captions load_captioned): a chest-accelerometer file
as its three axes and per-sample activity labels, any other CSV as its numeric columns (or
--column). It is cut into consecutive windows of the model's window length (a shorter file is one
window). A window's truth is its activity when one documented activity covers it throughout; it
matches a class label that is the activity's name or its one word (pairs.HAR_WORDS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.sensorlm.pairs import AXES, HAR_ACTIVITIES, HAR_WORDS


@dataclass
class Windowed:
    windows: list  # [C, n] each
    starts: list
    truths: list = field(default_factory=list)  # label code (HAR) or None per window
    channels: tuple = ()


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    items = [s.strip() for s in items]
    if not items or any(not s for s in items):
        raise SDTError("--labels needs comma-separated class names, e.g. --labels walking,standing,sitting")
    if len(set(items)) != len(items):
        raise SDTError(f"--labels names a class twice: {','.join(items)}")
    return items


def read_windows(path, columns: Sequence[str], window: int, max_channels: Optional[int] = None) -> Windowed:
    """The file's channels cut into windows of `window` points (and their HAR truths)."""
    from pathlib import Path

    from specdifftree.data.captions import load_captioned

    if not Path(path).is_file():
        raise SDTError(f"series file not found: {path}")
    s = load_captioned(path, columns)
    names = tuple(s.channels)
    if max_channels is not None and len(names) > max_channels:
        raise SDTError(f"{path} has {len(names)} channels ({', '.join(names)}); the model reads at most "
                       f"{max_channels}: choose with --column")
    x = np.stack([s.channels[n] for n in names])
    labels = None
    if set(names) <= set(AXES):
        from specdifftree.data.sources import read_accelerometer

        labels = read_accelerometer(path).labels
    n = x.shape[1]
    starts = list(range(0, n - window + 1, window)) or [0]
    out = Windowed([x[:, a:a + window] for a in starts], starts, channels=names)
    for a in starts:
        lab = None if labels is None else labels[a:a + window]
        pure = lab is not None and lab[0] in HAR_ACTIVITIES and (lab == lab[0]).all()
        out.truths.append(int(lab[0]) if pure else None)
    return out


def truth_name(code: Optional[int], labels: Sequence[str]) -> Optional[str]:
    """The class label of `labels` that a HAR label code stands for (its name or its word), or None."""
    if code is None:
        return None
    for name in (HAR_ACTIVITIES[code], HAR_WORDS[code]):
        if name in labels:
            return name
    return None


def classify(model_dir, path, labels: Sequence[str], template: Optional[str] = None,
             columns: Sequence[str] = ()) -> dict:
    """Zero-shot classes of every window: {"windows": [...], "labels", "template", "accuracy", "n_scored"}."""
    from specdifftree.sensorlm.checkpoint import check_model_dir, model_config
    from specdifftree.sensorlm.evaluate import DEFAULT_TEMPLATE, prompts

    cfg = model_config(check_model_dir(model_dir))
    labels = parse_labels(labels)
    template = template or DEFAULT_TEMPLATE
    prompts(labels, template)
    data = read_windows(path, columns, cfg.window, cfg.channels)

    from specdifftree.sensorlm.checkpoint import load_sensorlm
    from specdifftree.sensorlm.evaluate import zero_shot

    probs = zero_shot(load_sensorlm(model_dir), data.windows, labels, template)
    rows, hits = [], []
    for a, w, p, code in zip(data.starts, data.windows, probs, data.truths):
        k = int(np.argmax(p))
        truth = truth_name(code, labels)
        rows.append({"start": a, "end": a + w.shape[1], "predicted": labels[k], "p": float(p[k]),
                     "probs": {lab: float(q) for lab, q in zip(labels, p)}, "truth": truth})
        if truth is not None:
            hits.append(labels[k] == truth)
    return {"file": str(path), "channels": list(data.channels), "labels": labels, "template": template,
            "windows": rows, "n_scored": len(hits), "accuracy": float(np.mean(hits)) if hits else None}


def read_texts(path) -> list[str]:
    from pathlib import Path

    if not Path(path).is_file():
        raise SDTError(f"texts file not found: {path}")
    texts = [t.strip() for t in Path(path).read_text().splitlines() if t.strip()]
    if not texts:
        raise SDTError(f"{path} holds no text: write one text a line")
    return texts


def retrieve(model_dir, path, texts: Sequence[str], columns: Sequence[str] = (), k: int = 3) -> dict:
    """Top-k texts per window and top-k windows per text by the SigLIP logit."""
    from specdifftree.sensorlm.checkpoint import check_model_dir, model_config

    if k < 1:
        raise SDTError("--top must be >= 1")
    cfg = model_config(check_model_dir(model_dir))
    data = read_windows(path, columns, cfg.window, cfg.channels)

    from specdifftree.sensorlm.checkpoint import load_sensorlm
    from specdifftree.sensorlm.evaluate import embed_series, embed_texts, scale_bias

    m = load_sensorlm(model_dir)
    t, b = scale_bias(m)
    logits = t * embed_series(m, data.windows) @ embed_texts(m, texts).T + b  # [N, K]
    per_window = [{"start": a, "texts": [{"text": int(j), "logit": float(logits[i, j])}
                                         for j in np.argsort(-logits[i])[:k]]} for i, a in enumerate(data.starts)]
    per_text = [{"text": j, "windows": [{"start": int(data.starts[i]), "logit": float(logits[i, j])}
                                        for i in np.argsort(-logits[:, j])[:k]]} for j in range(len(texts))]
    return {"file": str(path), "texts": list(texts), "per_window": per_window, "per_text": per_text}
