#!/usr/bin/env python3
"""CPU training throughput: megatron.cpp vs PyTorch eager, same GPT, same batch, fp32, one
invocation on one machine. Prints tokens/s for both and the ratio (ours / PyTorch).

Model (defaults): GPT-2 architecture, 6 layers, hidden 384, 6 heads, seq 256, vocab 4096,
micro = global batch 4, dropout 0, AdamW. Warm-up iterations are excluded from both timings.

With --repeats N the two trainers run alternately N times and the medians are reported (and the
fastest run of each), with the 1-minute load average before each run: on a shared machine a run
taken while something else computes is meaningless, and alternating keeps a slow drift in load
from favouring one.

--cpu-isa avx512|avx2|portable forces megatron.cpp's CPU path (MT_CPU_ISA, kernels/cpu_isa.h; the
default is the best the CPU has), so that the AVX2 path can be measured on an AVX-512 machine;
the path that ran is printed from the trainer's start-up line.

  .venv/bin/python bench/gpt_cpu_vs_pytorch.py [--threads 2] [--iters 20] [--repeats 3] [--cpu-isa avx2]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--layers", type=int, default=6)
ap.add_argument("--hidden", type=int, default=384)
ap.add_argument("--heads", type=int, default=6)
ap.add_argument("--seq", type=int, default=256)
ap.add_argument("--vocab", type=int, default=4096)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--iters", type=int, default=20)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--repeats", type=int, default=1)
ap.add_argument("--cpu-isa", choices=["avx512", "avx2", "portable"], default=None,
                help="force megatron.cpp's CPU path (sets MT_CPU_ISA for our trainer only)")
args = ap.parse_args()

os.environ["OMP_NUM_THREADS"] = str(args.threads)
tokens_per_iter = args.batch * args.seq


def run_ours():
    cmd = [os.path.join(args.build_dir, "megatron"), "train", "--mock-data", "--vocab-size", str(args.vocab),
           "--num-layers", str(args.layers), "--hidden-size", str(args.hidden),
           "--num-attention-heads", str(args.heads), "--seq-length", str(args.seq),
           "--micro-batch-size", str(args.batch), "--global-batch-size", str(args.batch),
           "--train-iters", str(args.warmup + args.iters), "--log-interval", str(args.warmup),
           "--eval-iters", "0", "--hidden-dropout", "0", "--attention-dropout", "0",
           "--lr", "3e-4", "--lr-decay-style", "constant", "--weight-decay", "0.1"]
    env = dict(os.environ)
    if args.cpu_isa:
        env["MT_CPU_ISA"] = args.cpu_isa
    # One log line per `warmup` iterations: the first interval is warm-up, the rest are timed.
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    global cpu_path
    cpu_path = (re.findall(r"device cpu \(([^)]*) kernels\)", out) or ["?"])[0]
    ms = [float(m) for m in re.findall(r"elapsed time per iteration \(ms\): ([0-9.]+)", out)]
    timed = ms[1:]
    return tokens_per_iter / (sum(timed) / len(timed) / 1000.0)


def run_pytorch():
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_gpt import tokens_per_second

    tps, _ = tokens_per_second(args.layers, args.hidden, args.heads, args.seq, args.vocab, args.batch,
                               args.iters, args.warmup)
    return tps


def load():
    return os.getloadavg()[0]


cpu_path = "?"
runs = []
for r in range(args.repeats):
    l0 = load()
    ours = run_ours()
    l1 = load()
    theirs = run_pytorch()
    runs.append((ours, theirs))
    if args.repeats > 1:
        print(f"run {r + 1}: megatron.cpp {ours:6.0f} tokens/s (load {l0:.2f}), PyTorch {theirs:6.0f} tokens/s "
              f"(load {l1:.2f}), ratio {ours / theirs:.2f}x", flush=True)
ours = statistics.median(o for o, _ in runs)
theirs = statistics.median(t for _, t in runs)
ratio = statistics.median(o / t for o, t in runs)
what = f" (median of {args.repeats})" if args.repeats > 1 else ""
print(f"model: GPT {args.layers} layers, hidden {args.hidden}, heads {args.heads}, seq {args.seq}, "
      f"vocab {args.vocab}, batch {args.batch}, fp32, {args.threads} threads")
print(f"megatron.cpp (CPU)   : {ours:10.0f} tokens/s{what}, {cpu_path} kernels")
print(f"PyTorch eager (CPU)  : {theirs:10.0f} tokens/s{what}")
print(f"ratio ours / PyTorch : {ratio:.2f}x{what}")
if args.repeats > 1:
    # On a shared machine each trainer's fastest run is its least disturbed one.
    best_ours, best_theirs = max(o for o, _ in runs), max(t for _, t in runs)
    print(f"best runs            : {best_ours:.0f} vs {best_theirs:.0f} tokens/s, ratio {best_ours / best_theirs:.2f}x")
