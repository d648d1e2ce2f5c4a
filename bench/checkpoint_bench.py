#!/usr/bin/env python3
"""Checkpoint speed: save and load time and GB/s of a GPT with its Adam state (bf16 weights, fp32
master weights and moments: 14 bytes per parameter), against the disk's own bandwidth measured
with `dd` in the same folder in the same invocation; and with --async-save, the iteration time
while a save is in flight against the steady state.

  python3 bench/checkpoint_bench.py --model 1.3b [--device cuda] [--build-dir build-gpu] [--dir DIR]
  python3 bench/checkpoint_bench.py --model tiny --device cpu        # a quick check of the script

Phases (each a `megatron train` run on mock data, timings parsed from its log):
  dd         write DD_GB with `dd oflag=direct` and with `dd conv=fsync`, read it back `iflag=direct`
  save       --saves synchronous saves ("> saved checkpoint at iteration N ... in X s"); GB are the
             iteration directory's bytes on disk
  load       --load of the last one, cold (the files evicted from the page cache with
             posix_fadvise DONTNEED; they were fsynced, so this needs no root) and then warm
  async      --async-save: --steady-iters iterations, a save, then as many again; the iterations
             whose log lines fall between "saving checkpoint" and its "async, complete" line had the
             save in flight (the first also waited for the snapshot to host memory)
The checkpoint folder (default build-ckpt-bench/, ignored by git) is removed at the end unless --keep.
"""
import argparse
import atexit
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

MODELS = {  # layers, hidden, heads, seq, micro batch, steady iterations, dd GB
    "tiny": (2, 64, 4, 128, 2, 10, 0.25),
    "1.3b": (24, 2048, 16, 2048, 4, 40, 4.0),
}
VOCAB = 50304

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--model", choices=MODELS, default="1.3b")
ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
ap.add_argument("--build-dir", default=os.environ.get("MEGATRON_BUILD_DIR", "build"))
ap.add_argument("--dir", default="build-ckpt-bench", help="checkpoint folder, on the disk to measure")
ap.add_argument("--saves", type=int, default=2, help="synchronous saves to time")
ap.add_argument("--steady-iters", type=int, help="iterations before the async save (and the most after it)")
ap.add_argument("--dd-gb", type=float, help="GB that dd writes")
ap.add_argument("--micro-batch-size", type=int)
ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
args = ap.parse_args()
L, C, H, T, B, STEADY, DD_GB = MODELS[args.model]
B = args.micro_batch_size or B
STEADY = args.steady_iters or STEADY
DD_GB = args.dd_gb or DD_GB
N = VOCAB * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
megatron = os.path.join(args.build_dir, "megatron")
root = os.path.abspath(args.dir)
if not os.path.exists(megatron):
    sys.exit(f"{megatron} not found: build it, or pass --build-dir / set MEGATRON_BUILD_DIR")

MODEL_FLAGS = ["--device", args.device, "--bf16", "--mock-data", "--vocab-size", str(VOCAB), "--num-layers", str(L),
               "--hidden-size", str(C), "--num-attention-heads", str(H), "--seq-length", str(T),
               "--micro-batch-size", str(B), "--global-batch-size", str(B), "--log-interval", "1", "--eval-iters", "0",
               "--hidden-dropout", "0", "--attention-dropout", "0", "--lr", "3e-4", "--lr-decay-style", "constant"]
UNIT = {"k": 1e3, "M": 1e6, "G": 1e9}


def train(*flags):
    cmd = [megatron, "train", *MODEL_FLAGS, *flags]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(d) for f in fs)


def latest_iter_dir(d):
    with open(os.path.join(d, "latest_checkpointed_iteration.txt")) as f:
        return os.path.join(d, f"iter_{int(f.read()):07d}")


