#!/usr/bin/env python3
"""Multi-GPU benchmarks of issues 4 and 7, one invocation on one machine (needs mpirun; torchrun for the peer).

  --mode dp: data-parallel weak scaling of GPT 350M (micro batch 16 x seq 1024 per GPU, bf16):
      ours on 1 GPU, on N GPUs with the distributed optimizer and --overlap-grad-reduce
      --overlap-param-gather, and on N GPUs without overlap; the PyTorch peer (DDP +
      torch.compile, bench/torch_ddp_gpt.py) on 1 and N GPUs. Scaling efficiency =
      tokens/s on N GPUs / (N x tokens/s on 1).
  --mode tp: GPT 1.3B (micro batch 8 x seq 2048, bf16), same global batch: TP=1 on 1 GPU vs
      TP=N (with and without sequence parallelism, and SP with --tp-comm-overlap) on N GPUs, with
      the time each rank spends in collectives per iteration (--timing-log-level 1: NCCL kernel
      time from CUDA events).
  --mode tp --model 7b --no-tp1: the 7B-class GPT of issue 7 (32 layers, 4096 hidden, 32 heads,
      seq 2048, micro batch 2, 4 microbatches per iteration) with TP=N + SP only (it does not
      fit one GPU with fp32 master weights and Adam state).
  --mode dp --model 1.3b --gpus 2,4,8: data-parallel weak scaling of GPT 1.3B (issue 7's first
      row) on each GPU count listed (the no-overlap run only on the largest).
  --mode grid --model 7b --layouts 2x2,4x1: TP x DP layouts (tensor x data parallel, GPUs = TP x DP)
      with sequence parallelism, the distributed optimizer and both overlaps, micro batch and
      microbatches per DP rank fixed (weak scaling in DP): issue 7's TP=2xDP=4, TP=4xDP=2, TP=2xDP=2.
      A layout ending in :async adds --async-tensor-model-parallel-allreduce, :tpoverlap adds
      --tp-comm-overlap (e.g. 4x1,4x1:async,4x1:tpoverlap).

Warm-up iterations are excluded (the first log interval). FLOPs per token = 6 N + 12 L h s.

  python3 bench/gpt_multi_gpu.py --mode dp [--gpus 2] [--iters 20] [--skip-pytorch]
"""
import argparse
import os
import re
import subprocess
import sys

MODELS = {  # layers, hidden, heads, micro batch, seq
    "124m": (12, 768, 12, 16, 1024),
    "350m": (24, 1024, 16, 16, 1024),
    "1.3b": (24, 2048, 16, 8, 2048),
    "7b": (32, 4096, 32, 2, 2048),
}
ACCUM = {"7b": 4}  # microbatches per iteration (default 1)
PEAK = 989e12
VOCAB = 50304
HERE = os.path.dirname(os.path.abspath(__file__))

ap = argparse.ArgumentParser()
ap.add_argument("--mode", choices=("dp", "tp", "grid"), default="dp")
ap.add_argument("--model", choices=MODELS, default=None, help="default: 350m for dp, 1.3b for tp")
ap.add_argument("--gpus", default="2", help="GPU count; dp mode: a comma-separated list (e.g. 2,4,8)")
ap.add_argument("--layouts", default="2x1", help="grid mode: comma-separated TPxDP layouts, e.g. 2x2,4x1")
ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
ap.add_argument("--iters", type=int, default=20)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--skip-pytorch", action="store_true")
ap.add_argument("--micro-batch", type=int, default=None, help="override the model's micro batch size")
ap.add_argument("--accum", type=int, default=None, help="override the microbatches per DP rank per iteration")
ap.add_argument("--no-tp1", action="store_true", help="tp mode: skip the one-GPU run and plain TP")
ap.add_argument("--log-dir", default=os.environ.get("OUT", "."))
args = ap.parse_args()
model = args.model or ("350m" if args.mode == "dp" else "1.3b")
L, C, H, B, T = MODELS[model]
A = ACCUM.get(model, 1)
B, A = args.micro_batch or B, args.accum or A
N = VOCAB * C + L * (12 * C * C + 13 * C) + 2 * C
flops_per_token = 6 * N + 12 * L * C * T
MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-x", "NCCL_NVLS_ENABLE=0"]


