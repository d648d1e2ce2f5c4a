#!/usr/bin/env python3
"""Time from launch to the end of the first training iteration (issue 5: < 10 s for GPT 1.3B),
megatron.cpp vs the PyTorch peer (torch.compile, bench/torch_gpt.py), one invocation, one GPU.

Ours: wall time from starting `megatron train` to its first iteration line (--log-interval 1),
which comes after the first iteration's optimizer step. PyTorch: wall time from starting a
fresh Python process to the end of its first step (import, model build, compile, step).

  python3 bench/time_to_first_iteration.py [--model 1.3b] [--build-dir build-gpu]
"""
import argparse
import os
import re
import subprocess
import sys
import time

MODELS = {"124m": (12, 768, 12, 16, 1024), "350m": (24, 1024, 16, 16, 1024), "1.3b": (24, 2048, 16, 8, 2048)}
VOCAB = 50304
HERE = os.path.dirname(os.path.abspath(__file__))

ap = argparse.ArgumentParser()
ap.add_argument("--model", choices=MODELS, default="1.3b")
ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
ap.add_argument("--skip-pytorch", action="store_true")
args = ap.parse_args()
L, C, H, B, T = MODELS[args.model]


def ours():
    cmd = [os.path.join(args.build_dir, "megatron"), "train", "--device", "cuda", "--bf16", "--mock-data",
           "--vocab-size", str(VOCAB), "--num-layers", str(L), "--hidden-size", str(C),
           "--num-attention-heads", str(H), "--seq-length", str(T), "--micro-batch-size", str(B),
           "--global-batch-size", str(B), "--train-iters", "2", "--log-interval", "1", "--eval-iters", "0",
           "--hidden-dropout", "0", "--attention-dropout", "0"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, setup, lines = None, None, []
    for line in p.stdout:
        lines.append(line)
        m = re.search(r"setup took ([0-9.]+) s", line)
        if m:
            setup = float(m.group(1))
        if first is None and re.search(r"iteration +1/", line):
            first = time.perf_counter() - t0
    if p.wait() != 0 or first is None:
        sys.exit("megatron train failed:\n" + "".join(lines[-30:]))
    return first, setup


PEER = r"""
import sys, time
t0 = float(sys.argv[1])
sys.path.insert(0, sys.argv[2])
import torch
from torch_gpt import GPT
L, C, H, T, V, B = map(int, sys.argv[3:9])
model = GPT(L, C, H, T, V).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
fwd = torch.compile(model)
idx = torch.randint(0, V, (B, T), device="cuda")
with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
    loss = fwd(idx, idx)
loss.backward()
opt.step()
torch.cuda.synchronize()
print(f"first step done after {time.time() - t0:.2f} s")
"""


def pytorch():
    r = subprocess.run([sys.executable, "-c", PEER, repr(time.time()), HERE, str(L), str(C), str(H), str(T),
                        str(VOCAB), str(B)], capture_output=True, text=True)
    m = re.search(r"first step done after ([0-9.]+) s", r.stdout)
    if not m:
        sys.exit("PyTorch peer failed:\n" + r.stdout[-2000:] + r.stderr[-3000:])
    return float(m.group(1))


print(f"GPT {args.model}: {L} layers, hidden {C}, heads {H}, micro batch {B} x seq {T}, bf16, one GPU")
o, setup = ours()
print(f"megatron.cpp: first iteration ends {o:.2f} s after launch (setup {setup} s)")
if not args.skip_pytorch:
    p = pytorch()
    print(f"PyTorch torch.compile: first step ends {p:.2f} s after launch")
    print(f"ratio PyTorch / ours: {p / o:.1f}x faster to the first iteration")
