"""A tiny Llama (and Qwen 3) against a straightforward PyTorch reference module written here, fp32
on CPU, same weights: our logits match within 1e-5, and the loss and every parameter gradient of one
step match PyTorch autograd's (1e-5 relative). The reference is the textbook architecture (RMSNorm, RoPE in the
rotate-half convention with Llama 3.1 frequency scaling, grouped-query attention by repeating K/V,
SwiGLU, untied output layer); the mapping to our parameter layout (Megatron's fused QKV ordered per
query group, linear_fc1 as [gate; up]) is written out in `to_ours`."""
import json
import math
import subprocess

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

V, VP, C, L, H, G, D, FF, T, B = 300, 304, 32, 2, 8, 2, 8, 64, 16, 2


def rope_freqs(cfg):
    rot = int(D * cfg["rotary_percent"])
    inv = 1.0 / (cfg["rotary_base"] ** (torch.arange(0, rot, 2, dtype=torch.int64).float() / rot))
    if cfg["rope_scaling"]:  # Llama 3.1: low/high frequency factors 1 and 4 over an original 8192
        factor, old, low, high = cfg["rope_scaling_factor"], 8192.0, 1.0, 4.0
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        mid = (wavelen >= old / high) & (wavelen <= old / low)
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate(x, cos, sin, rot):
    xr, xp = x[..., :rot], x[..., rot:]
    x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return torch.cat([xr * torch.cat([cos, cos], -1) + rotated * torch.cat([sin, sin], -1), xp], dim=-1)


def reference_forward(p, ids, cfg):
    eps = cfg["layernorm_epsilon"]
    rot = int(D * cfg["rotary_percent"])
    ang = torch.arange(T).float()[:, None] * rope_freqs(cfg)[None, :]
    cos, sin = ang.cos(), ang.sin()  # [T, rot/2]
    x = p["embed"][ids]
    for l in range(L):
        h = rms(x, p[f"ln1.{l}"], eps)
        q = (h @ p[f"q.{l}"].T + (p[f"qb.{l}"] if cfg["add_qkv_bias"] else 0)).view(B, T, H, D)
        k = (h @ p[f"k.{l}"].T + (p[f"kb.{l}"] if cfg["add_qkv_bias"] else 0)).view(B, T, G, D)
        v = (h @ p[f"v.{l}"].T + (p[f"vb.{l}"] if cfg["add_qkv_bias"] else 0)).view(B, T, G, D)
        if cfg["qk_layernorm"]:
            q, k = rms(q, p[f"qn.{l}"], eps), rms(k, p[f"kn.{l}"], eps)
        q = rotate(q, cos[None, :, None, :], sin[None, :, None, :], rot).transpose(1, 2)
        k = rotate(k, cos[None, :, None, :], sin[None, :, None, :], rot).transpose(1, 2)
        v = v.transpose(1, 2)
        k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, H * D)
        x = x + o @ p[f"o.{l}"].T
        h = rms(x, p[f"ln2.{l}"], eps)
        x = x + (F.silu(h @ p[f"gate.{l}"].T) * (h @ p[f"up.{l}"].T)) @ p[f"down.{l}"].T
    x = rms(x, p["final"], eps)
    return x @ (p["out"] if cfg["untie_embeddings_and_output_weights"] else p["embed"]).T


def reference_params(cfg):
    g = torch.Generator().manual_seed(0)
    r = lambda *s, std=0.2: (torch.randn(*s, generator=g) * std).requires_grad_()
    p = {"embed": r(V, C), "final": (1 + r(C, std=0.1)).detach().requires_grad_(), "out": r(V, C)}
    for l in range(L):
        p.update({f"ln1.{l}": (1 + r(C, std=0.1)).detach().requires_grad_(), f"q.{l}": r(H * D, C),
                  f"k.{l}": r(G * D, C), f"v.{l}": r(G * D, C), f"qb.{l}": r(H * D), f"kb.{l}": r(G * D),
                  f"vb.{l}": r(G * D), f"qn.{l}": (1 + r(D, std=0.1)).detach().requires_grad_(),
                  f"kn.{l}": (1 + r(D, std=0.1)).detach().requires_grad_(), f"o.{l}": r(C, H * D),
                  f"ln2.{l}": (1 + r(C, std=0.1)).detach().requires_grad_(), f"gate.{l}": r(FF, C),
                  f"up.{l}": r(FF, C), f"down.{l}": r(C, FF)})
    return p


