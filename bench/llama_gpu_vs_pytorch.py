#!/usr/bin/env python3
"""GPU training throughput of the Llama family: megatron.cpp vs PyTorch (torch.compile of a
torchtitan-style Llama: RMSNorm, SDPA with GQA, SwiGLU, fused AdamW, bf16 autocast), same model,
batch, sequence and precision, one invocation on one GPU. Prints tokens/s, TFLOP/s, MFU (vs 989
TFLOP/s bf16 dense), peak memory and the ratio ours / PyTorch. Warm-up iterations are excluded.

FLOPs per token (Megatron's count, as megatron.cpp logs): per layer 12 h (H + G) D + 12 s H D +
18 h F (gated), and 6 h V for the output layer.

  python3 bench/llama_gpu_vs_pytorch.py --model llama3.2-1b [--iters 20] [--skip-pytorch] [--ours-args=...]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import megatron_run  # noqa: E402
from megatron_run import LLAMA_MODELS as MODELS  # noqa: E402
from megatron_run import llama_flops_per_token, train_throughput  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", choices=MODELS, default="llama3.2-1b")
ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
ap.add_argument("--iters", type=int, default=20)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--skip-pytorch", action="store_true")
ap.add_argument("--pytorch-eager", action="store_true", help="also time PyTorch without torch.compile")
ap.add_argument("--ours-args", default="", help="extra megatron train flags (same model and batch)")
args = ap.parse_args()
L, C, H, G, FF, T, V, BASE, SCALE, TIED, B = MODELS[args.model]
flops_per_token = llama_flops_per_token(L, C, H, G, FF, T, V)


def ours():
    cmd = [os.path.join(args.build_dir, "megatron"), "train", "--model-preset", args.model, "--device", "cuda",
           "--bf16", "--mock-data", "--vocab-size", str(V), "--seq-length", str(T), "--micro-batch-size", str(B),
           "--global-batch-size", str(B), "--train-iters", str(args.warmup + args.iters),
           "--log-interval", str(args.warmup), "--eval-iters", "0", "--lr", "3e-4",
           "--lr-decay-style", "constant"] + args.ours_args.split()
    return train_throughput(cmd, B * T)


def report(name, tps, peak_gib):
    megatron_run.report(name, tps, peak_gib, flops_per_token, width=36)


print(f"model {args.model}: {L} layers, hidden {C}, heads {H} in {G} groups, ffn {FF} (SwiGLU), vocab {V}, "
      f"{'tied' if TIED else 'untied'}, batch {B} x seq {T}, bf16")
o, opeak = ours()
report("megatron.cpp" + (f" {args.ours_args}" if args.ours_args else ""), o, opeak)
if not args.skip_pytorch:
    import torch

    from torch_llama import tokens_per_second

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    cfg = (L, C, H, G, FF, T, V, BASE, SCALE, TIED)
    p, ppeak = tokens_per_second(cfg, B, args.iters, args.warmup, compile=True)
    report("PyTorch (torch.compile)", p, ppeak / 2**30)
    print(f"ratio ours / PyTorch: {o / p:.2f}x")
    if args.pytorch_eager:
        e, epeak = tokens_per_second(cfg, B, args.iters, args.warmup, compile=False)
        report("PyTorch (eager)", e, epeak / 2**30)
