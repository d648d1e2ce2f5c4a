#!/usr/bin/env python3
"""GPU training throughput: megatron.cpp vs PyTorch (torch.compile, SDPA flash attention, fused
AdamW, bf16 autocast), same GPT-2-architecture model, batch, sequence and precision, one
invocation on one GPU. Prints tokens/s, TFLOP/s, MFU (vs 989 TFLOP/s bf16 dense), peak memory
and the ratio ours / PyTorch. Warm-up iterations are excluded from both.

FLOPs per token = 6 N + 12 L h s  (N = parameters without position embeddings).

  python3 bench/gpt_gpu_vs_pytorch.py --model 124m [--iters 20] [--skip-pytorch] [--ours-args="--recompute-gelu"]
"""
import argparse
import os
import sys

MODELS = {  # layers, hidden, heads, micro batch, seq
    "124m": (12, 768, 12, 16, 1024),
    "350m": (24, 1024, 16, 16, 1024),
    "1.3b": (24, 2048, 16, 8, 2048),
}
VOCAB = 50304

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import megatron_run  # noqa: E402
from megatron_run import train_throughput  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", choices=MODELS, default="124m")
ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
ap.add_argument("--iters", type=int, default=20)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--skip-pytorch", action="store_true")
ap.add_argument("--ours-args", default="", help="extra megatron train flags (same model and batch), e.g. --recompute-gelu")
args = ap.parse_args()
L, C, H, B, T = MODELS[args.model]
N = VOCAB * C + L * (12 * C * C + 13 * C) + 2 * C
flops_per_token = 6 * N + 12 * L * C * T


def ours():
    cmd = [os.path.join(args.build_dir, "megatron"), "train", "--device", "cuda", "--bf16", "--mock-data",
           "--vocab-size", str(VOCAB), "--num-layers", str(L), "--hidden-size", str(C),
           "--num-attention-heads", str(H), "--seq-length", str(T), "--micro-batch-size", str(B),
           "--global-batch-size", str(B), "--train-iters", str(args.warmup + args.iters),
           "--log-interval", str(args.warmup), "--eval-iters", "0", "--hidden-dropout", "0",
           "--attention-dropout", "0", "--lr", "3e-4", "--lr-decay-style", "constant"] + args.ours_args.split()
    return train_throughput(cmd, B * T)


def report(name, tps, peak_gib):
    megatron_run.report(name, tps, peak_gib, flops_per_token, width=28)


print(f"model {args.model}: {L} layers, hidden {C}, heads {H}, vocab {VOCAB}, batch {B} x seq {T}, bf16, "
      f"N = {N / 1e6:.1f} M")
o, opeak = ours()
report("megatron.cpp" + (f" {args.ours_args}" if args.ours_args else ""), o, opeak)
if not args.skip_pytorch:
    import torch

    from torch_gpt import tokens_per_second

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    p, ppeak = tokens_per_second(L, C, H, T, VOCAB, B, args.iters, args.warmup, device="cuda", bf16=True,
                                 compile=True)
    report("PyTorch (torch.compile)", p, ppeak / 2**30)
    print(f"ratio ours / PyTorch: {o / p:.2f}x")
