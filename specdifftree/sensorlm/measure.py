"""The held-out numbers of a trained model (`sdt sensorlm evaluate`).

    report = measure("runs/slm", Path("../shared/data"))

- zero-shot activity classification of the test participant's windows (pairs.HAR_SPLIT), every
  window of `window` points that one documented activity covers: with the six activity names and
  with the four one-word classes (sitting, standing, walking, stairs); accuracy and macro-F1 against
  chance (uniform: 1/K; majority: the largest class's share) and against a linear probe (a
  multinomial logistic regression on the same frozen sensor embeddings, fitted on the training
  participants' windows);
- retrieval on the test split's pairs (every source; each window with one caption, its variant
  drawn from a fixed seed): recall@1 and @5 window -> caption and caption -> window, overall and
  per caption variant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specdifftree.sensorlm.pairs import HAR_ACTIVITIES, HAR_SPLIT, HAR_WORDS, PairSpec, build_pairs, har_windows

WORDS = ("sitting", "standing", "walking", "stairs")


def har_split(root: Path, split: str, window: int) -> tuple[list, np.ndarray]:
    """Windows [3, window] and label codes of a split's participants (non-overlapping windows)."""
    wins, codes = [], []
    for p in HAR_SPLIT[split]:
        for _, xyz, code in har_windows(root / "har_chest_acc" / f"{p}.csv", window):
            wins.append(xyz)
            codes.append(code)
    return wins, np.array(codes)


def classification(m, z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray,
                   classes: list[str], template: str) -> dict:
    """Zero-shot (prompts from `template`) and linear-probe accuracy / macro-F1 on the test windows;
    y_*: class indices into `classes`."""
    from specdifftree.sensorlm.evaluate import embed_texts, fit_probe, macro_f1, predict_probe, prompts, scale_bias

    k = len(classes)
    t, _ = scale_bias(m)
    zero = np.argmax(t * z_test @ embed_texts(m, prompts(classes, template)).T, axis=1)
    probe = predict_probe(fit_probe(z_train, y_train, k), z_test)
    counts = np.bincount(y_test, minlength=k)
    return {"classes": classes, "template": template, "n_test": int(len(y_test)), "test_counts": counts.tolist(),
            "chance_uniform": 1.0 / k, "chance_majority": float(counts.max() / counts.sum()),
            "zero_shot_accuracy": float((zero == y_test).mean()), "zero_shot_macro_f1": macro_f1(y_test, zero, k),
            "probe_accuracy": float((probe == y_test).mean()), "probe_macro_f1": macro_f1(y_test, probe, k)}


def retrieval(m, pairs, seed: int = 0) -> dict:
    from specdifftree.sensorlm.evaluate import embed_series, embed_texts, recall_at_k

    rng = np.random.default_rng([seed, 11])
    variants = [list(d)[int(rng.integers(len(d)))] for d in pairs.texts]
    sim = embed_series(m, pairs.windows) @ embed_texts(m, [d[v] for d, v in zip(pairs.texts, variants)]).T
    out = {"n": len(pairs), "r1_s2t": recall_at_k(sim, 1), "r5_s2t": recall_at_k(sim, 5),
           "r1_t2s": recall_at_k(sim.T, 1), "r5_t2s": recall_at_k(sim.T, 5), "by_variant": {}}
    for v in sorted(set(variants)):  # each variant's captions against all windows
        rows = [i for i, x in enumerate(variants) if x == v]
        ranks = (sim[:, rows] > sim[rows, rows][None]).sum(axis=0)  # windows above the caption's own
        out["by_variant"][v] = {"n": len(rows), "r1_t2s": float((ranks < 1).mean()), "r5_t2s": float((ranks < 5).mean())}
    return out


def measure(model_dir, root: Path, templates=("The recording shows {label}.", "The person is {label}.")) -> dict:
    from specdifftree.sensorlm.checkpoint import load_sensorlm
    from specdifftree.sensorlm.evaluate import embed_series

    m = load_sensorlm(model_dir)
    window = m.config.window
    train_w, train_c = har_split(root, "train", window)
    test_w, test_c = har_split(root, "test", window)
    z_train, z_test = embed_series(m, train_w), embed_series(m, test_w)
    out: dict = {"model": str(model_dir), "window": window, "classification": []}
    fine = sorted(HAR_ACTIVITIES)
    for template in templates:
        out["classification"].append(classification(
            m, z_train, np.array([fine.index(c) for c in train_c]), z_test, np.array([fine.index(c) for c in test_c]),
            [HAR_ACTIVITIES[c] for c in fine], template))
        out["classification"].append(classification(
            m, z_train, np.array([WORDS.index(HAR_WORDS[c]) for c in train_c]), z_test,
            np.array([WORDS.index(HAR_WORDS[c]) for c in test_c]), list(WORDS), template))
    spec = PairSpec(**m.manifest["config"]["data"]) if "config" in m.manifest else PairSpec()
    spec.window = window
    seed = m.manifest.get("config", {}).get("seed", 0)
    out["retrieval"] = retrieval(m, build_pairs(root, "test", spec, seed), seed)
    return out


def plot_similarity(model_dir, root: Path, path: Path, per_class: int = 6,
                    template: str = "The recording shows {label}.") -> Path:
    """A PNG heatmap of the SigLIP logits between test-participant windows (`per_class` of each
    one-word activity, evenly spaced in the file) and the one-word class prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from specdifftree.sensorlm.checkpoint import load_sensorlm
    from specdifftree.sensorlm.evaluate import embed_series, embed_texts, prompts, scale_bias

    m = load_sensorlm(model_dir)
    wins, codes = har_split(root, "test", m.config.window)
    rows, names = [], []
    for word in WORDS:
        idx = [i for i, c in enumerate(codes) if HAR_WORDS[c] == word]
        for i in np.asarray(idx)[np.linspace(0, len(idx) - 1, min(per_class, len(idx))).astype(int)] if idx else []:
            rows.append(wins[i])
            names.append(HAR_ACTIVITIES[codes[i]])
    t, b = scale_bias(m)
    logits = t * embed_series(m, rows) @ embed_texts(m, prompts(WORDS, template)).T + b
    fig, ax = plt.subplots(figsize=(4.6, 0.22 * len(rows) + 1.2), dpi=80)
    im = ax.imshow(logits, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(WORDS)), [template.replace("{label}", w) for w in WORDS], rotation=30, ha="right",
                  fontsize=7)
    ax.set_yticks(range(len(rows)), names, fontsize=6)
    ax.set_title("SigLIP logit: held-out windows x class prompts", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
