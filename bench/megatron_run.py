"""Running `megatron train` from a benchmark and reading its log: shared by the single-GPU
benchmarks against PyTorch (bench/gpt_gpu_vs_pytorch.py, bench/llama_gpu_vs_pytorch.py)."""
import re
import subprocess
import sys

PEAK = 989e12  # H100/H200 bf16 dense


def train_throughput(cmd, tokens_per_iter):
    """Runs cmd (a `megatron train` command line logging every warm-up's worth of iterations);
    returns (tokens/s over the log intervals after the first, which holds the warm-up, and the
    peak device memory in GiB, NaN when not printed)."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"megatron train failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    ms = [float(m) for m in re.findall(r"elapsed time per iteration \(ms\): ([0-9.]+)", r.stdout)][1:]
    peak = re.search(r"peak device memory in tensors: ([0-9.]+) GiB", r.stdout)
    return tokens_per_iter / (sum(ms) / len(ms) / 1000.0), float(peak.group(1)) if peak else float("nan")


def report(name, tps, peak_gib, flops_per_token, width=28):
    tflops = tps * flops_per_token / 1e12
    print(f"{name:{width}s}: {tps:10.0f} tokens/s  {tflops:6.1f} TFLOP/s  MFU {100 * tflops * 1e12 / PEAK:5.1f}%  "
          f"peak {peak_gib:6.2f} GiB", flush=True)
