#!/usr/bin/env python3
"""Runs Megatron-LM's GPT training configurations (megatron_lm_configs.txt, made tiny by
extract_configs.py) through `megatron train` and says, per config, whether it ran, was rejected
(and which flags) or crashed, then one summary line.

    run_compat.py MEGATRON [--as-written --mpirun "mpirun -np"] [--max-world 4] [--floor N] [--jobs 2]
                  [--only REGEX]

Single-rank (default): each config's single-rank variant (parallel sizes 1, the flags that only
describe a multi-rank layout left out). --as-written: the config's own layout under mpirun with
tensor x context x expert x pipeline ranks (data parallel 1, or the expert-parallel size for MoE),
for those that fit in --max-world ranks.

The count of configs that ran must not drop below --floor (ctest passes the last recorded count).
"""
import argparse
import concurrent.futures
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time


def split_flags(words):
    out = []
    for w in words:
        if w.startswith("--"):
            out.append([w])
        else:
            out[-1].append(w)
    return out


def join(flags):
    return [w for f in flags for w in f]


def named_flags(err):
    """The flags a rejection names: after 'unrecognized arguments:' or 'not supported yet:'."""
    names = []
    for line in err.splitlines():
        m = re.search(r"(unrecognized arguments|not supported yet): (.*)", line)
        if m:  # "--a 1 (did you mean --b?), --c" or "--a 1: why (use --b); --c: why": each item's first flag
            items = re.split(r", (?=--)" if m.group(1) == "unrecognized arguments" else r"; ", m.group(2))
            names += [f.group(0) for f in (re.search(r"--[A-Za-z0-9_-]+", i) for i in items) if f]
    return list(dict.fromkeys(names))


def run_one(binary, launcher, name, flags, tmp):
    os.makedirs(tmp, exist_ok=True)
    words = [w.replace("@TMP@", tmp).replace("@CKPT@", os.path.join(tmp, "ckpt")) for w in join(flags)]
    cmd = launcher + [binary, "train", *words, "--device", "cpu"]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = -999, "", f"timed out after 300 s: {e}"
    return rc, out, err, time.time() - t0


def classify(binary, launcher, name, flags, tmp):
    rc, out, err, secs = run_one(binary, launcher, name, flags, tmp)
    if rc == 0:
        return "ran", [], "", secs
    if rc == 2 and (named := named_flags(err)):
        # Collect every rejected flag: leave the named ones out and ask again (rejections are immediate).
        rejected = list(named)
        first = next((l for l in err.splitlines() if "error:" in l), err.strip())
        for _ in range(8):
            flags = [f for f in flags if f[0] not in rejected]
            rc2, _, err2, _ = run_one(binary, launcher, name, flags, tmp)
            more = named_flags(err2) if rc2 == 2 else []
            if not more:
                break
            rejected += [f for f in more if f not in rejected]
        return "rejected", rejected, first, secs
    if rc == 2:
        return "rejected", [], next((l for l in err.splitlines() if "error:" in l), err.strip()[-300:]), secs
    tail = (err.strip() or out.strip())[-600:]
    return "crashed", [], f"exit code {rc}: {tail}", secs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("megatron")
    p.add_argument("--configs", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "megatron_lm_configs.txt"))
    p.add_argument("--as-written", action="store_true")
    p.add_argument("--mpirun", default="mpirun -np")
    p.add_argument("--max-world", type=int, default=4)
    p.add_argument("--floor", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", default="")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()

    configs = []
    for line in open(a.configs):
        if not line.strip() or line.startswith("#"):
            continue
        name, world, single, written = line.rstrip("\n").split("\t")
        if a.only and not re.search(a.only, name):
            continue
        configs.append((name, int(world), split_flags(shlex.split(written if a.as_written else single))))
    skipped = 0
    jobs = []
    for name, world, flags in configs:
        if a.as_written:
            if world > a.max_world:
                skipped += 1
                continue
            launcher = shlex.split(a.mpirun) + [str(world)] if world > 1 else []
            jobs.append((name, launcher, flags))
        else:
            jobs.append((name, [], flags))
    results = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="mt-compat-") as tmp:
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as ex:
            futs = {ex.submit(classify, a.megatron, launcher, name, flags, os.path.join(tmp, name)): name
                    for name, launcher, flags in jobs}
            for f in concurrent.futures.as_completed(futs):
                results[futs[f]] = f.result()
    counts = {"ran": 0, "rejected": 0, "crashed": 0}
    by_flag = {}
    for name, _, _ in jobs:
        verdict, flags, msg, secs = results[name]
        counts[verdict] += 1
        if verdict == "ran":
            print(f"ran       {name} ({secs:.1f} s)")
        elif verdict == "rejected":
            for fl in flags:
                by_flag[fl] = by_flag.get(fl, 0) + 1
            print(f"rejected  {name}: {' '.join(flags) or msg}")
            if a.verbose:
                print(f"          {msg}")
        else:
            print(f"CRASHED   {name}: {msg}")
    if by_flag:
        print("rejected flags (configs): " + ", ".join(f"{k} ({v})" for k, v in
                                                        sorted(by_flag.items(), key=lambda kv: (-kv[1], kv[0]))))
    ran = counts["ran"]
    mode = f"as written (<= {a.max_world} ranks)" if a.as_written else "single-rank"
    print(f"megatron-lm compatibility, {mode}: {ran} of {len(jobs)} configs ran, {counts['rejected']} rejected, "
          f"{counts['crashed']} crashed" + (f", {skipped} need more ranks" if skipped else "") +
          f"; floor {a.floor}; {time.time() - t0:.0f} s")
    if counts["crashed"]:
        sys.exit(1)
    if ran < a.floor:
        print(f"FAIL: {ran} configs ran, fewer than the recorded floor {a.floor}")
        sys.exit(1)


if __name__ == "__main__":
    main()
