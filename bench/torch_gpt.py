"""The PyTorch peer for the benchmarks: GPT-2 architecture (learned positions, pre-LayerNorm,
tanh GeLU MLP, biases, tied output layer), SDPA causal attention, AdamW; the same model
megatron.cpp trains. Shared by the CPU and GPU benchmarks."""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc1, self.fc2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.H, C // self.H).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers, hidden, heads, seq, vocab):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, hidden), nn.Embedding(seq, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)
        self.vocab = vocab
        for n, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, self.vocab).float(), targets.view(-1))


def tokens_per_second(layers, hidden, heads, seq, vocab, batch, iters, warmup, device="cpu", bf16=False,
                      compile=False, profile_iters=0):
    """Trains `warmup` + `iters` steps on random tokens; returns (tokens/s over the timed
    steps, peak memory in bytes or None). profile_iters > 0 (GPU): that many more steps between
    cudaProfilerStart and cudaProfilerStop, for a profiler started with capture off."""
    torch.manual_seed(0)
    model = GPT(layers, hidden, heads, seq, vocab).to(device)
    fused = device != "cpu"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=fused)
    fwd = torch.compile(model) if compile else model
    idx = torch.randint(0, vocab, (batch, seq), device=device)
    tgt = torch.randint(0, vocab, (batch, seq), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda" if device != "cpu" else "cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device != "cpu" else None
    if profile_iters > 0 and device != "cpu":
        torch.cuda.cudart().cudaProfilerStart()
        for _ in range(profile_iters):
            step()
        sync()
        torch.cuda.cudart().cudaProfilerStop()
    return batch * seq * iters / dt, peak
