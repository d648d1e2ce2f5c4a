#!/usr/bin/env python3
"""Long-context training on one GPU (issue 20, "Speed and reach"): megatron.cpp vs PyTorch, the
Llama-3.2-1B shape (16 layers, hidden 2048, 32 heads in 8 KV groups, SwiGLU ffn 8192, vocab 128,256,
RoPE base 500,000 with Llama 3.1 scaling, tied embeddings, RMSNorm) in bf16 at micro batch 1 and
sequence lengths 16k, 32k, 64k and 128k, mock data (random tokens), one invocation on one GPU.

Ours: `megatron train` with the recompute setting chosen per length: the options of
--recompute-options are tried in order (default: none; Megatron's selective recomputation of the
norms and the MLP, `--recompute-granularity selective --recompute-modules layernorm mlp`, which
drops the MLP's 3 x ffn activations for one more MLP forward, cheap at long lengths where attention
dominates (core_attn is left out: our attention never keeps its T x T probabilities, so rerunning it
would save little and cost a third more attention); full recomputation of every layer,
`--recompute-granularity full --recompute-method uniform --recompute-num-layers 1`) and the first
that fits is kept; a length starts from the option that fitted the length before (memory grows with
length). A run that runs out of device memory (the trainer's "CUDA out of memory" user error) counts
as "does not fit"; any other exit code 2 (a user error, such as a flag this build does not know) is
reported as "rejected" and the next option is tried; a crash is "error", a run past --run-timeout
"timeout". The output layer and loss run over chunks of --ce-chunk-tokens tokens
(--cross-entropy-chunks), so the logits never take tokens x vocab (32 GiB in bf16 at 128k).

Peer: the same module in PyTorch (bench/torch_llama.py, torchtitan's recipe on one GPU): full
activation checkpointing of every block (torch.utils.checkpoint, use_reentrant=False) and each block
torch.compile'd, the residual stream in bf16, SDPA with enable_gqa (never the math kernel: it would
build the T x T score matrix), fused AdamW, bf16 autocast, and the output layer with a chunked fused
cross-entropy (Liger-Kernel's method in plain PyTorch: gradients made in the forward pass, one chunk
of --ce-chunk-tokens tokens' logits alive at a time, nothing recomputed). One subprocess per length,
so an out-of-memory run leaves nothing behind for the next.

Steps: --warmup 2 + --iters 3 per run, and 1 + 2 from --long-from 131072 on (a 128k step takes ~10 s
on an H100). Numbers: tokens/s over the timed iterations (warm-up excluded); TFLOP/s and MFU (vs 989
TFLOP/s bf16 dense) from model FLOPs with the attention counted causally (6 s H D per layer and
token, half of the dense count megatron.cpp's log line uses; recomputation not counted); peak
memory: ours the trainer's "peak device memory in tensors", PyTorch's
torch.cuda.max_memory_allocated, both over the whole run. Ours also records the start-up
"theoretical memory footprint" and a predicted peak when the log prints one. A --time-budget
(seconds for the whole benchmark) skips a run whose estimated time (from the FLOPs and the rate seen
so far) does not fit what is left, and cuts a run at it.

  python3 bench/long_context_gpu_vs_pytorch.py [--seqs 16384,32768,65536,131072] [--warmup 2 --iters 3]
      [--time-budget 480] [--out result.json] [--recompute-options='none;--recompute-gelu;...'] [--ours-args=...]
  python3 bench/long_context_gpu_vs_pytorch.py --smoke --build-dir build-cpu   # the whole flow on CPU, tiny
  LONG_CONTEXT_BENCH=1 CTEST=0 TRAIN=0 SANITIZE=0 BENCH=0 GENERATE=0 BUILD_TARGET=megatron scripts/device-test.sh

Targets (issue 20): at least 2x PyTorch's longest trainable length, and >= 1.2x its tokens/s at every
length where both run. The longest lengths are those of the grid tried; where a side trained every
length tried, its reach is only a lower bound (--reach-seqs tries longer ones with --reach-iters).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import megatron_run  # noqa: E402
from megatron_run import LLAMA_MODELS, PEAK, llama_flops_per_token, llama_train_flags  # noqa: E402

SELECTIVE = "--recompute-granularity selective --recompute-modules layernorm mlp"
FULL = "--recompute-granularity full --recompute-method uniform --recompute-num-layers 1"
DEFAULT_RECOMPUTE = f"none;{SELECTIVE};{FULL}"
# The smoke test's ladder: full recomputation is rejected by a build without it (exit code 2,
# reported as rejected, not as "does not fit"), then --recompute-gelu (built today) is used.
SMOKE_RECOMPUTE = f"none;{FULL};--recompute-gelu"
# layers, hidden, heads, groups, ffn, seq (set per run), vocab, rope base, rope scaling, tied
SMOKE_MODEL = (2, 64, 4, 2, 256, 0, 1024, 500000.0, 32.0, True)
# The smoke test's memory cap (host tensors there): between the peaks of no recomputation (9.4 MiB)
# and of --recompute-gelu (9.2 MiB) at 512 tokens, so the ladder is walked down to the fallback.
SMOKE_CAP_GIB = 9.3 / 1024
# Time per step relative to no recomputation, for the time estimates only.
SLOWDOWN = {"none": 1.0, "selective": 1.15, "full": 1.4}
PEER_MARK = "PEER_RESULT "


def slowdown(option):
    return SLOWDOWN["full"] if "full" in option else SLOWDOWN["selective"] if \
        ("selective" in option or "recompute-gelu" in option) else 1.0


def gpu_info():
    """(name, total memory in GiB) of GPU 0 from nvidia-smi (the parent never touches CUDA, so the
    runs have the whole card), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        name, mib = [s.strip() for s in out[0].split(",")]
        return name, float(mib) / 1024.0
    except Exception:  # noqa: BLE001 (no nvidia-smi, no GPU: the smoke test on CPU)
        return None


