"""Running `megatron train` from a benchmark and reading its log: shared by the single-GPU
benchmarks against PyTorch (bench/gpt_gpu_vs_pytorch.py, bench/llama_gpu_vs_pytorch.py,
bench/moe_gpu_vs_pytorch.py, bench/long_context_gpu_vs_pytorch.py)."""
import os
import re
import signal
import subprocess
import sys
import time

PEAK = 989e12  # H100/H200 bf16 dense

# layers, hidden, heads, groups, ffn, seq, vocab, rope base, rope scaling factor (0: none), tied, micro batch
LLAMA_MODELS = {
    "llama3.2-1b": (16, 2048, 32, 8, 8192, 2048, 128256, 500000.0, 32.0, True, 4),
}


def llama_flops_per_token(L, C, H, G, FF, T, V, causal=False):
    """Model FLOPs per token of a Llama (gated MLP), forward + backward, recomputation not counted.
    Megatron's count, as megatron.cpp logs it (train/flops.cpp): per layer 12 h (H + G) D + 12 s H D
    + 18 h F, and 6 h V for the output layer. causal=True counts the attention scores and their
    product with V for the causal half only (6 s H D): the count that matters at long sequences,
    where the dense count nearly doubles the total."""
    D = C // H
    attention = (6 if causal else 12) * T * H * D
    return L * (12 * C * (H + G) * D + attention + 18 * C * FF) + 6 * C * V


def llama_train_flags(L, C, H, G, FF, V, base, scaling, tied):
    """`megatron train` architecture flags of a Llama (what --model-preset llama3.2-1b expands to,
    shape given explicitly so any size, a tiny one for smoke tests too, goes through one path)."""
    f = ["--num-layers", str(L), "--hidden-size", str(C), "--ffn-hidden-size", str(FF),
         "--num-attention-heads", str(H), "--group-query-attention", "--num-query-groups", str(G),
         "--normalization", "RMSNorm", "--norm-epsilon", "1e-5", "--swiglu", "--position-embedding-type", "rope",
         "--rotary-base", str(base), "--disable-bias-linear", "--hidden-dropout", "0", "--attention-dropout", "0",
         "--vocab-size", str(V)]
    if scaling:
        f += ["--use-rope-scaling", "--rope-scaling-factor", str(scaling)]
    if not tied:
        f += ["--untie-embeddings-and-output-weights"]
    return f


# A run that ran out of memory: our allocator's user error ("CUDA out of memory on cuda:0: ..."),
# a CUDA or cuBLAS/cuDNN status naming an allocation, the host's std::bad_alloc message,
# PyTorch's OutOfMemoryError.
OOM_PATTERN = re.compile(r"out of memory|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation|ALLOC_FAILED|"
                         r"OutOfMemoryError|out of host memory", re.IGNORECASE)


def classify(rc, text, timed_out=False):
    """ok | oom | timeout | rejected (exit code 2 that is not out-of-memory: a user error such as an
    unknown or unsupported flag: says nothing about whether the length fits) | error."""
    if timed_out:
        return "timeout"
    if rc == 0:
        return "ok"
    if OOM_PATTERN.search(text):
        return "oom"
    if rc == 2:
        return "rejected"
    return "error"


def run_logged(cmd, timeout=None, env=None):
    """Runs cmd with stdout and stderr together, in its own process group (killed whole at the
    timeout); returns (exit code or None when timed out, output, wall seconds)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        rc = None
    return rc, out or "", time.time() - t0


def error_line(text):
    """The line that says why a run failed (the last one naming an error), or the last line."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.search(r"error|out of memory|abort|fail", ln, re.IGNORECASE):
            return ln.strip()[:400]
    return lines[-1].strip()[:400] if lines else ""


def parse_train_log(text):
    """What a `megatron train` log says: per-iteration times (ms, one per log line), the TFLOP/s the
    log line prints (dense attention count), lm losses, the peak device memory in tensors (GiB;
    CUDA only), the peak host memory in tensors (MiB), the start-up theoretical memory footprint of
    rank 0 (MiB, total) and a predicted peak (GiB), when the log prints one (a line naming
    'predicted' and 'peak' with a GiB or MiB figure)."""
    r = {"iter_ms": [float(m) for m in re.findall(r"elapsed time per iteration \(ms\): ([0-9.]+)", text)],
         "log_tflops": [float(m) for m in re.findall(r"throughput per GPU \(TFLOP/s/GPU\): ([0-9.eE+-]+)", text)],
         "lm_loss": [float(m) for m in re.findall(r"lm loss: ([0-9.E+-]+)", text)]}
    m = re.search(r"peak device memory in tensors: ([0-9.]+) GiB", text)
    r["peak_gib"] = float(m.group(1)) if m else None
    m = re.search(r"peak host memory in tensors: ([0-9.]+) MiB", text)
    r["peak_host_mib"] = float(m.group(1)) if m else None
    m = re.search(r"theoretical memory footprint.*\n.*\[rank 0[^\]]*\].*?total ([0-9.]+)", text)
    r["theoretical_mib"] = float(m.group(1)) if m else None
    r["predicted_peak_gib"] = None
    for line in text.splitlines():
        if not re.search(r"predict", line, re.IGNORECASE) or not re.search(r"peak", line, re.IGNORECASE):
            continue
        # "predicted 41.2 GiB" when the line says so, else its first figure with a unit
        m = re.search(r"predict\w*\W{0,3}(?:peak\W{0,3})?([0-9]+(?:\.[0-9]+)?) ?(GiB|MiB|GB)", line, re.IGNORECASE) or \
            re.search(r"([0-9]+(?:\.[0-9]+)?) ?(GiB|MiB|GB)", line)
        if m:
            r["predicted_peak_gib"] = float(m.group(1)) / (1024.0 if m.group(2) == "MiB" else 1.0)
            r["predicted_peak_line"] = line.strip()[:300]
    return r


def run_train(cmd, timeout=None, env=None, tail_lines=40):
    """Runs a `megatron train` command line; never exits: returns a dict with status (classify),
    rc, wall_s, the parse_train_log fields, the failing line and the log's last lines."""
    rc, out, wall = run_logged(cmd, timeout, env)
    r = {"status": classify(rc, out, rc is None), "rc": rc, "wall_s": round(wall, 1)}
    r.update(parse_train_log(out))
    if r["status"] != "ok":
        r["error"] = "killed at the time limit" if rc is None else error_line(out)
    r["log_tail"] = "\n".join(out.strip().splitlines()[-tail_lines:])
    return r


def train_throughput(cmd, tokens_per_iter):
    """Runs cmd (a `megatron train` command line logging every warm-up's worth of iterations);
    returns (tokens/s over the log intervals after the first, which holds the warm-up, and the
    peak device memory in GiB, NaN when not printed)."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"megatron train failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    log = parse_train_log(r.stdout)
    ms = log["iter_ms"][1:]
    return tokens_per_iter / (sum(ms) / len(ms) / 1000.0), log["peak_gib"] if log["peak_gib"] else float("nan")


def report(name, tps, peak_gib, flops_per_token, width=28):
    tflops = tps * flops_per_token / 1e12
    print(f"{name:{width}s}: {tps:10.0f} tokens/s  {tflops:6.1f} TFLOP/s  MFU {100 * tflops * 1e12 / PEAK:5.1f}%  "
          f"peak {peak_gib:6.2f} GiB", flush=True)
