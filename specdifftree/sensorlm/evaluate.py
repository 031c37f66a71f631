"""Using trained towers: embeddings, zero-shot classification, retrieval, a linear probe.

    zs = embed_series(m, windows)                       # [N, E]
    zt = embed_texts(m, ["The person is walking."])    # [K, E]
    probs = zero_shot(m, windows, ["walking", "standing"], "The person is {label}.")   # [N, K]
    recall_at_k(zs @ zt.T, k=5)                         # pair i is (window i, text i)
    w = fit_probe(z_train, y_train, n_classes); predict_probe(w, z_test)
    macro_f1(y_true, y_pred, n_classes)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.sensorlm.inputs import series_batch, text_batch

BATCH = 256
DEFAULT_TEMPLATE = "The recording shows {label}."


def embed_series(m, windows: Sequence[np.ndarray]) -> np.ndarray:
    """Windows [C_i, n_i] -> unit embeddings [N, E] (float32), in batches."""
    import torch

    out = []
    with torch.no_grad():
        for a in range(0, len(windows), BATCH):
            out.append(m.model.encode_series(*series_batch(windows[a:a + BATCH], m.config).tensors()).numpy())
    return np.concatenate(out) if out else np.zeros((0, m.config.embed), np.float32)


def embed_texts(m, texts: Sequence[str]) -> np.ndarray:
    """Texts -> unit embeddings [K, E] (float32), in batches."""
    import torch

    out = []
    with torch.no_grad():
        for a in range(0, len(texts), BATCH):
            ids, mask = text_batch(m.tokenizer, texts[a:a + BATCH], m.config.text_len)
            out.append(m.model.encode_text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())
    return np.concatenate(out) if out else np.zeros((0, m.config.embed), np.float32)


def scale_bias(m) -> tuple[float, float]:
    """The learned SigLIP temperature t and bias b."""
    return float(m.model.log_scale.detach().exp()), float(m.model.bias.detach())


def prompts(labels: Sequence[str], template: str) -> list[str]:
    if "{label}" not in template:
        raise SDTError(f"--template must contain {{label}}, got {template!r}")
    return [template.replace("{label}", label) for label in labels]


def zero_shot(m, windows: Sequence[np.ndarray], labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    """[N, K] class probabilities: a softmax over the SigLIP logits t * cos(window, prompt_k)."""
    zs, zt = embed_series(m, windows), embed_texts(m, prompts(labels, template))
    t, _ = scale_bias(m)
    return softmax(t * zs @ zt.T)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def recall_at_k(sim: np.ndarray, k: int) -> float:
    """Share of rows i whose own column i is among their k highest similarities ([N, N] sim)."""
    if not len(sim):
        return float("nan")
    own = np.diag(sim)[:, None]
    rank = (sim > own).sum(axis=1)
    return float((rank < k).mean())


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in y or pred."""
    scores = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (y == c))
        fp, fn = np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def fit_probe(z: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-3, steps: int = 500,
              seed: int = 0) -> np.ndarray:
    """A multinomial logistic regression on embeddings z [N, E] (labels y [N] in 0..K-1), full-batch
    L-BFGS in torch with an L2 penalty; -> weights [E + 1, K] (the last row is the bias)."""
    import torch

    from specdifftree.machine import seeded

    x = torch.from_numpy(np.c_[z, np.ones(len(z))]).double()
    t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    with seeded(seed):
        w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ w, t) + l2 * (w[:-1] ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    return w.detach().numpy()


def predict_probe(w: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.argmax(np.c_[z, np.ones(len(z))] @ w, axis=1)
