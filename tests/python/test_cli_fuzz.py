"""A black-box fuzzer of `megatron train`'s command line (issue 22): random flags from --help with
random values (numbers in and far out of range, NaN, empty, garbage, paths that are not there)
over a tiny model. Every run must end with exit code 0, or 2 and one line on stderr — never a
signal, an internal error or a hang. Deterministic (a fixed seed); about 100 runs."""
import random
import re
import subprocess

import pytest

BASE = ["--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "16",
        "--micro-batch-size", "1", "--global-batch-size", "1", "--train-iters", "1", "--eval-iters", "0"]
# Flags whose values would make a valid run long (sizes, iterations): fuzzed over small values only.
SIZES = {"--num-layers", "--hidden-size", "--ffn-hidden-size", "--num-attention-heads", "--seq-length",
         "--max-position-embeddings", "--micro-batch-size", "--global-batch-size", "--train-iters", "--eval-iters",
         "--eval-interval", "--vocab-size", "--kv-channels", "--num-experts", "--moe-ffn-hidden-size",
         "--train-samples", "--moe-shared-expert-intermediate-size", "--make-vocab-size-divisible-by",
         "--num-query-groups", "--exit-interval", "--save-interval", "--log-interval", "--moe-router-topk",
         "--virtual-pipeline-model-parallel-size", "--num-layers-per-virtual-pipeline-stage", "--lr-warmup-samples",
         "--lr-decay-samples", "--lr-warmup-iters", "--lr-decay-iters", "--cross-entropy-chunks"}
# Flags that would make a valid run wait or spawn (never the point of this test).
SKIP = {"--help", "-h", "--profile", "--device", "--distributed-timeout-minutes", "--exit-duration-in-mins",
        "--load-hf", "--save-hf"}
GARBAGE = ["", "nan", "inf", "-1", "0", "1e308", "-1e308", "99999999999999999999", "abc", "1,2", "[1,0]",
           "0x10", "--", "/nonexistent/x", ".", "../..", "\u00e9\u00e9", "1 2", "-0", "3.5", "1e-300"]


def flags_from_help(build_dir):
    text = subprocess.run([str(build_dir / "megatron"), "train", "--help"], capture_output=True, text=True).stdout
    return sorted({f for f in re.findall(r"(?m)^\s+(--[a-z0-9][a-z0-9_-]*)", text) if f not in SKIP})


def value_for(flag, rng):
    if flag in SIZES:
        return str(rng.choice([0, 1, 2, 3, 4, 8, 16, -1, -7, 1 << 31, 1 << 40]))
    return rng.choice(GARBAGE + [str(rng.randint(-3, 64)), f"{rng.uniform(-2, 2):.3g}"])


@pytest.mark.parametrize("chunk", range(4))
def test_random_command_lines_end_cleanly(build_dir, tmp_path, chunk):
    flags = flags_from_help(build_dir)
    assert len(flags) > 200, len(flags)
    rng = random.Random(1000 + chunk)
    for trial in range(25):
        line = list(BASE)
        for _ in range(rng.randint(1, 4)):
            f = rng.choice(flags)
            line += [f] if rng.random() < 0.3 else [f, value_for(f, rng)]
        try:
            r = subprocess.run([str(build_dir / "megatron"), "train", *line], capture_output=True, text=True,
                               timeout=60, cwd=tmp_path, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        except subprocess.TimeoutExpired:
            pytest.fail(f"hung: {' '.join(line)}")
        where = f"megatron train {' '.join(line)}\n{r.stderr[-1500:]}"
        assert r.returncode in (0, 2), where
        assert "internal error" not in r.stderr, where
        if r.returncode == 2:
            errors = [l for l in r.stderr.splitlines() if "error" in l]
            assert len(errors) == 1, where
