#!/usr/bin/env python3
"""The PyTorch data-parallel peer for bench/gpt_multi_gpu.py: the GPT of torch_gpt.py under
DistributedDataParallel (NCCL, overlapped bucketed all-reduce, gradient_as_bucket_view) and
torch.compile, bf16 autocast, fused AdamW; same per-GPU micro batch. Run by torchrun; rank 0
prints "tokens/s: X" (all GPUs together) and "peak GiB: Y" (rank 0).

  torchrun --nproc-per-node 2 bench/torch_ddp_gpt.py --layers 24 --hidden 1024 --heads 16 --seq 1024 --batch 16
"""
import argparse
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt import GPT  # noqa: E402

ap = argparse.ArgumentParser()
for k, d in (("layers", 24), ("hidden", 1024), ("heads", 16), ("seq", 1024), ("batch", 16), ("vocab", 50304),
             ("iters", 20), ("warmup", 5)):
    ap.add_argument(f"--{k}", type=int, default=d)
a = ap.parse_args()

dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
torch.manual_seed(0)
model = GPT(a.layers, a.hidden, a.heads, a.seq, a.vocab).cuda()
ddp = torch.nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=True)
fwd = torch.compile(ddp)
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=True)
g = torch.Generator(device="cuda").manual_seed(rank)
idx = torch.randint(0, a.vocab, (a.batch, a.seq), device="cuda", generator=g)
tgt = torch.randint(0, a.vocab, (a.batch, a.seq), device="cuda", generator=g)


def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        loss = fwd(idx, tgt)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


for _ in range(a.warmup):
    step()
torch.cuda.synchronize()
dist.barrier()
torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
for _ in range(a.iters):
    step()
torch.cuda.synchronize()
dt = time.perf_counter() - t0
if rank == 0:
    print(f"tokens/s: {a.batch * a.seq * a.iters * world / dt:.1f}")
    print(f"peak GiB: {torch.cuda.max_memory_allocated() / 2**30:.2f}")
dist.destroy_process_group()
