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
    # K/V heads repeated to the query heads instead of enable_gqa: for a PyTorch whose flash/cuDNN
    # SDPA takes no GQA (the long-context peer sets it when only the math kernel would).
    repeat_kv = False

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
        if self.repeat_kv:
            k, v = k.repeat_interleave(self.H // self.G, 1), v.repeat_interleave(self.H // self.G, 1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
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


def train_tokens_per_second(model, vocab, seq, batch, iters, warmup, compile=True, profile_iters=0, device="cuda",
                            reset_peak=True):
    """The timed loop every PyTorch peer shares: fused AdamW, bf16 autocast, clip 1.0, optionally
    torch.compile, on random tokens; (tokens/s over the timed steps, peak memory in bytes: of the
    timed steps, or of the whole run with reset_peak=False; NaN off CUDA)."""
    cuda = device == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(model) if compile else model
    idx = torch.randint(0, vocab, (batch, seq), device=device)
    tgt = torch.randint(0, vocab, (batch, seq), device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = fwd(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    sync()
    if cuda and reset_peak:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    result = batch * seq * iters / (time.perf_counter() - t0), \
        torch.cuda.max_memory_allocated() if cuda else float("nan")
    if profile_iters > 0:
        torch.cuda.cudart().cudaProfilerStart()
        for _ in range(profile_iters):
            step()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
    return result


# ---- the long-context peer (bench/long_context_gpu_vs_pytorch.py) ----

class LinearCrossEntropy(torch.autograd.Function):
    """Output layer + mean cross-entropy over chunks of tokens, gradients made in the forward pass
    (Liger-Kernel's fused linear cross-entropy, in plain PyTorch): one chunk's logits (bf16 and their
    fp32 softmax) exist at a time and nothing is recomputed, so the logits cost chunk x vocab
    instead of tokens x vocab (32 GiB in bf16 at 128k tokens x 128,256). x [N, C] (bf16), w [V, C]."""

    @staticmethod
    def forward(ctx, x, w, targets, chunk):
        n = x.shape[0]
        x = x.to(torch.bfloat16)
        w16 = w.to(torch.bfloat16)
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        for s in range(0, n, chunk):
            xc, tc = x[s:s + chunk], targets[s:s + chunk]
            logits = (xc @ w16.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            loss += (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
            g = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            g[torch.arange(g.shape[0], device=g.device), tc] -= 1.0
            g16 = g.div_(n).to(torch.bfloat16)
            del logits, g
            grad_x[s:s + chunk] = g16 @ w16
            grad_w += (g16.t() @ xc).float()
        ctx.save_for_backward(grad_x, grad_w)
        ctx.w_dtype = w.dtype
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_loss, (grad_w * grad_loss).to(ctx.w_dtype), None, None


class _CheckpointedBlock(nn.Module):
    """A block that keeps only its input for backward and reruns its forward there (full activation
    checkpointing, torch.utils.checkpoint with use_reentrant=False, as torchtitan's full AC)."""

    def __init__(self, block, checkpoint):
        super().__init__()
        self.block, self.checkpoint = block, checkpoint

    def forward(self, x, cos, sin):
        if self.checkpoint:
            return torch.utils.checkpoint.checkpoint(self.block, x, cos, sin, use_reentrant=False)
        return self.block(x, cos, sin)


class LongContextLlama(nn.Module):
    """The Llama module set up for long sequences the way torchtitan trains it on one GPU: each block
    wrapped in full activation checkpointing, then compiled on its own (one graph for all 16 blocks),
    the residual stream in bf16 (torchtitan's FSDP2 mixed precision computes with bf16 parameters),
    and the output layer with a chunked fused cross-entropy (LinearCrossEntropy)."""

    def __init__(self, llama, checkpoint=True, compile=True, ce_chunk_tokens=8192):
        super().__init__()
        self.m, self.ce_chunk_tokens = llama, ce_chunk_tokens
        blocks = [_CheckpointedBlock(b, checkpoint) for b in llama.blocks]
        self.run_blocks = nn.ModuleList(torch.compile(b) if compile else b for b in blocks)

    def forward(self, idx, targets):
        m = self.m
        x = m.tok(idx).to(torch.bfloat16)
        for b in self.run_blocks:
            x = b(x, m.cos, m.sin)
        # bf16 weight: the fused RMSNorm kernel (a bf16 input with an fp32 weight takes the slow path)
        x = F.rms_norm(x, (x.shape[-1],), m.norm.weight.to(x.dtype), m.norm.eps)
        w = m.tok.weight if m.out is None else m.out.weight
        return LinearCrossEntropy.apply(x.reshape(-1, x.shape[-1]), w, targets.reshape(-1), self.ce_chunk_tokens)


SDP_BACKENDS = {-1: "none", 0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def sdpa_backend(heads, groups, head_dim, seq, device):
    """Which SDPA kernel PyTorch picks for causal attention of this shape (bf16), by name: with
    enable_gqa when groups < heads, else plain multi-head."""
    q = torch.randn(1, heads, seq, head_dim, device=device, dtype=torch.bfloat16)
    k = torch.randn(1, groups, seq, head_dim, device=device, dtype=torch.bfloat16)
    kw = {"enable_gqa": True} if groups < heads else {}
    try:
        choice = torch._fused_sdp_choice
    except AttributeError:  # a private function: its absence must not stop the benchmark
        return "unknown"
    try:
        return SDP_BACKENDS.get(int(choice(q, k, k, is_causal=True, **kw)), "?")
    except RuntimeError:  # no kernel takes these inputs with the enabled backends
        return "none"
    except Exception as e:  # noqa: BLE001
        return f"unknown ({type(e).__name__})"


def long_context_tokens_per_second(cfg, iters, warmup, device="cuda", checkpoint=True, compile=True,
                                   ce_chunk_tokens=8192):
    """Trains the Llama of cfg (its seq the sequence length) at micro batch 1 through
    LongContextLlama in train_tokens_per_second's loop; returns (tokens/s over the timed steps,
    peak memory in bytes over the whole run, warm-up and compilation included; NaN off CUDA)."""
    torch.manual_seed(0)
    L, C, H, G, F_, T, V, base, scaling, tied = cfg
    with torch.device(device):  # parameters made and initialised where they train
        llama = Llama(L, C, H, G, F_, T, V, base, scaling, tied)
    model = LongContextLlama(llama.to(device), checkpoint, compile, ce_chunk_tokens)
    return train_tokens_per_second(model, V, T, 1, iters, warmup, compile=False, device=device, reset_peak=False)