def peer_child(spec):
    """The PyTorch side of one length, in its own process: prints PEER_RESULT {json}."""
    import torch

    import torch_llama

    L, C, H, G, F_, T, V, base, scaling, tied = spec["cfg"]
    dev = spec["device"]
    res = {"torch": torch.__version__, "device": dev, "checkpoint": spec["checkpoint"], "compile": spec["compile"]}
    code = 0
    try:
        # one compiled graph serves every block (parameters are graph inputs); should a PyTorch
        # guard on each block instead, let all of them compile rather than fall back to eager
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 2 * L + 8)
        if dev == "cuda":
            torch.backends.cuda.enable_math_sdp(False)  # never the T x T score matrix
            res["gpu"] = torch.cuda.get_device_name()
            res["sdpa_backend"] = torch_llama.sdpa_backend(H, G, C // H, min(T, 4096), dev)
            if res["sdpa_backend"] == "none":  # no fused kernel takes enable_gqa here: repeat K/V
                torch_llama.Block.repeat_kv = True
                res["sdpa_backend"] = torch_llama.sdpa_backend(H, H, C // H, min(T, 4096), dev) + " (K/V repeated)"
        t0 = time.time()
        tps, peak = torch_llama.long_context_tokens_per_second(
            spec["cfg"], spec["iters"], spec["warmup"], device=dev, checkpoint=spec["checkpoint"],
            compile=spec["compile"], ce_chunk_tokens=spec["ce_chunk_tokens"])
        res.update(status="ok", tokens_per_s=tps, peak_gib=None if math.isnan(peak) else peak / 2**30,
                   run_s=round(time.time() - t0, 1))
    except Exception as e:  # noqa: BLE001 (torch.OutOfMemoryError, or one wrapped by the compiler)
        msg = f"{type(e).__name__}: {e}"
        res.update(status="oom" if megatron_run.OOM_PATTERN.search(msg) else "error", error=msg[:600])
        code = 3
    print(PEER_MARK + json.dumps(res), flush=True)
    return code


class Bench:
    def __init__(self, a):
        self.a = a
        self.t0 = time.time()
        self.dev = "cpu" if a.smoke else "cuda"
        self.shape = SMOKE_MODEL if a.smoke else LLAMA_MODELS[a.model][:10]
        self.options = {"ours": [o.strip() for o in a.recompute_options.split(";") if o.strip()],
                        "peer": [o.strip() for o in a.peer_options.split(";") if o.strip()]}
        for o in self.options["peer"]:
            if o not in ("full", "none"):
                sys.exit(f"--peer-options: '{o}' is not full or none")
        # time estimates, refined by each run: model FLOP/s and start-up seconds per side
        self.rate = {"ours": 3.5e14, "peer": 3.0e14} if self.dev == "cuda" else {"ours": 3e8, "peer": 1e8}
        self.startup = {"ours": 20.0, "peer": 90.0} if self.dev == "cuda" else {"ours": 2.0, "peer": 150.0}
        self.fit_index = {"ours": 0, "peer": 0}  # the option that fitted the last length
        self.failed_at = {"ours": None, "peer": None}  # the shortest length where no option fitted
        self.result = {"benchmark": "long_context_gpu_vs_pytorch", "smoke": a.smoke, "date": time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": self.commit(), "lengths": [],
            "settings": {k: v for k, v in vars(a).items() if k != "peer_child"}}
        info = gpu_info() if self.dev == "cuda" else None
        self.result["device"] = {"name": info[0], "memory_gib": round(info[1], 2)} if info else {"name": "cpu"}
        L, C, H, G, F_, _, V, base, scaling, tied = self.shape
        self.result["model"] = dict(layers=L, hidden=C, heads=H, groups=G, ffn=F_, vocab=V, rope_base=base,
                                    rope_scaling=scaling, tied=tied, micro_batch=1, dtype="bf16")

    @staticmethod
    def commit():
        try:
            return subprocess.run(["git", "-C", HERE, "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None
        except Exception:  # noqa: BLE001
            return None

    def left(self):
        return math.inf if self.a.time_budget <= 0 else self.a.time_budget - (time.time() - self.t0)

    def cfg(self, seq):
        L, C, H, G, F_, _, V, base, scaling, tied = self.shape
        return (L, C, H, G, F_, seq, V, base, scaling, tied)

    def flops_per_token(self, seq):
        L, C, H, G, F_, _, V, *_ = self.shape
        return llama_flops_per_token(L, C, H, G, F_, seq, V, causal=True)

    def steps(self, seq, reach):
        a = self.a
        if reach:
            return a.reach_warmup, a.reach_iters
        if a.long_from and seq >= a.long_from:
            return a.long_warmup, a.long_iters
        return a.warmup, a.iters

    def estimate(self, side, seq, option, steps):
        return self.startup[side] + steps * seq * self.flops_per_token(seq) * slowdown(option) / self.rate[side]

    def learn(self, side, seq, option, steps_total, step_s, wall):
        """Refines the rate and start-up estimates from a run that trained."""
        if step_s and step_s > 0:
            self.rate[side] = seq * self.flops_per_token(seq) * slowdown(option) / step_s
            self.startup[side] = max(1.0, wall - steps_total * step_s)

    def ours_cmd(self, seq, option, warmup, iters):
        a = self.a
        L, C, H, G, F_, _, V, base, scaling, tied = self.shape
        chunks = max(1, math.ceil(seq / a.ce_chunk_tokens))
        cmd = [os.path.join(a.build_dir, "megatron"), "train", "--device", self.dev, "--bf16", "--mock-data",
               *llama_train_flags(L, C, H, G, F_, V, base, scaling, tied), "--seq-length", str(seq),
               "--max-position-embeddings", str(seq if a.smoke else max(seq, 131072)), "--micro-batch-size", "1",
               "--global-batch-size", "1", "--train-iters", str(warmup + iters), "--log-interval", "1",
               "--eval-iters", "0", "--lr", "3e-4", "--lr-decay-style", "constant"]
        if chunks > 1:
            cmd += ["--cross-entropy-chunks", str(chunks)]
        return cmd + ([] if option == "none" else option.split()) + a.ours_args.split()

    def run_ours(self, seq, option, warmup, iters):
        env = dict(os.environ)
        if self.dev == "cpu":
            env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
        r = megatron_run.run_train(self.ours_cmd(seq, option, warmup, iters), self.timeout(), env)
        ms = r["iter_ms"][warmup:] if len(r["iter_ms"]) > warmup else r["iter_ms"][-1:]
        r["step_s"] = sum(ms) / len(ms) / 1000.0 if ms else None
        r["tokens_per_s"] = seq / r["step_s"] if r["step_s"] else None
        # peak memory: the device's tensors; on CPU (the smoke test) the host's tensors
        r["peak"] = r["peak_gib"] if self.dev == "cuda" else (
            r["peak_host_mib"] / 1024.0 if r["peak_host_mib"] is not None else None)
        if r["status"] == "ok" and not r["step_s"]:
            r["status"], r["error"] = "error", "no iteration line in the log"
        r.pop("lm_loss", None)
        return r

    def run_peer(self, seq, option, warmup, iters):
        a = self.a
        spec = {"cfg": self.cfg(seq), "iters": iters, "warmup": warmup, "device": self.dev,
                "checkpoint": option == "full", "compile": not a.peer_eager, "ce_chunk_tokens": a.ce_chunk_tokens}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.dev == "cpu":
            env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
        rc, out, wall = megatron_run.run_logged([sys.executable, os.path.abspath(__file__), "--peer-child",
                                                 json.dumps(spec)], self.timeout(), env)
        r = None
        for line in out.splitlines():
            if line.startswith(PEER_MARK):
                r = json.loads(line[len(PEER_MARK):])
        if r is None:  # killed, or died before it could say (a CUDA error, the host's OOM killer)
            r = {"status": megatron_run.classify(rc if rc != 0 else 1, out, rc is None),
                 "error": "killed at the time limit" if rc is None else megatron_run.error_line(out)}
        r["rc"], r["wall_s"] = rc, round(wall, 1)
        if r["status"] != "ok":
            r["log_tail"] = "\n".join(out.strip().splitlines()[-25:])
        tps = r.get("tokens_per_s")
        r["step_s"] = seq / tps if tps else None
        r["peak"] = r.get("peak_gib")
        return r

    def timeout(self):
        t = self.a.run_timeout
        left = self.left()
        return max(1.0, min(t, left - 5.0)) if left < math.inf else t

    def side(self, side, seq, reach):
        """Runs one side at one length down its option ladder; returns the length's record."""
        warmup, iters = self.steps(seq, reach)
        rec = {"status": None, "attempts": [], "warmup": warmup, "iters": iters}
        if self.failed_at[side] is not None:
            rec["status"] = f"skipped: did not fit at {self.failed_at[side]}"
            return rec
        opts = self.options[side]
        statuses = []
        for i in range(self.fit_index[side], len(opts)):
            option = opts[i]
            est = self.estimate(side, seq, option, warmup + iters)
            if est > self.left():
                rec["attempts"].append({"option": option, "status": "skipped: time budget",
                                        "estimated_s": round(est, 1), "left_s": round(self.left(), 1)})
                statuses.append("budget")
                print(f"  [{'PyTorch' if side == 'peer' else 'ours'} {seq}] {option}: skipped, an estimated "
                      f"{est:.0f} s with {self.left():.0f} s of the time budget left", flush=True)
                break
            r = (self.run_ours if side == "ours" else self.run_peer)(seq, option, warmup, iters)
            r["option"] = option
            cap = self.a.memory_cap_gib
            if r["status"] == "ok" and cap and r["peak"] is not None and r["peak"] > cap:
                r["status"] = "over_cap"
                r["error"] = f"peak {fmt_gib(r['peak'])} over --memory-cap-gib ({fmt_gib(cap)})"
            rec["attempts"].append(r)
            statuses.append(r["status"])
            label = "PyTorch" if side == "peer" else "ours"
            what = option if side == "ours" else f"{option} activation checkpointing"
            tail = (f"{r['tokens_per_s']:.0f} tokens/s, peak {fmt_gib(r['peak'])}" if r["status"] == "ok"
                    else r.get("error", ""))
            print(f"  [{label} {seq}] {what}: {r['status']} ({r['wall_s']} s) {tail}", flush=True)
            if r["status"] == "ok":
                self.learn(side, seq, option, warmup + iters, r["step_s"], r["wall_s"])
                self.fit_index[side] = i
                rec.update(status="ok", recompute=option, tokens_per_s=r["tokens_per_s"], step_s=r["step_s"],
                           peak_gib=r["peak"])
                rec["peak_of"] = "device tensors" if self.dev == "cuda" else "host tensors"
                if r.get("log_tflops"):  # ours: the log line's TFLOP/s (dense attention count), timed iterations
                    t = r["log_tflops"][warmup:] or r["log_tflops"][-1:]
                    rec["log_tflops_dense_count"] = sum(t) / len(t)
                for k in ("theoretical_mib", "predicted_peak_gib", "predicted_peak_line", "sdpa_backend", "gpu",
                          "torch"):
                    if r.get(k) is not None:
                        rec[k] = r[k]
                tf = r["tokens_per_s"] * self.flops_per_token(seq) / 1e12
                rec.update(tflops=tf, mfu=tf * 1e12 / PEAK)
                return rec
            if r["status"] == "timeout":
                break  # more recomputation only takes longer
        no_fit = [x for x in statuses if x in ("oom", "over_cap")]
        if "budget" in statuses:
            rec["status"] = "skipped: time budget"
        elif no_fit and all(x in ("oom", "over_cap", "rejected") for x in statuses):
            # every option left either ran out of memory or was refused by this build
            rec["status"] = "does not fit"
            self.failed_at[side] = seq
        elif statuses and all(x == "rejected" for x in statuses):
            rec["status"] = "rejected"
        else:
            rec["status"] = "failed: " + ", ".join(statuses)
        return rec

    def write(self):
        if not self.a.out:
            return
        tmp = self.a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.result, f, indent=1, default=str)
        os.replace(tmp, self.a.out)

    def run(self):
        a = self.a
        d = self.result["device"]
        L, C, H, G, F_, _, V, base, scaling, tied = self.shape
        print(f"model: {L} layers, hidden {C}, heads {H} in {G} groups, ffn {F_} (SwiGLU), vocab {V}, "
              f"{'tied' if tied else 'untied'}, RoPE {base:g} (scaling {scaling:g}), micro batch 1, bf16; device "
              f"{d['name']}" + (f" ({d['memory_gib']:.1f} GiB)" if "memory_gib" in d else "") +
              (f"; memory cap {fmt_gib(a.memory_cap_gib)}" if a.memory_cap_gib else "") +
              (f"; time budget {a.time_budget:.0f} s" if a.time_budget > 0 else ""), flush=True)
        print(f"ours: recompute options in order: {' | '.join(self.options['ours'])}; cross-entropy in chunks of "
              f"{a.ce_chunk_tokens} tokens", flush=True)
        print(f"PyTorch: {' | '.join(self.options['peer'])} activation checkpointing, "
              f"{'eager' if a.peer_eager else 'torch.compile per block'}, chunked fused cross-entropy "
              f"({a.ce_chunk_tokens} tokens)", flush=True)
        plan = [(s, False) for s in sorted(a.seqs)] + [(s, True) for s in sorted(a.reach_seqs) if s not in a.seqs]
        for seq, reach in plan:
            print(f"seq {seq}{' (reach only)' if reach else ''}: {self.left():.0f} s of the budget left"
                  if self.left() < math.inf else f"seq {seq}{' (reach only)' if reach else ''}", flush=True)
            entry = {"seq": seq, "reach_only": reach, "flops_per_token_causal": self.flops_per_token(seq)}
            self.result["lengths"].append(entry)
            for side in ("ours", "peer"):
                if side == "peer" and a.skip_pytorch:
                    entry[side] = {"status": "skipped: --skip-pytorch", "attempts": []}
                    continue
                entry[side] = self.side(side, seq, reach)
                self.write()
            o, p = entry["ours"], entry["peer"]
            if o["status"] == "ok" and p["status"] == "ok":
                entry["ratio"] = o["tokens_per_s"] / p["tokens_per_s"]
            self.write()
        self.summarize()
        self.write()

    def summarize(self):
        a, res = self.a, self.result
        print("\n| seq | ours tokens/s | MFU | peak GiB | recompute | PyTorch tokens/s | MFU | peak GiB "
              "| ours / PyTorch |")
        print("|---|---|---|---|---|---|---|---|---|")
        for e in res["lengths"]:
            ratio = f"{e['ratio']:.2f}x" if "ratio" in e else "-"
            print(f"| {e['seq']}{' (reach)' if e['reach_only'] else ''} | {cells(e['ours'], True)} | "
                  f"{cells(e['peer'], False)} | {ratio} |")
        longest = {s: max([e["seq"] for e in res["lengths"] if e[s]["status"] == "ok"], default=None)
                   for s in ("ours", "peer")}
        failed = {s: self.failed_at[s] for s in ("ours", "peer")}
        res["longest"] = longest
        res["does_not_fit_at"] = failed
        for s, name in (("ours", "megatron.cpp"), ("peer", "PyTorch")):
            bound = "" if failed[s] or not longest[s] else " (trained every length it ran: a lower bound)"
            print(f"longest trainable, {name}: {longest[s] or 'none'}" +
                  (f"; does not fit at {failed[s]}" if failed[s] else bound))
        # targets
        ratios = [(e["seq"], e["ratio"]) for e in res["lengths"] if "ratio" in e and not e["reach_only"]]
        if ratios:
            met = all(r >= 1.2 for _, r in ratios)
            speed = ("met" if met else "not met") + ": " + ", ".join(f"{s}: {r:.2f}x" for s, r in ratios)
        else:
            met, speed = None, "not shown: no length where both ran"
        lo, lp = longest["ours"], longest["peer"]
        reach_ratio = lo / lp if lo and lp else None
        if lo and not lp and failed["peer"]:
            reach_met, reach = True, f"met: PyTorch trains none of the lengths tried, megatron.cpp {lo}"
        elif reach_ratio is None:
            reach_met, reach = None, "not shown: " + ("megatron.cpp trained no length" if not lo else
                                                      "PyTorch was not run to its limit")
        elif reach_ratio >= 2 and failed["peer"]:
            reach_met, reach = True, (f"met: {lo} vs {lp} = {reach_ratio:.1f}x "
                                      f"(PyTorch does not fit at {failed['peer']})")
        elif reach_ratio >= 2:
            reach_met, reach = None, (f"not shown: {lo} vs {lp} = {reach_ratio:.1f}x, "
                                      "but PyTorch did not reach its limit")
        elif not failed["peer"]:
            reach_met, reach = None, (f"not shown: PyTorch trained every length it ran (up to {lp}); "
                                      "add longer ones with --reach-seqs")
        elif failed["ours"] and failed["ours"] <= 2 * lp:
            reach_met, reach = False, (f"not met: {lo} vs {lp} = {reach_ratio:.1f}x "
                                       f"(megatron.cpp does not fit at {failed['ours']})")
        else:
            reach_met, reach = None, (f"not shown: {lo} vs {lp} = {reach_ratio:.1f}x, megatron.cpp not run to "
                                      f"{2 * lp}; add it with --reach-seqs")
        res["targets"] = {"tokens_per_s_ge_1.2x": {"met": met, "ratios": dict(ratios), "text": speed},
                          "longest_ge_2x": {"met": reach_met, "ratio": reach_ratio, "text": reach}}
        print(f"ratio of longest trainable lengths: " + (f"{reach_ratio:.2f}x" if reach_ratio else "-"))
        print(f"target >= 2x PyTorch's longest trainable length: {reach}")
        print(f"target >= 1.2x PyTorch's tokens/s where both run: {speed}")
        print(f"total {time.time() - self.t0:.0f} s" + (f"; result: {a.out}" if a.out else ""), flush=True)


def short(option):
    """A recompute option for the table: '--recompute-granularity full --recompute-method uniform
    --recompute-num-layers 1' -> 'full, method uniform, num-layers 1'."""
    return option.replace("--recompute-granularity ", "").replace(" --recompute-", ", ").replace("--recompute-", "")


def fmt_gib(x):
    return "n/a" if x is None else f"{x:.2f} GiB" if x >= 1 else f"{x * 1024:.1f} MiB"


def cells(r, ours):
    if r["status"] != "ok":
        return " | ".join([r["status"]] + ["-"] * (3 if ours else 2))
    c = [f"{r['tokens_per_s']:.0f}", f"{100 * r['mfu']:.1f}%", "n/a" if r["peak_gib"] is None else
         f"{r['peak_gib']:.2f}" if r["peak_gib"] >= 1 else f"{r['peak_gib']:.2g}"]
    return " | ".join(c + [short(r["recompute"])] if ours else c)


def lengths(s):
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=LLAMA_MODELS, default="llama3.2-1b")
    ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
    ap.add_argument("--seqs", type=lengths, default=None, help="timed lengths (default 16384,32768,65536,131072)")
    ap.add_argument("--reach-seqs", type=lengths, default=[],
                    help="longer lengths tried for reach only, --reach-warmup + --reach-iters steps (default none)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--long-from", type=int, default=131072,
                    help="from this length on, --long-warmup + --long-iters steps (0: never)")
    ap.add_argument("--long-warmup", type=int, default=1)
    ap.add_argument("--long-iters", type=int, default=2)
    ap.add_argument("--reach-warmup", type=int, default=0)
    ap.add_argument("--reach-iters", type=int, default=1)
    ap.add_argument("--recompute-options", default=None,
                    help="our recompute settings, ';'-separated flag strings tried in order, 'none' for no flags "
                         f"(default '{DEFAULT_RECOMPUTE}'; pass it with '=')")
    ap.add_argument("--peer-options", default="full",
                    help="PyTorch's activation checkpointing, ';'-separated, tried in order: full and/or none")
    ap.add_argument("--ce-chunk-tokens", type=int, default=4096,
                    help="tokens per chunk of the output layer and loss, both sides")
    ap.add_argument("--ours-args", default="", help="extra megatron train flags for every run of ours")
    ap.add_argument("--memory-cap-gib", type=float, default=0,
                    help="a run whose peak exceeds this counts as not fitting (0: the card's own limit only)")
    ap.add_argument("--time-budget", type=float, default=0, help="seconds for the whole benchmark (0: none)")
    ap.add_argument("--run-timeout", type=float, default=360, help="seconds for one run")
    ap.add_argument("--skip-pytorch", action="store_true")
    ap.add_argument("--peer-eager", action="store_true", help="PyTorch without torch.compile")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, a tiny model (2 layers, hidden 64) at 256 and 512 tokens: the whole flow, for tests")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    if a.smoke:
        a.seqs = a.seqs or [256, 512]
        a.recompute_options = a.recompute_options or SMOKE_RECOMPUTE
        a.warmup, a.iters = min(a.warmup, 1), min(a.iters, 2)
        a.long_from = 0
        if a.ce_chunk_tokens == 4096:
            a.ce_chunk_tokens = 128
        if not a.memory_cap_gib:
            a.memory_cap_gib = SMOKE_CAP_GIB
    a.seqs = a.seqs or [16384, 32768, 65536, 131072]
    a.recompute_options = a.recompute_options or DEFAULT_RECOMPUTE
    if a.iters < 1 or a.warmup < 0 or a.long_iters < 1 or a.reach_iters < 1:
        ap.error("--iters, --long-iters and --reach-iters must be at least 1, the warm-ups at least 0")
    return a


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--peer-child":
        return peer_child(json.loads(sys.argv[2]))
    a = parse_args()
    if not os.path.exists(os.path.join(a.build_dir, "megatron")):
        sys.exit(f"no megatron binary in --build-dir {a.build_dir}")
    Bench(a).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
