"""Compare the samples of `sdt search --out` runs by the caption-consistency penalties.

    sdt search ... --reward spectral --out a.json
    sdt search ... --reward "spectral + caption-consistency" --out b.json
    python examples/caption_consistency.py a.json b.json --series ETTh1.csv --column OT --end 15000 --context-length 96

Prints, per run, the mean trend / period / spike penalty (rewards/structure.py) of its samples,
the share of samples with an unexplained spike, and the mean spectral reward.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from specdifftree.data.series import read_csv_column
from specdifftree.rewards.spectral import log_psd_l1
from specdifftree.rewards.structure import penalties


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--series", required=True)
    ap.add_argument("--column", default=None)
    ap.add_argument("--end", type=int, required=True)
    ap.add_argument("--context-length", type=int, required=True)
    a = ap.parse_args()
    history = read_csv_column(a.series, a.column)[a.end - a.context_length:a.end]
    print("run | samples | trend | period | spike | share with a spike | spectral reward")
    for path in a.runs:
        samples = [s["values"] for s in json.load(open(path))["samples"] if len(s.get("values", [])) >= 4]
        p = [penalties(history, np.asarray(v)) for v in samples]
        spec = [-log_psd_l1(np.asarray(v), history) for v in samples]
        cols = [np.mean([q[k] for q in p]) for k in ("trend", "period", "spike")]
        print(f"{path} | {len(samples)} | {cols[0]:.3f} | {cols[1]:.3f} | {cols[2]:.3f} | "
              f"{np.mean([q['spike'] > 0 for q in p]):.3f} | {np.mean(spec):.3f}")


if __name__ == "__main__":
    main()
