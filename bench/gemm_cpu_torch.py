"""torch.matmul GFLOP/s at bench/gemm_cpu_bench.cpp's shapes (bench/gpt_cpu_vs_pytorch.py's model:
1024 tokens, hidden 384, MLP 1536, vocab 4096, fp32), the reference for our CPU GEMM. Same
operand layouts as the model's linear layers: y = x W^T, dx = dy W, dW = dy^T x (the weight
gradient computed into a fresh tensor: PyTorch's autograd accumulates separately).

  .venv/bin/python bench/gemm_cpu_torch.py [--threads 2] [--iters 5] [--repeats 5]
"""
import argparse
import statistics
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iters", type=int, default=5)
ap.add_argument("--repeats", type=int, default=5)
args = ap.parse_args()
torch.set_num_threads(args.threads)

T, H, F, V = 1024, 384, 1536, 4096
# (name, m, n, k, ta, tb): C[m, n] = op(A) op(B) as bench/gemm_cpu_bench.cpp
shapes = []
for name, n_out, n_in in (("qkv", 3 * H, H), ("proj", H, H), ("fc1", F, H), ("fc2", H, F), ("logits", V, H)):
    shapes += [(f"{name} fwd", T, n_out, n_in, False, True), (f"{name} dgrad", T, n_in, n_out, False, False),
               (f"{name} wgrad", n_out, n_in, T, True, False)]

print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} x {args.iters} calls")
print("| GEMM | m x n x k | ms | GFLOP/s |\n|---|---|---:|---:|")
total_ms = total_flop = 0.0
for name, m, n, k, ta, tb in shapes:
    a = torch.randn(k, m) if ta else torch.randn(m, k)
    b = torch.randn(n, k) if tb else torch.randn(k, n)
    opa = a.t() if ta else a
    opb = b.t() if tb else b
    for _ in range(2):
        torch.matmul(opa, opb)
    ms = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.iters):
            torch.matmul(opa, opb)
        ms.append((time.perf_counter() - t0) * 1e3 / args.iters)
    med = statistics.median(ms)
    flop = 2.0 * m * n * k
    total_ms += med
    total_flop += flop
    print(f"| {name} | {m} x {n} x {k} | {med:.3f} | {flop / med / 1e6:.1f} |")
print(f"all: {total_ms:.3f} ms, {total_flop / total_ms / 1e6:.1f} GFLOP/s")