def ours(name, gpus, global_batch, extra=()):
    cmd = [os.path.join(args.build_dir, "megatron"), "train", "--device", "cuda", "--bf16", "--mock-data",
           "--vocab-size", str(VOCAB), "--num-layers", str(L), "--hidden-size", str(C),
           "--num-attention-heads", str(H), "--seq-length", str(T), "--micro-batch-size", str(B),
           "--global-batch-size", str(global_batch), "--train-iters", str(args.warmup + args.iters),
           "--log-interval", str(args.warmup), "--eval-iters", "0", "--hidden-dropout", "0",
           "--attention-dropout", "0", "--lr", "3e-4", "--lr-decay-style", "constant",
           "--timing-log-level", "1", *extra]
    if gpus > 1:
        cmd = MPI + ["-np", str(gpus)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, NCCL_NVLS_ENABLE="0"))
    with open(os.path.join(args.log_dir, f"multi_gpu_{args.mode}_{name}.log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"{name} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    ms = [float(m) for m in re.findall(r"elapsed time per iteration \(ms\): ([0-9.]+)", r.stdout)][1:]
    comm = re.findall(r"communication \(this rank, ms per iteration of [0-9.]+ ms\):(.*)", r.stdout)[1:]
    groups = {}
    for line in comm:
        for g, v in re.findall(r" (\w+) ([0-9.]+) \|", line):
            groups.setdefault(g, []).append(float(v))
    peak = re.search(r"peak device memory in tensors: ([0-9.]+) GiB", r.stdout)
    it_ms = sum(ms) / len(ms)
    return {"tps": global_batch * T / (it_ms / 1000.0), "ms": it_ms,
            "comm": {g: sum(v) / len(v) for g, v in groups.items()},
            "peak": float(peak.group(1)) if peak else float("nan")}


def torch_ddp(gpus):
    cmd = ["torchrun", "--standalone", f"--nproc-per-node={gpus}", os.path.join(HERE, "torch_ddp_gpt.py"),
           "--layers", str(L), "--hidden", str(C), "--heads", str(H), "--seq", str(T), "--batch", str(B),
           "--vocab", str(VOCAB), "--iters", str(args.iters), "--warmup", str(args.warmup)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, NCCL_NVLS_ENABLE="0"))
    with open(os.path.join(args.log_dir, f"multi_gpu_torch_ddp_{gpus}.log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"torch DDP on {gpus} GPU(s) failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return {"tps": float(re.search(r"tokens/s: ([0-9.]+)", r.stdout).group(1)),
            "peak": float(re.search(r"peak GiB: ([0-9.]+)", r.stdout).group(1))}


def row(name, gpus, res, base=None):
    tflops_gpu = res["tps"] * flops_per_token / 1e12 / gpus
    eff = f"{res['tps'] / (gpus * base['tps']):.3f}" if base else "-"
    comm = " ".join(f"{g} {v:.1f}" for g, v in res.get("comm", {}).items() if v > 0) or "-"
    ms = f"{res['ms']:.1f}" if "ms" in res else "-"
    print(f"| {name} | {gpus} | {res['tps']:,.0f} | {res['tps'] / gpus:,.0f} | {tflops_gpu:.1f} | "
          f"{100 * tflops_gpu * 1e12 / PEAK:.1f}% | {ms} | {comm} | {eff} | {res['peak']:.2f} |")


counts = [int(g) for g in args.gpus.split(",")]
n = max(counts)
print(f"GPT {model}: {L} layers, hidden {C}, heads {H}, vocab {VOCAB}, micro batch {B} x seq {T}, "
      f"{A} microbatch(es) per DP rank, bf16")
print("| run | GPUs | tokens/s | tokens/s/GPU | TFLOP/s/GPU | MFU | ms/iter | comm ms/iter (rank) | scaling eff. | peak GiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
if args.mode == "dp":
    one = ours("ours_1gpu", 1, B * A)
    row("megatron.cpp", 1, one)
    for g in counts:
        over = ours(f"ours_{g}gpu_overlap", g, B * A * g, ["--use-distributed-optimizer", "--overlap-grad-reduce",
                                                            "--overlap-param-gather"])
        row("megatron.cpp, distributed optimizer, overlap", g, over, one)
    plain = ours(f"ours_{n}gpu_no_overlap", n, B * A * n, ["--use-distributed-optimizer"])
    row("megatron.cpp, distributed optimizer, no overlap", n, plain, one)
    if not args.skip_pytorch:
        t1 = torch_ddp(1)
        row("PyTorch DDP + torch.compile", 1, t1)
        tn = torch_ddp(n)
        row("PyTorch DDP + torch.compile", n, tn, t1)
        print(f"ratio ours / PyTorch on {n} GPUs: {over['tps'] / tn['tps']:.2f}x")
elif args.mode == "grid":
    for layout in args.layouts.split(","):
        shape, _, option = layout.lower().partition(":")
        tp, dp = (int(v) for v in shape.split("x"))
        options = {"": ([], ""), "async": (["--async-tensor-model-parallel-allreduce"], ", async TP all-reduce"),
                   "tpoverlap": (["--tp-comm-overlap"], ", TP comm overlap")}
        if option not in options:
            sys.exit(f"--layouts: unknown option ':{option}' in {layout} (async or tpoverlap)")
        extra, label = options[option]
        name = f"TP={tp} x DP={dp}{label}"
        r = ours(f"ours_{model}_tp{tp}_dp{dp}{'_' + option if option else ''}", tp * dp, B * A * dp,
                 ["--tensor-model-parallel-size", str(tp), "--sequence-parallel", "--use-distributed-optimizer",
                  "--overlap-grad-reduce", "--overlap-param-gather", *extra])
        row(f"megatron.cpp {name}, SP, distributed optimizer, overlap", tp * dp, r)
        share = ", ".join(f"{g} {v:.1f} ms ({100 * v / r['ms']:.0f}%)" for g, v in r["comm"].items() if v > 0)
        print(f"{name}: collectives per iteration of {r['ms']:.1f} ms: {share or '-'} "
              f"(dp time overlaps the backward/forward)")
else:
    runs = []
    one = None
    if not args.no_tp1:
        one = ours(f"ours_{model}_tp1", 1, B * A)
        row("megatron.cpp TP=1", 1, one)
        tp = ours(f"ours_{model}_tp{n}", n, B * A, ["--tensor-model-parallel-size", str(n)])
        row(f"megatron.cpp TP={n}", n, tp, one)
        runs.append((f"TP={n}", tp))
    sp = ours(f"ours_{model}_tp{n}_sp", n, B * A, ["--tensor-model-parallel-size", str(n), "--sequence-parallel"])
    row(f"megatron.cpp TP={n} + sequence parallel", n, sp, one)
    runs.append((f"TP={n}+SP", sp))
    ov = ours(f"ours_{model}_tp{n}_sp_overlap", n, B * A,
              ["--tensor-model-parallel-size", str(n), "--sequence-parallel", "--tp-comm-overlap"])
    row(f"megatron.cpp TP={n} + sequence parallel + --tp-comm-overlap", n, ov, one)
    runs.append((f"TP={n}+SP+overlap", ov))
    for name, r in runs:
        c = r["comm"].get("tp", 0.0)
        print(f"{name}: {c:.1f} ms of {r['ms']:.1f} ms per iteration in tensor-parallel collectives "
              f"({100 * c / r['ms']:.0f}%{', overlapped with GEMMs in part' if 'overlap' in name else ''})")
    print(f"--tp-comm-overlap: {sp['ms'] / ov['ms']:.3f}x the speed of TP={n}+SP")