def evict(d):
    """Drops the (clean, fsynced) pages of every file under d from the page cache."""
    for p, _, fs in os.walk(d):
        for f in fs:
            fd = os.open(os.path.join(p, f), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def dd(what, *operands):
    """GB/s of one dd run, from its own byte count and seconds; None when dd refuses (no O_DIRECT)."""
    r = subprocess.run(["dd", *operands], capture_output=True, text=True)
    m = re.search(r"(\d+) bytes .* copied, ([0-9.e+-]+) s", r.stderr)
    if r.returncode != 0 or not m:
        print(f"  ({what}: dd failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})")
        return None
    return int(m.group(1)) / 1e9, float(m.group(2))


rows = []  # (name, seconds, GB, note)


def row(name, seconds, gbytes, note=""):
    rows.append((name, seconds, gbytes, note))


def fs_info(d):
    r = subprocess.run(["df", "-T", d], capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    if len(lines) < 2:
        return "?"
    f = lines[-1].split()
    return f"{f[1]} on {f[0]}, {int(f[4]) / 1e6:.0f} GB free" if len(f) >= 5 else "?"


shutil.rmtree(root, ignore_errors=True)
os.makedirs(root)
if not args.keep:
    atexit.register(shutil.rmtree, root, True)  # also when a phase fails
# Two checkpoints live at once (a new one is complete before --ckpt-keep-last 1 deletes the old).
need = 2 * 14 * N * 1.05 + DD_GB * 1e9
free = shutil.disk_usage(root).free
if free < need:
    sys.exit(f"{root}: {free / 1e9:.1f} GB free, the benchmark needs about {need / 1e9:.1f} GB (pass --dir elsewhere)")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
gpu = ""
if args.device == "cuda":
    q = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    gpu = f", {q.stdout.strip().splitlines()[0]}" if q.returncode == 0 and q.stdout.strip() else ""
print(f"{time.strftime('%Y-%m-%d')}, commit {commit or '?'}, {os.cpu_count()} CPUs{gpu}")
print(f"model {args.model}: {L} layers, hidden {C}, heads {H}, seq {T}, vocab {VOCAB}, micro batch {B}, bf16 + Adam "
      f"(N = {N / 1e6:.1f} M parameters, about {14 * N / 1e9:.2f} GB of state); device {args.device}")
print(f"checkpoint folder {root} ({fs_info(root)}); {megatron}")
t_start = time.time()

# ---- the disk's own bandwidth -------------------------------------------------------------------
tmp = os.path.join(root, "dd.tmp")
count = max(1, int(DD_GB * 1e9 / (64 << 20) + 0.5))
disk = {}
for what, ops in (("write, dd oflag=direct", ["oflag=direct"]), ("write, dd conv=fsync", ["conv=fsync"])):
    res = dd(what, "if=/dev/zero", f"of={tmp}", "bs=64M", f"count={count}", *ops)
    if res:
        disk[what] = res[0] / res[1]
        row(f"disk {what}", res[1], res[0])
evict(root)
res = dd("read", f"if={tmp}", "of=/dev/null", "bs=64M", "iflag=direct")
if res:
    disk["read"] = res[0] / res[1]
    row("disk read, dd iflag=direct", res[1], res[0])
os.remove(tmp)
# The disk's best write (O_DIRECT, or buffered + fsync as our writer does).
disk_write = max([v for k, v in disk.items() if k.startswith("write")], default=None)


def vs(gbps, ref):
    return f"{gbps / ref:.2f}x dd" if ref else ""


# ---- synchronous saves ----------------------------------------------------------------------------
sync_dir = os.path.join(root, "sync")
log = train("--train-iters", str(2 * args.saves), "--save", sync_dir, "--save-interval", "2", "--ckpt-keep-last", "1")
saves = [float(s) for s in re.findall(r"> saved checkpoint at iteration \d+ to .* in ([0-9.]+) s \(", log)]
if len(saves) != args.saves:
    sys.exit(f"expected {args.saves} 'saved checkpoint' lines:\n{log[-3000:]}")
ckpt = latest_iter_dir(sync_dir)
gbytes = dir_bytes(ckpt) / 1e9
for i, s in enumerate(saves):
    row(f"save {i + 1} (synchronous)", s, gbytes, vs(gbytes / s, disk_write))

# ---- loads -----------------------------------------------------------------------------------------
load_re = r"> loaded checkpoint .* in ([0-9.]+) s \(([0-9.]+) ([kMG])B read"
for what in ("cold: evicted from the page cache", "warm: in the page cache"):
    if what.startswith("cold"):
        evict(sync_dir)
    log = train("--train-iters", str(2 * args.saves + 1), "--load", sync_dir)
    m = re.search(load_re, log)
    if not m:
        sys.exit(f"no 'loaded checkpoint' line:\n{log[-3000:]}")
    read_gb = float(m.group(2)) * UNIT[m.group(3)] / 1e9
    s = float(m.group(1))
    row(f"load ({what})", s, read_gb, vs(read_gb / s, disk.get("read")) if what.startswith("cold") else "")
shutil.rmtree(sync_dir)

# ---- asynchronous save: iteration time while it is in flight --------------------------------------
async_dir = os.path.join(root, "async")
# One save at iteration STEADY (the next multiple, 2 STEADY, is past the end) and the final one.
log = train("--train-iters", str(2 * STEADY - 1), "--save", async_dir, "--save-interval", str(STEADY), "--async-save",
            "--ckpt-keep-last", "1")
iter_ms, state, in_flight, first_after, snapshot, write = {}, "before", [], None, None, None
for line in log.splitlines():
    m = re.search(r"iteration +(\d+)/ +\d+ \|.*elapsed time per iteration \(ms\): ([0-9.]+)", line)
    if m:
        it, ms = int(m.group(1)), float(m.group(2))
        iter_ms[it] = ms
        if state == "flight":
            in_flight.append(it)
        continue
    m = re.search(rf"> saving checkpoint at iteration {STEADY} .*training waited ([0-9.]+) s", line)
    if m:
        state, snapshot = "flight", float(m.group(1))
        continue
    m = re.search(rf"> saved checkpoint at iteration {STEADY} to .* in ([0-9.]+) s .*async, complete", line)
    if m and state == "flight":
        state, write = "after", float(m.group(1))
if snapshot is None or write is None:
    sys.exit(f"no async save of iteration {STEADY} in the log:\n{log[-3000:]}")
warmup = min(5, STEADY // 2)
steady = [iter_ms[i] for i in range(warmup + 1, STEADY + 1)]
steady += [iter_ms[i] for i in iter_ms if i > STEADY and i not in in_flight and i != 2 * STEADY - 1]
async_gb = dir_bytes(latest_iter_dir(async_dir)) / 1e9
shutil.rmtree(async_dir)
row("async save: training waits (snapshot)", snapshot, async_gb)
row("async save: written in the background", write, async_gb, vs(async_gb / write, disk_write))

# ---- the table --------------------------------------------------------------------------------------
print(f"\n{'':44s} {'seconds':>9s} {'GB':>9s} {'GB/s':>8s}")
for name, s, g, note in rows:
    print(f"{name:44s} {s:9.3f} {g:9.3f} {g / s if s > 0 else float('nan'):8.2f}  {note}")
st = statistics.median(steady)
print(f"\niteration time (ms), --async-save, save at iteration {STEADY} of {2 * STEADY - 1}:")
print(f"  steady state (median of {len(steady)}, without the first {warmup}): {st:9.1f}")
if in_flight:
    first = iter_ms[in_flight[0]]
    print(f"  first after the save (includes the snapshot wait): {first:9.1f}  ({100 * (first / st - 1):+.1f}%)")
    rest = [iter_ms[i] for i in in_flight[1:]]
    if rest:
        mean = statistics.mean(rest)
        print(f"  others with the save in flight (mean of {len(rest)}): {mean:9.1f}  ({100 * (mean / st - 1):+.1f}%)")
    overhead = sum(iter_ms[i] for i in in_flight) - st * len(in_flight)
    print(f"  in flight for {len(in_flight)} iterations ({in_flight[0]}-{in_flight[-1]}); "
          f"time lost to the save {overhead / 1000:.3f} s vs {saves[0]:.3f} s for a synchronous save")
print(f"({time.time() - t_start:.0f} s in all)")
