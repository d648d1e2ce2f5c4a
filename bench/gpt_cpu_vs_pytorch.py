#!/usr/bin/env python3
"""CPU training throughput: megatron.cpp vs PyTorch eager, same GPT, same batch, fp32, one
invocation on one machine. Prints tokens/s for both and the ratio (ours / PyTorch).

Model (defaults): GPT-2 architecture, 6 layers, hidden 384, 6 heads, seq 256, vocab 4096,
micro = global batch 4, dropout 0, AdamW. Warm-up iterations are excluded from both timings.

  .venv/bin/python bench/gpt_cpu_vs_pytorch.py [--threads 2] [--iters 20]
"""
import argparse
import math
import os
import re
import subprocess
import sys
import time

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
    # One log line per `warmup` iterations: the first interval is warm-up, the rest are timed.
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    ms = [float(m) for m in re.findall(r"elapsed time per iteration \(ms\): ([0-9.]+)", out)]
    timed = ms[1:]
    return tokens_per_iter / (sum(timed) / len(timed) / 1000.0)


def run_pytorch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    C, H, L, T, V = args.hidden, args.heads, args.layers, args.seq, args.vocab

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.fc1, self.fc2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            B = x.shape[0]
            q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + self.proj(a)
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(T))
            for b in self.blocks:
                x = b(x)
            logits = self.ln_f(x) @ self.wte.weight.t()
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    model = GPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    idx = torch.randint(0, V, (args.batch, T))
    tgt = torch.randint(0, V, (args.batch, T))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    return tokens_per_iter * args.iters / (time.perf_counter() - t0)


ours = run_ours()
theirs = run_pytorch()
print(f"model: GPT {args.layers} layers, hidden {args.hidden}, heads {args.heads}, seq {args.seq}, "
      f"vocab {args.vocab}, batch {args.batch}, fp32, {args.threads} threads")
print(f"megatron.cpp (CPU)   : {ours:10.0f} tokens/s")
print(f"PyTorch eager (CPU)  : {theirs:10.0f} tokens/s")
print(f"ratio ours / PyTorch : {ours / theirs:.2f}x")
