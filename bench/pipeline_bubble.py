#!/usr/bin/env python3
"""Pipeline bubble on CPU ranks: each stage's measured idle fraction of the schedule against the
analytic value, for 1F1B, interleaved 1F1B (2 virtual stages) and ZB-H1, at P = 2 and 4 pipeline
ranks and m = 4, 8, 16 microbatches.

    python3 bench/pipeline_bubble.py [--build-dir build] [--cores N] [--iters 12] [--pipeline-sizes 2,4]

Each configuration trains a GPT whose layers are heavy enough that compute dominates (8 layers,
hidden 512, sequence 256, micro batch 2; a 1024-token vocabulary, so the first and last stages'
embedding and output layer add little to their layers' work) under `mpirun -np P megatron train --device cpu
--timing-log-level 1`, which prints every stage's idle fraction (host time outside the forward,
backward and weight-gradient passes, over the schedule's time) at each log interval; the first
interval (warm-up) is dropped and the last is reported. Each rank gets cores / P OpenMP threads.

Analytic values (equal per-microbatch work on every stage, transfers free):
  1F1B          (P - 1) / (m + P - 1)
  interleaved   (P - 1) / (V m + P - 1)                  (V = 2 virtual stages)
  ZB-H1         2 (P - 1) / (3 m + 2 (P - 1))            (ours, with equal F, B and W passes:
                                                          a bubble of (P - 1)(F + B) against
                                                          1F1B's (P - 1)(F + B + W))
"""
import argparse
import os
import re
import subprocess
import sys


def analytic(schedule, P, m, V=2):
    if schedule == "1f1b":
        return (P - 1) / (m + P - 1)
    if schedule == "interleaved":
        return (P - 1) / (V * m + P - 1)
    return 2 * (P - 1) / (3 * m + 2 * (P - 1))


def run(megatron, P, m, schedule, cores, iters):
    mbs = 2
    args = [
        "mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(P),
        "-x", f"OMP_NUM_THREADS={max(1, cores // P)}",
        megatron, "train", "--mock-data", "--vocab-size", "1024", "--num-layers", "8", "--hidden-size", "512",
        "--num-attention-heads", "8", "--seq-length", "256", "--micro-batch-size", str(mbs),
        "--global-batch-size", str(mbs * m), "--train-iters", str(iters), "--log-interval", str(iters // 3),
        "--eval-iters", "0", "--device", "cpu", "--pipeline-model-parallel-size", str(P), "--timing-log-level", "1",
        "--lr", "1e-4",
    ]
    if schedule == "interleaved":
        args += ["--num-virtual-stages-per-pipeline-rank", "2"]
    if schedule == "zb-h1":
        args += ["--pipeline-schedule", "zb-h1"]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    lines = [l for l in out.stdout.splitlines() if "pipeline bubble" in l]
    times = [float(x) for x in re.findall(r"elapsed time per iteration \(ms\): ([0-9.]+)", out.stdout)]
    if len(lines) < 2:
        sys.exit(f"no bubble lines in:\n{out.stdout}")
    idle = [float(v) for v in lines[-1].split(":")[1].split()]
    return idle, times[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--pipeline-sizes", default="2,4", help="comma-separated P values")
    ap.add_argument("--microbatches", default="4,8,16", help="comma-separated m values")
    a = ap.parse_args()
    megatron = os.path.join(a.build_dir, "megatron")
    print(f"pipeline bubble on CPU ranks ({a.cores} cores; 8 layers, hidden 512, seq 256, micro batch 2)")
    print(f"{'P':>2} {'m':>3} {'schedule':<12} {'ms/iter':>8} {'analytic':>9}  measured idle fraction per stage (mean)")
    worse = []
    for P in [int(p) for p in a.pipeline_sizes.split(",")]:
        for m in [int(x) for x in a.microbatches.split(",")]:
            measured = {}
            for schedule in ("1f1b", "interleaved", "zb-h1"):
                if schedule == "interleaved" and m % P:
                    continue
                idle, ms = run(megatron, P, m, schedule, a.cores, a.iters)
                mean = sum(idle) / len(idle)
                measured[schedule] = idle
                print(f"{P:>2} {m:>3} {schedule:<12} {ms:>8.1f} {analytic(schedule, P, m):>9.4f}  "
                      f"{' '.join(f'{v:.4f}' for v in idle)} ({mean:.4f})", flush=True)
            if any(z >= o for z, o in zip(measured["zb-h1"], measured["1f1b"])):
                worse.append((P, m))
    print("ZB-H1 below 1F1B on every stage at every point" if not worse else f"ZB-H1 not below 1F1B at {worse}")


if __name__ == "__main__":
    main()