def qkv_fused(q, k, v):
    """Megatron's linear_qkv layout: per query group, its H/G query heads, then its key and value head."""
    q = q.reshape(G, H // G, D, *q.shape[1:])
    k, v = k.reshape(G, 1, D, *k.shape[1:]), v.reshape(G, 1, D, *v.shape[1:])
    return torch.cat([q, k, v], dim=1).reshape((H + 2 * G) * D, *q.shape[3:])


def to_ours(p, cfg):
    pad = lambda w: torch.cat([w, torch.zeros(VP - V, C)])
    out = {"embedding.word_embeddings.weight": pad(p["embed"]), "decoder.final_layernorm.weight": p["final"]}
    if cfg["untie_embeddings_and_output_weights"]:
        out["output_layer.weight"] = pad(p["out"])
    for l in range(L):
        pre = f"decoder.layers.{l}."
        out[pre + "input_layernorm.weight"] = p[f"ln1.{l}"]
        out[pre + "self_attention.linear_qkv.weight"] = qkv_fused(p[f"q.{l}"], p[f"k.{l}"], p[f"v.{l}"])
        if cfg["add_qkv_bias"]:
            out[pre + "self_attention.linear_qkv.bias"] = qkv_fused(p[f"qb.{l}"], p[f"kb.{l}"], p[f"vb.{l}"])
        if cfg["qk_layernorm"]:
            out[pre + "self_attention.q_layernorm.weight"] = p[f"qn.{l}"]
            out[pre + "self_attention.k_layernorm.weight"] = p[f"kn.{l}"]
        out[pre + "self_attention.linear_proj.weight"] = p[f"o.{l}"]
        out[pre + "pre_mlp_layernorm.weight"] = p[f"ln2.{l}"]
        out[pre + "mlp.linear_fc1.weight"] = torch.stack([p[f"gate.{l}"], p[f"up.{l}"]])
        out[pre + "mlp.linear_fc2.weight"] = p[f"down.{l}"]
    return {k: v.detach().contiguous().float() for k, v in out.items()}


CONFIGS = {
    "llama31": dict(rope_scaling=True, rotary_base=10000.0, rotary_percent=1.0, qk_layernorm=False,
                    add_qkv_bias=False, untie_embeddings_and_output_weights=True),
    "llama_partial_rotary_tied": dict(rope_scaling=False, rotary_base=500000.0, rotary_percent=0.5,
                                      qk_layernorm=False, add_qkv_bias=False,
                                      untie_embeddings_and_output_weights=False),
    "qwen3_qkvbias": dict(rope_scaling=False, rotary_base=1000000.0, rotary_percent=1.0, qk_layernorm=True,
                          add_qkv_bias=True, untie_embeddings_and_output_weights=True),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def run(request, build_dir, tmp_path_factory):
    name = request.param
    cfg = dict(CONFIGS[name], rope_scaling_factor=8.0, layernorm_epsilon=1e-5)
    tmp = tmp_path_factory.mktemp(name)
    ours_cfg = dict(num_layers=L, hidden_size=C, ffn_hidden_size=FF, num_attention_heads=H, num_query_groups=G,
                    kv_channels=D, seq_length=T, vocab_size=V, padded_vocab_size=VP, normalization="RMSNorm",
                    swiglu=True, add_bias_linear=False, position_embedding_type="rope", **cfg)
    (tmp / "config.json").write_text(json.dumps(ours_cfg))
    p = reference_params(cfg)
    save_file(to_ours(p, cfg), str(tmp / "weights.safetensors"))
    g = torch.Generator().manual_seed(1)
    ids, labels = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)
    save_file({"input_ids": ids, "labels": labels}, str(tmp / "in.safetensors"))
    r = subprocess.run([str(build_dir / "tools" / "model_probe"), str(tmp / "config.json"),
                        str(tmp / "weights.safetensors"), str(tmp / "in.safetensors"), str(tmp / "out.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    logits = reference_forward(p, ids, cfg)
    loss = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1))
    loss.backward()
    grads = to_ours({k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in p.items()}, cfg)
    return cfg, logits.detach(), loss.item(), grads, load_file(str(tmp / "out.safetensors"))


def test_logits_match_the_pytorch_reference(run):
    _, logits, _, _, out = run
    diff = (out["logits"] - logits).abs().max().item()
    assert diff <= 1e-5 * max(1.0, logits.abs().max().item()), diff


def test_loss_and_every_gradient_match_autograd(run):
    _, _, loss, grads, out = run
    assert abs(out["loss"].item() - loss) <= 1e-5 * abs(loss)
    for name, want in grads.items():
        got = out["grad." + name]
        assert got.shape == want.shape, name
        err = (got - want).norm().item() / max(want.norm().item(), 1e-12)
        assert err <= 1e-5, f"{name}: relative error {err:.3g}"  # fp32: 1.7e-6 seen
