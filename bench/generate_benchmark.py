#!/usr/bin/env python3
"""Generation speed on one GPU: `megatron generate` against transformers' generate with a static
KV cache and torch.compile (transformers compiles the decoding forward itself when the cache is
static, mode "reduce-overhead": CUDA graphs; the fastest setting it offers), in one invocation.

The model is Llama-3.2-1B-shaped with random weights (16 layers, hidden 2048, 32 heads in 8 KV
groups, SwiGLU 8192, vocabulary 128256, tied, RoPE theta 500000 with Llama 3 scaling), saved with
save_pretrained in bf16 to a temporary directory and loaded by both. For batch 1 and 16: a
128-token prompt per sequence, 256 new tokens (end-of-sequence ignored), greedy, bf16.
  time to first token: from the call until the first new token of every sequence is on the host;
  decode tokens/s: batch x 255 tokens over the time from the first new token to the last.
Ours are read from `megatron generate --timing` (after --warmup runs: GEMM autotuning); theirs
are timed with a streamer around one generate call after two warm-up calls (compilation).

  python3 bench/generate_benchmark.py [--build-dir build] [--batches 1,16] [--skip-hf]
  python3 bench/generate_benchmark.py --device cpu --tiny   # a smoke run of this script on the CPU
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PROMPT, NEW = 128, 256
CONFIG = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
              num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
              rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
              rope_parameters={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
                               "rope_theta": 500000.0})

ap = argparse.ArgumentParser()
ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
ap.add_argument("--batches", default="1,16")
ap.add_argument("--warmup", type=int, default=1, help="our unprinted runs before the timed one")
ap.add_argument("--skip-hf", action="store_true")
ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the script (no timing worth reading)")
ap.add_argument("--tiny", action="store_true", help="2 layers, hidden 64, vocabulary 512, 8 new tokens")
args = ap.parse_args()
if args.tiny:
    CONFIG.update(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, bos_token_id=1, eos_token_id=2)
    NEW = 8
dev = torch.device(args.device)
batches = [int(b) for b in args.batches.split(",")]


def prompts(batch):
    g = torch.Generator().manual_seed(batch)
    return torch.randint(0, CONFIG["vocab_size"], (batch, PROMPT), generator=g)


def ours(model_dir, batch):
    cmd = [os.path.join(args.build_dir, "megatron"), "generate", "--load-hf", model_dir, "--device", args.device, "--bf16",
           "--max-new-tokens", str(NEW), "--ignore-eos", "--output-token-ids", "--timing", "--warmup",
           str(args.warmup)]
    for p in prompts(batch).tolist():
        cmd += ["--prompt-token-ids", ",".join(map(str, p))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"megatron generate failed ({r.returncode}):\n{r.stderr[-3000:]}")
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("timing: ")][-1]
    t = dict(kv.split("=") for kv in line.removeprefix("timing: ").split())
    tokens = [[int(x) for x in ln.split(",")] for ln in r.stdout.strip().splitlines()]
    return float(t["ttft_ms"]), float(t["decode_tokens_per_s"]), tokens


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


class FirstTokenClock:
    """A generate streamer: put() gets the prompt first, then each step's new tokens."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            self.first = time.perf_counter()

    def end(self):
        pass


def theirs(model, batch):
    ids = prompts(batch).to(dev)
    kw = dict(do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW, cache_implementation="static",
              pad_token_id=0, attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        for _ in range(2):  # compilation, CUDA graph capture
            model.generate(ids, **kw)
        sync()
        clock = FirstTokenClock()
        t0 = time.perf_counter()
        out = model.generate(ids, streamer=clock, **kw)
        sync()
        t1 = time.perf_counter()
    ttft_ms = (clock.first - t0) * 1e3
    return ttft_ms, batch * (NEW - 1) / (t1 - clock.first), out[:, PROMPT:].tolist()


device_name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
print(f"torch {torch.__version__}, {device_name}; {'tiny' if args.tiny else 'Llama-3.2-1B'} shape (random weights), "
      f"bf16, prompt {PROMPT}, {NEW} new tokens, greedy", flush=True)
with tempfile.TemporaryDirectory() as tmp:
    torch.manual_seed(0)
    with dev:
        model = LlamaForCausalLM(LlamaConfig(**CONFIG)).to(torch.bfloat16)
    model.save_pretrained(tmp, safe_serialization=True)
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    results = {}
    for b in batches:
        results[b] = ours(tmp, b)
        print(f"megatron.cpp batch {b:2d}: time to first token {results[b][0]:8.2f} ms, decode "
              f"{results[b][1]:9.1f} tokens/s", flush=True)
    if args.skip_hf:
        sys.exit(0)

    import transformers
    model = LlamaForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16).to(dev).eval()
    print(f"transformers {transformers.__version__}: static cache, torch.compile (reduce-overhead)", flush=True)
    print(f"{'batch':>5} | {'ours TTFT ms':>12} | {'HF TTFT ms':>10} | {'ours tok/s':>10} | {'HF tok/s':>9} | "
          f"{'decode ratio':>12} | {'TTFT ratio':>10} | same first tokens")
    for b in batches:
        ttft, tps, toks = results[b]
        httft, htps, htoks = theirs(model, b)
        same = 0  # leading new tokens of sequence 0 that agree (bf16 on random weights: near-ties flip)
        while same < NEW and toks[0][same] == htoks[0][same]:
            same += 1
        print(f"{b:5d} | {ttft:12.2f} | {httft:10.2f} | {tps:10.1f} | {htps:9.1f} | {tps / htps:11.2f}x | "
              f"{httft / ttft:9.2f}x | {same}/{NEW}", flush=True)
