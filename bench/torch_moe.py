"""The PyTorch peer for the MoE benchmark, the way torchtitan runs MoE: a Qwen3-MoE-style decoder
(RMSNorm, RoPE, grouped-query attention with q/k RMSNorm per head, untied output layer, no
biases), each MLP a token-choice top-k MoE: a linear router, softmax over the top-k logits
(Qwen3-MoE's norm_topk_prob), the tokens sorted by expert and padded per expert to a multiple of
16 rows in a buffer of static size, the experts' SwiGLU as two torch._grouped_mm calls (bf16), the
outputs weighted by the probabilities and summed back with index_add_. Fused AdamW, bf16
autocast, torch.compile. Where torch._grouped_mm is missing (an older torch), the experts run as a
loop of matmuls over the same buffer and the report says so."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_llama import rope_cos_sin, rotate_half, train_tokens_per_second

ALIGN = 16
HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


class MoE(nn.Module):
    def __init__(self, C, E, k, F_):
        super().__init__()
        self.E, self.k, self.F = E, k, F_
        self.router = nn.Linear(C, E, bias=False)
        self.w13 = nn.Parameter(torch.empty(E, C, 2 * F_))  # [gate | up], grouped_mm's [E, K, N]
        self.w2 = nn.Parameter(torch.empty(E, F_, C))

    def forward(self, x):
        B, T, C = x.shape
        h = x.reshape(-1, C)
        n = h.shape[0]
        top_logits, idx = torch.topk(self.router(h).float(), self.k, dim=-1)
        probs = torch.softmax(top_logits, dim=-1)
        experts = idx.reshape(-1)
        order = torch.argsort(experts, stable=True)
        counts = torch.bincount(experts, minlength=self.E)
        padded = (counts + ALIGN - 1) // ALIGN * ALIGN
        start = torch.cumsum(counts, 0) - counts
        pad_start = torch.cumsum(padded, 0) - padded
        sorted_e = experts[order]
        dest = pad_start[sorted_e] + torch.arange(n * self.k, device=x.device) - start[sorted_e]
        rows = n * self.k + ALIGN * self.E  # static upper bound of the padded total
        # torch._grouped_mm takes bf16 on the GPU; the RMSNorm before it leaves fp32 under autocast.
        dt = torch.bfloat16 if h.is_cuda else h.dtype
        buf = h.new_zeros(rows, C, dtype=dt).index_copy(0, dest, h[order // self.k].to(dt))
        offs = torch.cumsum(padded, 0).to(torch.int32)
        if HAS_GROUPED_MM:
            gu = torch._grouped_mm(buf, self.w13.to(buf.dtype), offs=offs)
            g, u = gu.chunk(2, dim=-1)
            y = torch._grouped_mm(F.silu(g) * u, self.w2.to(buf.dtype), offs=offs)
        else:
            ends = offs.tolist()
            parts, s = [], 0
            for e in range(self.E):
                gu = buf[s:ends[e]] @ self.w13[e].to(buf.dtype)
                g, u = gu.chunk(2, dim=-1)
                parts.append((F.silu(g) * u) @ self.w2[e].to(buf.dtype))
                s = ends[e]
            parts.append(buf.new_zeros(rows - s, C))
            y = torch.cat(parts)
        out = (y[dest] * probs.reshape(-1)[order, None].to(y.dtype)).to(h.dtype)
        return h.new_zeros(n, C).index_add_(0, order // self.k, out).view(B, T, C)


class Block(nn.Module):
    def __init__(self, C, H, G, E, k, F_):
        super().__init__()
        self.H, self.G, self.D = H, G, C // H
        self.ln1, self.ln2 = nn.RMSNorm(C, eps=1e-6), nn.RMSNorm(C, eps=1e-6)
        self.q_norm, self.k_norm = nn.RMSNorm(self.D, eps=1e-6), nn.RMSNorm(self.D, eps=1e-6)
        self.wq = nn.Linear(C, H * self.D, bias=False)
        self.wk, self.wv = nn.Linear(C, G * self.D, bias=False), nn.Linear(C, G * self.D, bias=False)
        self.wo = nn.Linear(H * self.D, C, bias=False)
        self.moe = MoE(C, E, k, F_)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        h = self.ln1(x)
        q = self.q_norm(self.wq(h).view(B, T, self.H, self.D)).transpose(1, 2)
        k = self.k_norm(self.wk(h).view(B, T, self.G, self.D)).transpose(1, 2)
        v = self.wv(h).view(B, T, self.G, self.D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.wo(a.transpose(1, 2).reshape(B, T, C))
        return x + self.moe(self.ln2(x))


class QwenMoE(nn.Module):
    def __init__(self, layers, hidden, heads, groups, experts, topk, ffn, seq, vocab, base):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads, groups, experts, topk, ffn) for _ in range(layers))
        self.norm = nn.RMSNorm(hidden, eps=1e-6)
        self.out = nn.Linear(hidden, vocab, bias=False)
        self.vocab = vocab
        cos, sin = rope_cos_sin(hidden // heads, seq, base, 0, "cpu")
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        x = self.tok(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        logits = self.out(self.norm(x))
        return F.cross_entropy(logits.view(-1, self.vocab).float(), targets.view(-1))


def tokens_per_second(cfg, batch, iters, warmup, compile=True):
    """Trains warmup + iters steps on random tokens on cuda in bf16 autocast (torch_llama's loop);
    returns (tokens/s over the timed steps, peak memory in bytes)."""
    torch.manual_seed(0)
    L, C, H, G, E, k, F_, T, V, base = cfg
    return train_tokens_per_second(QwenMoE(L, C, H, G, E, k, F_, T, V, base).cuda(), V, T, batch, iters, warmup,
                                   compile)
