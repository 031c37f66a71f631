"""QA accuracy on the test participant's windows (docs/sensorlm.md): sampling vs DTS under sensorlm / answer-consistency / both,
at one forward-token budget per query (sampling draws answers until the budget is spent; DTS grows its tree
until then and returns 8 samples). A query's accuracy is the share of its samples that answer the window's
label. Usage: python sensorlm_qa.py PRIOR MODEL_DIR N_PER_CLASS BUDGET LAMBDA OUT.json [SEED]"""
import json
import sys
import time
from pathlib import Path

import numpy as np

import specdifftree as sdt
from specdifftree.paths import default_data_dir
from specdifftree.sensorlm.measure import WORDS, har_split
from specdifftree.sensorlm.pairs import AXES, HAR_WORDS

prior_spec, model, per_class, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lam, out = float(sys.argv[5]), sys.argv[6]
seed = int(sys.argv[7]) if len(sys.argv) > 7 else 0
CONFIGS = {  # name -> (method, reward spec)
    "sample": ("sample", "answer-consistency"),
    "dts sensorlm": ("dts", f"sensorlm:{model}"),
    "dts answer-consistency": ("dts", "answer-consistency"),
    "dts both": ("dts", f"sensorlm:{model} + answer-consistency"),
}
wins, codes = har_split(default_data_dir(), "test", 512)
chosen = []
for word in WORDS:
    idx = [i for i, c in enumerate(codes) if HAR_WORDS[c] == word]
    chosen += [idx[k] for k in np.linspace(0, len(idx) - 1, per_class).astype(int)]
prior = sdt.open_prior(prior_spec)
rows = []
for i in chosen:
    x = wins[i]
    ctx = sdt.context_from_array(x[0], covariates=[x[1], x[2]], task="qa", fs=52.0, names=list(AXES),
                                 question="What is the person doing?", choices=",".join(WORDS),
                                 label=HAR_WORDS[codes[i]], max_chars=24)
    for name, (method, reward) in CONFIGS.items():
        t0 = time.time()
        rec = sdt.search_run(prior, ctx, reward=reward, method=method, lam=lam, budget=budget,
                             samples=8 if method == "dts" else 10_000, iterations=10_000, seed=seed).record()
        rows.append({"seed": seed, "window": i, "label": HAR_WORDS[codes[i]], "config": name,
                     "accuracy": rec["task_metrics"]["accuracy"], "shares": rec["task_metrics"]["shares"],
                     "forward_tokens": rec["stats"]["forward_tokens"], "reward_cost": rec.get("reward_cost"),
                     "wall_s": time.time() - t0})
        print(json.dumps(rows[-1]), flush=True)
        Path(out).write_text(json.dumps(rows, indent=1))
for name in CONFIGS:
    r = [x for x in rows if x["config"] == name]
    acc = np.array([x["accuracy"] for x in r], dtype=float)
    print(f"{name:24s} accuracy {acc.mean():.3f} +- {acc.std(ddof=1) / np.sqrt(len(acc)) if len(acc) > 1 else 0:.3f}"
          f"  tokens/query {np.mean([x['forward_tokens'] for x in r]):.0f}  n={len(r)}")
