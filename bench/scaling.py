"""Scaling: compress time and peak memory vs n_samples and seq_len on the embedded model.

Each point runs in a fresh subprocess (so peak memory is per point) and is written to a CSV and a
plot. Expect time roughly linear in calibration tokens (n_samples x seq_len) plus a fixed per-layer cost.

    python bench/scaling.py [--method wanda] [--n-samples 16,32,64,128] [--seq-len 128,256] [--out bench/out]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

POINT = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
from common import calibration, peak_rss_bytes, setup
from calib_sweep import methods, models
cfg, tok, device, dtype = setup([{method!r}])
ids = calibration(cfg, tok, {n}, {L}).input_ids
model = models.load_model(cfg.model, device, dtype)
start = time.perf_counter()
methods.compress(model, ids.to(device), cfg.method)
print("RESULT", json.dumps({{"seconds": time.perf_counter() - start, "peak_rss_bytes": peak_rss_bytes()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="wanda")
    parser.add_argument("--n-samples", default="16,32,64,128")
    parser.add_argument("--seq-len", default="128,256")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    bench = str(Path(__file__).resolve().parent)
    for L in map(int, args.seq_len.split(",")):
        for n in map(int, args.n_samples.split(",")):
            code = POINT.format(bench=bench, method=f"method={args.method}", n=n, L=L)
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                print(f"n_samples={n} seq_len={L}: failed\n{proc.stderr[-1500:]}")
                continue
            result = json.loads(line[0][7:])
            rows.append({"method": args.method, "n_samples": n, "seq_len": L, "tokens": n * L, **result})
            print(f"n_samples={n:4d} seq_len={L:5d} tokens={n * L:7d}  {result['seconds']:8.2f} s  "
                  f"peak RSS {result['peak_rss_bytes'] / 2**30:6.2f} GiB", flush=True)
    if len(rows) >= 3:  # least-squares fit: seconds = fixed + per_token * tokens (and the same for memory)
        import numpy as np

        tokens = np.array([r["tokens"] for r in rows], dtype=float)
        for key, unit, scale in (("seconds", "s", 1.0), ("peak_rss_bytes", "GiB", 2**30)):
            y = np.array([r[key] for r in rows], dtype=float) / scale
            slope, fixed = np.polyfit(tokens, y, 1)
            r2 = 1 - ((y - (fixed + slope * tokens)) ** 2).sum() / ((y - y.mean()) ** 2).sum()
            print(f"linear fit {key}: {fixed:.2f} {unit} + {slope * 1000:.4f} {unit} per 1k calibration tokens, R^2 {r2:.3f}")
    with open(out / f"scaling_{args.method}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for L in sorted({r["seq_len"] for r in rows}):
        pts = [r for r in rows if r["seq_len"] == L]
        a.plot([r["n_samples"] for r in pts], [r["seconds"] for r in pts], "o-", label=f"seq_len {L}")
        b.plot([r["n_samples"] for r in pts], [r["peak_rss_bytes"] / 2**30 for r in pts], "o-", label=f"seq_len {L}")
    a.set(xlabel="n_samples", ylabel="compress time (s)", title=f"{args.method}: time")
    b.set(xlabel="n_samples", ylabel="peak RSS (GiB)", title=f"{args.method}: memory")
    a.legend(), b.legend()
    fig.tight_layout()
    fig.savefig(out / f"scaling_{args.method}.png", dpi=100)
    print(f"wrote {out / f'scaling_{args.method}.csv'} and .png")


if __name__ == "__main__":
    main()
