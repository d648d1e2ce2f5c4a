"""Parity with the real thing: a random transformers GPT2LMHeadModel, saved as safetensors, is
loaded by our binary; logits match transformers' to 1e-4 (fp32), and one training step's loss
and every parameter gradient match PyTorch autograd's."""
import subprocess

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

V, C, H, L, P = 300, 48, 4, 2, 32
D = C // H


@pytest.fixture(scope="module")
def probe(build_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_positions=P, n_embd=C, n_layer=L, n_head=H,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).float()
    # Make biases and norms non-trivial so their mapping is exercised too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp / "hf", safe_serialization=True)
    ids = torch.randint(0, V, (2, 16))
    labels = torch.randint(0, V, (2, 16))
    save_file({"input_ids": ids, "labels": labels}, str(tmp / "in.safetensors"))
    r = subprocess.run([str(build_dir / "tools" / "hf_probe"), str(tmp / "hf"), str(tmp / "in.safetensors"),
                        str(tmp / "out.safetensors")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return model, ids, labels, load_file(str(tmp / "out.safetensors"))


def test_logits_match_transformers(probe):
    model, ids, _, out = probe
    model.eval()
    with torch.no_grad():
        ref = model(ids).logits
    assert out["logits"].shape == ref.shape
    assert (out["logits"] - ref).abs().max().item() < 1e-4


def test_training_step_loss_and_gradients_match_pytorch(probe):
    model, ids, labels, out = probe
    model.train()  # dropouts are 0
    model.zero_grad()
    logits = model(ids).logits
    loss = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1))
    loss.backward()
    assert abs(out["loss"].item() - loss.item()) < 1e-5

    sd = {n: p.grad for n, p in model.named_parameters()}

    def ours(name):
        return out["grad." + name]

    def close(a, b, what):
        err = (a - b).norm() / max(b.norm().item(), 1e-12)
        assert err < 1e-4, f"{what}: relative error {err:.2e}"

    close(ours("embedding.word_embeddings.weight")[:V], sd["transformer.wte.weight"], "wte")
    assert ours("embedding.word_embeddings.weight")[V:].abs().max().item() == 0.0
    close(ours("embedding.position_embeddings.weight"), sd["transformer.wpe.weight"], "wpe")
    for l in range(L):
        h, p = f"transformer.h.{l}.", f"decoder.layers.{l}."
        close(ours(p + "input_layernorm.weight"), sd[h + "ln_1.weight"], "ln_1.weight")
        close(ours(p + "input_layernorm.bias"), sd[h + "ln_1.bias"], "ln_1.bias")
        close(ours(p + "pre_mlp_layernorm.weight"), sd[h + "ln_2.weight"], "ln_2.weight")
        # HF c_attn: [in, (q|k|v) x (head, dim)] -> ours [(head, q/k/v, dim), in]
        w = sd[h + "attn.c_attn.weight"].reshape(C, 3, H, D).permute(2, 1, 3, 0).reshape(3 * C, C)
        b = sd[h + "attn.c_attn.bias"].reshape(3, H, D).permute(1, 0, 2).reshape(3 * C)
        close(ours(p + "self_attention.linear_qkv.weight"), w, "c_attn.weight")
        close(ours(p + "self_attention.linear_qkv.bias"), b, "c_attn.bias")
        close(ours(p + "self_attention.linear_proj.weight"), sd[h + "attn.c_proj.weight"].t(), "attn.c_proj.weight")
        close(ours(p + "self_attention.linear_proj.bias"), sd[h + "attn.c_proj.bias"], "attn.c_proj.bias")
        close(ours(p + "mlp.linear_fc1.weight"), sd[h + "mlp.c_fc.weight"].t(), "c_fc.weight")
        close(ours(p + "mlp.linear_fc1.bias"), sd[h + "mlp.c_fc.bias"], "c_fc.bias")
        close(ours(p + "mlp.linear_fc2.weight"), sd[h + "mlp.c_proj.weight"].t(), "mlp.c_proj.weight")
        close(ours(p + "mlp.linear_fc2.bias"), sd[h + "mlp.c_proj.bias"], "mlp.c_proj.bias")
    close(ours("decoder.final_layernorm.weight"), sd["transformer.ln_f.weight"], "ln_f.weight")
    close(ours("decoder.final_layernorm.bias"), sd["transformer.ln_f.bias"], "ln_f.bias")
