"""The PyTorch peer for the Llama benchmark, torchtitan-style: RMSNorm, RoPE (rotate-half, Llama 3.1
scaling), SDPA with grouped-query attention (enable_gqa: K/V never repeated), SwiGLU, tied or untied
output layer, no biases, fused AdamW, bf16 autocast; the model megatron.cpp trains with the same
flags."""
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def rope_cos_sin(head_dim, seq, base, scaling_factor, device):
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling_factor:
        old, low, high = 8192.0, 1.0, 4.0
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old / low, inv / scaling_factor, inv)
        mid = (wavelen >= old / high) & (wavelen <= old / low)
        inv = torch.where(mid, (1 - smooth) * inv / scaling_factor + smooth * inv, scaled)
    ang = torch.arange(seq).float()[:, None] * inv[None, :]
    return torch.cat([ang.cos()] * 2, -1).to(device), torch.cat([ang.sin()] * 2, -1).to(device)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Block(nn.Module):
    def __init__(self, C, H, G, F_):
        super().__init__()
        self.H, self.G, self.D = H, G, C // H
        self.ln1, self.ln2 = nn.RMSNorm(C, eps=1e-5), nn.RMSNorm(C, eps=1e-5)
        self.wq, self.wk, self.wv = nn.Linear(C, H * self.D, bias=False), nn.Linear(C, G * self.D, bias=False), \
            nn.Linear(C, G * self.D, bias=False)
        self.wo = nn.Linear(H * self.D, C, bias=False)
        self.w1, self.w3, self.w2 = nn.Linear(C, F_, bias=False), nn.Linear(C, F_, bias=False), \
            nn.Linear(F_, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        h = self.ln1(x)
        q = self.wq(h).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.wk(h).view(B, T, self.G, self.D).transpose(1, 2)
        v = self.wv(h).view(B, T, self.G, self.D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.wo(a.transpose(1, 2).reshape(B, T, C))
        h = self.ln2(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Llama(nn.Module):
    def __init__(self, layers, hidden, heads, groups, ffn, seq, vocab, base, scaling, tied):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads, groups, ffn) for _ in range(layers))
        self.norm = nn.RMSNorm(hidden, eps=1e-5)
        self.out = None if tied else nn.Linear(hidden, vocab, bias=False)
        self.vocab = vocab
        cos, sin = rope_cos_sin(hidden // heads, seq, base, scaling, "cpu")
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        x = self.tok(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        x = self.norm(x)
        logits = x @ self.tok.weight.t() if self.out is None else self.out(x)
        return F.cross_entropy(logits.view(-1, self.vocab).float(), targets.view(-1))


def tokens_per_second(cfg, batch, iters, warmup, compile=True, profile_iters=0):
    """Trains warmup + iters steps on random tokens on cuda in bf16 autocast; returns (tokens/s
    over the timed steps, peak memory in bytes). profile_iters > 0: that many more steps between
    cudaProfilerStart and cudaProfilerStop, for a profiler started with capture off."""
    torch.manual_seed(0)
    L, C, H, G, F_, T, V, base, scaling, tied = cfg
    return train_tokens_per_second(Llama(L, C, H, G, F_, T, V, base, scaling, tied).cuda(), V, T, batch, iters,
                                   warmup, compile, profile_iters)


def train_tokens_per_second(model, vocab, seq, batch, iters, warmup, compile=True, profile_iters=0):
    """The timed loop every PyTorch peer shares: fused AdamW, bf16 autocast, clip 1.0, optionally
    torch.compile, on random tokens; (tokens/s over the timed steps, peak memory in bytes)."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(model) if compile else model
    idx = torch.randint(0, vocab, (batch, seq), device="cuda")
    tgt = torch.randint(0, vocab, (batch, seq), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = fwd(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    result = batch * seq * iters / (time.perf_counter() - t0), torch.cuda.max_memory_allocated()
    if profile_iters > 0:
        torch.cuda.cudart().cudaProfilerStart()
        for _ in range(profile_iters):
            step()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
    return result
