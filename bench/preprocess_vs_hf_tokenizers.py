#!/usr/bin/env python3
"""Tokenizing speed: `megatron preprocess --workers 2` against Hugging Face `tokenizers`
(encode_batch_fast, Rust, 2 threads) on the same JSONL, the same tokenizer.json and the same 2 cores.

    python3 bench/preprocess_vs_hf_tokenizers.py [--mb 100] [--build build] [--tokenizer data/kjv_bpe4k_tokenizer.json]

The JSONL is made from the bundled corpus (the King James Bible, one chapter per line, the
chapters cycled until the file has --mb megabytes). Both sides read and parse the JSON; ours
also writes the .bin/.idx (the HF side keeps the ids in memory). Each side runs --repeat
times, alternating; the best wall time counts. Both are pinned to the same cores (taskset)
and must produce the same number of tokens. Prints MB/s for both and the ratio, the same per
CPU-second (robust to other load on a shared machine), and a markdown row for bench/RESULTS.md.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "data"))

HF_SIDE = r"""
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # the fast one (no offsets) where it exists
t0 = time.perf_counter()
n_tokens = 0
batch = []
def flush():
    global n_tokens, batch
    for e in encode(batch, add_special_tokens=False):
        n_tokens += len(e.ids) + 1  # + eod, as --append-eod
    batch = []
with open(sys.argv[2], encoding="utf-8") as f:
    for line in f:
        batch.append(json.loads(line)["text"])
        if len(batch) == 1000:
            flush()
flush()
print(n_tokens, time.perf_counter() - t0)
"""


def make_jsonl(path, mb):
    from make_bpe_data import bundled_chapters
    chapters = bundled_chapters()
    lines = [json.dumps({"text": c}) + "\n" for c in chapters]
    size, k = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            f.write(lines[k % len(lines)])
            size += len(lines[k % len(lines)].encode())
            k += 1
    return size, k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "data", "kjv_bpe4k_tokenizer.json"))
    ap.add_argument("--cores", default="0,1")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    pin = ["taskset", "-c", args.cores]
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = os.path.join(tmp, "bench.jsonl")
        size, docs = make_jsonl(jsonl, args.mb)
        print(f"input: {size / 1e6:.1f} MB, {docs} documents; tokenizer {os.path.relpath(args.tokenizer, ROOT)}")
        ours, theirs = [], []
        cpu_ours, cpu_theirs = [], []

        def child_cpu():
            r = resource.getrusage(resource.RUSAGE_CHILDREN)
            return r.ru_utime + r.ru_stime

        n_ours = n_theirs = None
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), child_cpu()
            r = subprocess.run(pin + [os.path.join(args.build, "megatron"), "preprocess", "--input", jsonl,
                                      "--output-prefix", os.path.join(tmp, "out"), "--tokenizer-type",
                                      "HuggingFaceTokenizer", "--tokenizer-model", args.tokenizer, "--workers", "2",
                                      "--append-eod", "--log-interval-seconds", "0"], capture_output=True, text=True)
            ours.append(time.perf_counter() - t0)
            cpu_ours.append(child_cpu() - c0)
            if r.returncode:
                sys.exit(r.stderr)
            n_ours = int(r.stderr.split(" tokens")[0].split()[-1].replace(",", ""))
            env = dict(os.environ, RAYON_NUM_THREADS="2", TOKENIZERS_PARALLELISM="true")
            t0, c0 = time.perf_counter(), child_cpu()
            r = subprocess.run(pin + [sys.executable, "-c", HF_SIDE, args.tokenizer, jsonl], capture_output=True,
                               text=True, env=env)
            theirs.append(time.perf_counter() - t0)
            cpu_theirs.append(child_cpu() - c0)
            if r.returncode:
                sys.exit(r.stderr)
            n_theirs = int(r.stdout.split()[0])
        assert n_ours == n_theirs, (n_ours, n_theirs)
        import tokenizers
        mb = size / 1e6
        ours_mbs, theirs_mbs = mb / min(ours), mb / min(theirs)
        print(f"tokens: {n_ours} (both sides)")
        print(f"megatron preprocess --workers 2: {min(ours):.2f} s, {ours_mbs:.2f} MB/s")
        print(f"HF tokenizers {tokenizers.__version__} encode_batch_fast (2 threads): {min(theirs):.2f} s, {theirs_mbs:.2f} MB/s")
        print(f"ratio: {ours_mbs / theirs_mbs:.2f}x")
        # CPU seconds are less sensitive than wall time to other load on a shared machine.
        cpu_ratio = min(cpu_theirs) / min(cpu_ours)
        print(f"CPU time: ours {min(cpu_ours):.2f} s ({mb / min(cpu_ours):.2f} MB per CPU-second), HF "
              f"{min(cpu_theirs):.2f} s ({mb / min(cpu_theirs):.2f} MB per CPU-second); ratio {cpu_ratio:.2f}x")
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print("\n--- for bench/RESULTS.md ---")
        print(f"| {datetime.date.today()} | {cpu}, {os.cpu_count()} cores ({platform.machine()}) | {commit} | "
              f"{mb:.0f} MB, {docs} docs | {ours_mbs:.2f} | {theirs_mbs:.2f} | {ours_mbs / theirs_mbs:.2f}x | "
              f"{mb / min(cpu_ours):.2f} / {mb / min(cpu_theirs):.2f} ({cpu_ratio:.2f}x) |")


if __name__ == "__main__":
    main()
