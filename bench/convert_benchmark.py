#!/usr/bin/env python3
"""`megatron convert` at scale: a random Llama-shaped model (bf16) written by our own export path
(hf_random_model, through write_hf_model), converted Hugging Face -> megatron checkpoint -> Hugging Face
on the CPU. For each conversion: wall time, GB/s (bytes written / time), peak RSS of the converter
(/usr/bin/time's maximum resident set size), and `cat` of the same input files to /dev/null as the
disk's read rate, and `cat` of them into one new file (fsync'd) as the floor of anything that reads
and writes the same bytes; once, `dd conv=fsync` of as many bytes as the disk's sustained write rate (a
conversion writes as much as it reads, so this bounds it on disks that write slower than they read).
Every file
is evicted from the page cache (posix_fadvise DONTNEED: they were fsynced, no root needed) before each
timed step, so each step starts cold. The round trip is checked byte for byte: our writer lays the
files out the same way both times, so the final model.safetensors files equal the first ones.

  python3 bench/convert_benchmark.py [--shape llama3.1-8b|llama3.2-1b|tiny] [--build-dir build] [--dir DIR] [--no-dd]

Needs about 3x the model's size free in --dir (8B: 48 GB); with less it says so and stops (pick a
smaller --shape). Not run by CI. The folder (default build-convert-bench/) is removed at the end
unless --keep.
"""
import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import time

SHAPES = {  # layers, hidden, ffn, heads, query groups, vocab, max positions, rope theta, scaling, tied
    "llama3.1-8b": (32, 4096, 14336, 32, 8, 128256, 131072, 500000, 8, 0),
    "llama3.2-1b": (16, 2048, 8192, 32, 8, 128256, 131072, 500000, 32, 1),
    "tiny": (2, 256, 512, 8, 2, 1000, 2048, 500000, 8, 0),
}


def params(layers, hidden, ffn, heads, groups, vocab, *_rest, tied):
    d = hidden // heads
    per_layer = hidden * (heads * d + 2 * groups * d) + heads * d * hidden + 3 * hidden * ffn + 2 * hidden
    return layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden


def files_under(d):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs)


def evict(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd) if os.access(p, os.W_OK) else None
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measured(cmd):
    """cmd under /usr/bin/time -v: (seconds, peak RSS bytes, stdout)."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    rss = next(int(l.split(":")[1]) * 1024 for l in r.stderr.splitlines() if "Maximum resident set size" in l)
    return secs, rss, r.stdout


def cat_rate(paths):
    evict(paths)
    size = sum(os.path.getsize(p) for p in paths)
    secs, _, _ = measured(["sh", "-c", 'cat "$@" > /dev/null', "cat", *paths])
    return size / secs / 1e9


def copy_rate(paths, dst):
    """cat of the files into one new file, fsync'd: the read+write floor of a streaming conversion."""
    evict(paths)
    size = sum(os.path.getsize(p) for p in paths)
    secs, _, _ = measured(["sh", "-c", 'out="$1"; shift; cat "$@" > "$out" && sync "$out"', "copy", dst, *paths])
    os.remove(dst)
    return size / secs / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=SHAPES, default="llama3.1-8b")
    ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
    ap.add_argument("--dir", default="build-convert-bench")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-dd", action="store_true", help="skip the dd write measurement")
    a = ap.parse_args()
    shape = SHAPES[a.shape]
    n = params(*shape[:-1], tied=shape[-1])
    model_bytes = 2 * n
    os.makedirs(a.dir, exist_ok=True)
    free = shutil.disk_usage(a.dir).free
    if free < 3.2 * model_bytes:
        sys.exit(f"{a.dir}: {free / 1e9:.1f} GB free, the {a.shape} round trip needs {3.2 * model_bytes / 1e9:.1f} GB: "
                 "use a smaller --shape or another --dir")
    hf, ck, back = (os.path.join(a.dir, x) for x in ("hf", "ck", "back"))
    for d in (hf, ck, back):
        shutil.rmtree(d, ignore_errors=True)
    megatron = os.path.join(a.build_dir, "megatron")
    print(f"shape {a.shape}: {n / 1e9:.2f} B parameters, {model_bytes / 1e9:.2f} GB bf16; {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM")
    try:
        secs, rss, _ = measured([os.path.join(a.build_dir, "hf_random_model"), hf, *map(str, shape)])
        size = sum(os.path.getsize(p) for p in files_under(hf))
        print(f"write random HF model (our export): {secs:7.2f} s  {size / secs / 1e9:5.2f} GB/s  "
              f"peak RSS {rss / 1e9:.3f} GB  ({size / 1e9:.2f} GB)")
        if not a.no_dd:
            dd = os.path.join(a.dir, "dd.bin")
            secs, _, _ = measured(["dd", "if=/dev/zero", f"of={dd}", "bs=4M", f"count={size // (4 << 20)}",
                                   "conv=fsync", "status=none"])
            os.remove(dd)
            print(f"dd write of {size // (4 << 20) * 4 / 1024:.1f} GiB with fsync: {secs:7.2f} s  "
                  f"{size // (4 << 20) * (4 << 20) / secs / 1e9:5.2f} GB/s")
        for name, src, dst, flags in (("hf -> megatron", hf, ck, ["--from", "hf", "--to", "megatron"]),
                                      ("megatron -> hf", ck, back, ["--from", "megatron", "--to", "hf"])):
            inputs = [p for p in files_under(src) if p.endswith(".safetensors")]
            cat = cat_rate(inputs)
            copy = copy_rate(inputs, os.path.join(a.dir, "copy.bin"))
            evict(inputs)
            secs, rss, out = measured([megatron, "convert", *flags, "--input", src, "--output", dst])
            written = sum(os.path.getsize(p) for p in files_under(dst) if p.endswith(".safetensors"))
            rate = written / secs / 1e9
            print(f"{name}: {secs:7.2f} s  {rate:5.2f} GB/s  peak RSS {rss / 1e9:.3f} GB  "
                  f"(cat of its input: {cat:5.2f} GB/s, ratio {rate / cat:.2f}; cat into a new fsync'd file: "
                  f"{copy:5.2f} GB/s, ratio {rate / copy:.2f})")
            print("   ", out.strip())
        same = all(filecmp.cmp(os.path.join(hf, f), os.path.join(back, f), shallow=False)
                   for f in os.listdir(hf) if f.endswith(".safetensors"))
        print(f"round trip byte-identical weight files: {same}")
        if not same:
            sys.exit(1)
    finally:
        if not a.keep:
            for d in (hf, ck, back):
                shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
