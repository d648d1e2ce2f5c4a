#!/usr/bin/env python3
"""Per-kernel GPU time from Nsight Compute's CSV (ncu --csv --metrics gpu__time_duration.sum),
summed over the profiled range and divided by the number of iterations in it: a table of the
kernels by time, and the time per category (GEMM, attention, NCCL, the rest: memory-bound
elementwise, normalisation, softmax/cross-entropy, optimizer, copies). ncu runs kernels one at a
time, so the sum is the GPU's busy time without overlap, not the iteration's wall time.

  python3 scripts/ncu_breakdown.py ncu.csv [--iters 1] [--top 25] [--step-ms 33.0]
"""
import argparse
import csv
import re
import sys
from collections import defaultdict

UNIT_NS = {"ns": 1.0, "nsecond": 1.0, "us": 1e3, "usecond": 1e3, "ms": 1e6, "msecond": 1e6, "s": 1e9,
           "second": 1e9}
CATEGORIES = (  # first match wins
    ("nccl", re.compile(r"nccl", re.I)),
    ("attention", re.compile(r"sdpa|fmha|flash|attention|cudnn", re.I)),
    ("gemm", re.compile(r"gemm|nvjet|xmma|cutlass|sm90_|sm80_|cublas", re.I)),
)


def category(name):
    for cat, pattern in CATEGORIES:
        if pattern.search(name):
            return cat
    return "other"


def kernel_times(lines):
    """(kernel name, nanoseconds) per profiled kernel launch, from either of ncu's CSV pages:
    'details' (one row per metric: Metric Name / Metric Unit / Metric Value) or 'raw' (one
    column per metric, units in the row after the header)."""
    lines = list(lines)
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        raise ValueError("no ncu CSV header (a line starting with \"ID\") found")
    rows = list(csv.reader(lines[start:]))
    header = rows[0]
    name_col = header.index("Kernel Name")
    if "Metric Name" in header:
        mname, munit, mval = (header.index(c) for c in ("Metric Name", "Metric Unit", "Metric Value"))
        for r in rows[1:]:
            if len(r) == len(header) and r[mname] == "gpu__time_duration.sum":
                yield r[name_col], float(r[mval].replace(",", "")) * UNIT_NS[r[munit]]
    else:
        col = header.index("gpu__time_duration.sum")
        unit = UNIT_NS[rows[1][col]]
        for r in rows[2:]:
            if len(r) == len(header):
                yield r[name_col], float(r[col].replace(",", "")) * unit


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--iters", type=int, default=1, help="iterations in the profiled range")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--step-ms", type=float, default=None, help="the iteration's wall time, unprofiled")
    ap.add_argument("--title", default=None)
    a = ap.parse_args(argv)
    with open(a.csv, errors="replace") as f:
        times = list(kernel_times(f))
    if not times:
        sys.exit(f"{a.csv}: no gpu__time_duration.sum rows")
    per_kernel = defaultdict(lambda: [0, 0.0])
    per_cat = defaultdict(float)
    for name, ns in times:
        per_kernel[name][0] += 1
        per_kernel[name][1] += ns
        per_cat[category(name)] += ns
    total = sum(per_cat.values())
    ms = lambda ns: ns / 1e6 / a.iters  # noqa: E731
    if a.title:
        print(f"### {a.title}")
    print(f"{len(times) / a.iters:g} kernel launches per iteration, {ms(total):.2f} ms of GPU time per iteration"
          + (f" (iteration wall time {a.step_ms:.2f} ms)" if a.step_ms else ""))
    print("\n| category | ms/iter | share |\n|---|---|---|")
    for cat in ("gemm", "attention", "nccl", "other"):
        if per_cat.get(cat):
            print(f"| {cat} | {ms(per_cat[cat]):.2f} | {100 * per_cat[cat] / total:.1f}% |")
    print("\n| kernel | category | launches/iter | ms/iter | share | µs/launch |\n|---|---|---|---|---|---|")
    for name, (n, ns) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1])[:a.top]:
        short = name if len(name) <= 70 else name[:67] + "..."
        print(f"| `{short}` | {category(name)} | {n / a.iters:g} | {ms(ns):.3f} | {100 * ns / total:.1f}% | "
              f"{ns / n / 1e3:.1f} |")


if __name__ == "__main__":
    main()
