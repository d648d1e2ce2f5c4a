#!/usr/bin/env python3
"""GPU training throughput of a Qwen3-MoE-style model: megatron.cpp vs PyTorch (torch.compile of a
torchtitan-style MoE with torch._grouped_mm experts, bench/torch_moe.py), same model, batch,
sequence and precision, one invocation on one GPU. Prints tokens/s, TFLOP/s and MFU on the
active parameters (vs 989 TFLOP/s bf16 dense), peak memory and the ratio ours / PyTorch. Warm-up
iterations are excluded.

FLOPs per token (Megatron's count on the active experts, as megatron.cpp logs): per layer
12 h (H + G) D + 12 s H D + 18 h F k + 6 h E (router), and 6 h V for the output layer.

  python3 bench/moe_gpu_vs_pytorch.py [--iters 10] [--skip-pytorch] [--ours-args=...]
"""
import argparse
import os
import sys

# layers, hidden, heads, groups, experts, top-k, expert ffn, seq, vocab, rope base, micro batch
MODELS = {"qwen3-moe-3b": (8, 2048, 32, 4, 64, 8, 768, 2048, 151936, 1000000.0, 4)}

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import megatron_run  # noqa: E402
from megatron_run import train_throughput  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", choices=MODELS, default="qwen3-moe-3b")
ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
ap.add_argument("--iters", type=int, default=10)
ap.add_argument("--warmup", type=int, default=4)
ap.add_argument("--skip-pytorch", action="store_true")
ap.add_argument("--pytorch-eager", action="store_true", help="also time PyTorch without torch.compile")
ap.add_argument("--ours-args", default="", help="extra megatron train flags (same model and batch)")
args = ap.parse_args()
L, C, H, G, E, K, FF, T, V, BASE, B = MODELS[args.model]
D = C // H
flops_per_token = L * (12 * C * (H + G) * D + 12 * T * H * D + 18 * C * FF * K + 6 * C * E) + 6 * C * V


def ours():
    cmd = [os.path.join(args.build_dir, "megatron"), "train", "--device", "cuda", "--bf16", "--mock-data",
           "--num-layers", str(L), "--hidden-size", str(C), "--num-attention-heads", str(H),
           "--group-query-attention", "--num-query-groups", str(G), "--qk-layernorm", "--normalization", "RMSNorm",
           "--norm-epsilon", "1e-6", "--swiglu", "--disable-bias-linear", "--position-embedding-type", "rope",
           "--rotary-base", str(BASE), "--untie-embeddings-and-output-weights", "--num-experts", str(E),
           "--moe-router-topk", str(K), "--moe-ffn-hidden-size", str(FF), "--ffn-hidden-size", str(FF),
           "--vocab-size", str(V), "--make-vocab-size-divisible-by", "128", "--seq-length", str(T),
           "--micro-batch-size", str(B), "--global-batch-size", str(B), "--hidden-dropout", "0",
           "--attention-dropout", "0", "--train-iters", str(args.warmup + args.iters),
           "--log-interval", str(args.warmup), "--eval-iters", "0", "--lr", "3e-4",
           "--lr-decay-style", "constant"] + args.ours_args.split()
    return train_throughput(cmd, B * T)


def report(name, tps, peak_gib):
    megatron_run.report(name, tps, peak_gib, flops_per_token, width=36)


print(f"model {args.model}: {L} layers, hidden {C}, heads {H} in {G} groups, q/k norm, {E} experts top-{K} of ffn "
      f"{FF} (SwiGLU), vocab {V} untied, batch {B} x seq {T}, bf16; MFU on active parameters")
o, opeak = ours()
report("megatron.cpp" + (f" {args.ours_args}" if args.ours_args else ""), o, opeak)
if not args.skip_pytorch:
    import torch

    import torch_moe

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, experts: "
          f"{'torch._grouped_mm' if torch_moe.HAS_GROUPED_MM else 'a loop of matmuls (no torch._grouped_mm)'}",
          flush=True)
    cfg = (L, C, H, G, E, K, FF, T, V, BASE)
    p, ppeak = torch_moe.tokens_per_second(cfg, B, args.iters, args.warmup, compile=True)
    report("PyTorch (torch.compile)", p, ppeak / 2**30)
    print(f"ratio ours / PyTorch: {o / p:.2f}x")
    if args.pytorch_eager:
        e, epeak = torch_moe.tokens_per_second(cfg, B, args.iters, args.warmup, compile=False)
        report("PyTorch (eager)", e, epeak / 2**30)
