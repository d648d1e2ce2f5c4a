"""TensorBoard event files and --log-jsonl read back with TensorBoard's own reader
(EventAccumulator, which checks every record's masked CRC-32C) and json: the scalars are the log
line's values under Megatron's tag names, the JSON lines are the log line."""
import json
import math
import os
import re
import shutil
import subprocess

import pytest
import user_errors

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
event_file_loader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")

TINY = ["--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "2", "--seq-length", "32",
        "--micro-batch-size", "2", "--global-batch-size", "4", "--device", "cpu", "--lr", "1e-3",
        "--lr-warmup-iters", "2"]

ITER = re.compile(r"iteration\s+(\d+)/\s*\d+ \|(.*)")
VALID = re.compile(r"validation loss at (?:iteration (\d+)|the end of training) \| lm loss value: (\S+) \| "
                   r"lm loss PPL: (\S+) \|")


def train(build_dir, *flags):
    r = subprocess.run([str(build_dir / "megatron"), "train", *TINY, *flags], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def log_lines(stdout):
    """{iteration: {field: value}} from Megatron's iteration lines ("name: value |" fields)."""
    out = {}
    for line in stdout.splitlines():
        m = ITER.search(line)
        if not m:
            continue
        fields = {}
        for part in m.group(2).split("|"):
            if ":" in part:
                k, v = part.rsplit(":", 1)
                fields[k.strip()] = float(v)
        out[int(m.group(1))] = fields
    return out


def validations(stdout, last_iteration):
    """[(iteration, loss, ppl)] from the validation blocks."""
    return [(int(m.group(1)) if m.group(1) else last_iteration, float(m.group(2)), float(m.group(3)))
            for m in VALID.finditer(stdout)]


def scalars(logdir):
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def close(a, b, rel=2e-6, abs_=0.0):
    """A float32 scalar against a value printed with 7 significant digits."""
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def test_scalars_and_json_lines_equal_the_log_line(build_dir, tmp_path):
    tb, jl = tmp_path / "tb", tmp_path / "metrics.jsonl"
    out = train(build_dir, "--train-iters", "6", "--log-interval", "1", "--eval-interval", "3", "--eval-iters", "1",
                "--tensorboard-dir", str(tb), "--log-jsonl", str(jl), "--log-validation-ppl-to-tensorboard",
                "--log-timers-to-tensorboard")
    logged = log_lines(out)
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    s = scalars(tb)
    for it, f in logged.items():
        n = int(f["consumed samples"])
        for tag, field, tol in [("lm loss", "lm loss", {}), ("learning-rate", "learning rate", {}),
                                ("loss-scale", "loss scale", {}), ("batch-size", "global batch size", {}),
                                ("grad-norm", "grad norm", {"abs_": 5e-4})]:  # printed with 3 decimals
            assert close(s[tag][it], f[field], **tol), (tag, it, s[tag][it], f[field])
            assert s[tag + " vs samples"][n] == s[tag][it], (tag, it)
        assert close(s["throughput"][it], f["throughput per GPU (TFLOP/s/GPU)"], rel=5e-3)
        assert close(s["iteration-time"][it] * 1000, f["elapsed time per iteration (ms)"], abs_=0.05)
    valid = validations(out, 6)
    assert [v[0] for v in valid] == [3, 6]
    for it, loss, ppl in valid:
        assert close(s["lm loss validation"][it], loss)
        assert close(s["lm loss validation ppl"][it], ppl)
        assert close(s["lm loss validation vs samples"][it * 4], loss)

    # One file, opening with the file_version event (TensorBoard's reader checks each record's CRCs).
    files = list(tb.iterdir())
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents.")
    first = next(iter(event_file_loader.EventFileLoader(str(files[0])).Load()))
    assert first.file_version == "brain.Event:2"

    rows = [json.loads(x) for x in jl.read_text().splitlines()]
    train_rows = [r for r in rows if r["type"] == "train"]
    assert [r["iteration"] for r in train_rows] == sorted(logged)
    for r in train_rows:
        f = logged[r["iteration"]]
        assert r["consumed_samples"] == f["consumed samples"]
        assert close(r["lm_loss"], f["lm loss"], rel=6e-7)
        assert close(r["lr"], f["learning rate"], rel=6e-7)
        assert close(r["grad_norm"], f["grad norm"], abs_=5e-4)
        assert r["loss_scale"] == f["loss scale"]
        assert close(r["elapsed_ms"], f["elapsed time per iteration (ms)"], abs_=0.05)
        assert close(r["tokens_per_sec_per_gpu"], f["tokens per second per GPU"], abs_=0.5)
        assert r["skipped_iterations"] == f["number of skipped iterations"]
        assert r["nan_iterations"] == f["number of nan iterations"]
        assert r["global_batch_size"] == 4
    assert [(r["iteration"], r["consumed_samples"]) for r in rows if r["type"] == "validation"] == [(3, 12), (6, 24)]
    for r, (_, loss, ppl) in zip([r for r in rows if r["type"] == "validation"], valid):
        assert close(r["lm_loss"], loss, rel=6e-7) and close(r["ppl"], ppl, rel=6e-7)
    # Rows come in the order the log prints them.
    assert [r["type"] for r in rows] == ["train"] * 3 + ["validation"] + ["train"] * 3 + ["validation"]


def test_tensorboard_takes_every_iteration_and_the_log_line_their_mean(build_dir, tmp_path):
    """Megatron's split: TensorBoard gets each iteration's values at --tensorboard-log-interval, the log
    line the mean over --log-interval."""
    tb = tmp_path / "tb"
    out = train(build_dir, "--train-iters", "6", "--log-interval", "3", "--eval-iters", "0",
                "--tensorboard-dir", str(tb))
    logged, s = log_lines(out), scalars(tb)
    assert sorted(s["lm loss"]) == [1, 2, 3, 4, 5, 6]
    for it in (3, 6):
        mean = sum(s["lm loss"][i] for i in range(it - 2, it + 1)) / 3
        assert close(mean, logged[it]["lm loss"], rel=1e-6)
        assert close(s["learning-rate"][it], logged[it]["learning rate"])
    assert "lm loss validation" not in s and "loss-scale" in s and "iteration-time" not in s

    tb2 = tmp_path / "tb2"
    train(build_dir, "--train-iters", "6", "--log-interval", "3", "--eval-iters", "0", "--tensorboard-dir", str(tb2),
          "--tensorboard-log-interval", "2", "--no-log-loss-scale-to-tensorboard", "--log-world-size-to-tensorboard",
          "--log-memory-to-tensorboard")
    s2 = scalars(tb2)
    assert sorted(s2["lm loss"]) == [2, 4, 6]
    assert s2["lm loss"] == {i: s["lm loss"][i] for i in (2, 4, 6)}  # the same run, every other iteration
    assert "loss-scale" not in s2
    assert s2["world-size"] == {2: 1.0, 4: 1.0, 6: 1.0}
    assert all(v > 0 for v in s2["mem-max-allocated-bytes"].values())


def test_skipped_steps_have_no_grad_norm(build_dir, tmp_path):
    """fp16's first steps overflow at the initial loss scale 2^32 and are skipped: Megatron writes no
    grad-norm for them; the loss scale follows the log line."""
    tb = tmp_path / "tb"
    out = train(build_dir, "--train-iters", "3", "--log-interval", "1", "--eval-iters", "0", "--fp16",
                "--tensorboard-dir", str(tb))
    logged, s = log_lines(out), scalars(tb)
    assert all(f["number of skipped iterations"] == 1 for f in logged.values())
    assert "grad-norm" not in s
    assert s["loss-scale"] == {it: f["loss scale"] for it, f in logged.items()}
    assert all(close(s["lm loss"][it], f["lm loss"]) for it, f in logged.items())


def test_moe_losses(build_dir, tmp_path):
    tb, jl = tmp_path / "tb", tmp_path / "m.jsonl"
    out = train(build_dir, "--train-iters", "3", "--log-interval", "1", "--eval-iters", "0", "--num-experts", "4",
                "--moe-router-topk", "2", "--moe-aux-loss-coeff", "1e-2", "--moe-z-loss-coeff", "1e-3",
                "--moe-per-layer-logging", "--disable-bias-linear", "--tensorboard-dir", str(tb), "--log-jsonl", str(jl))
    logged, s = log_lines(out), scalars(tb)
    rows = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    for r in rows:
        f = logged[r["iteration"]]
        for name in ("load_balancing_loss", "z_loss"):
            assert close(s[name][r["iteration"]], f[name]), name
            assert close(r[name], f[name], rel=6e-7), name
        # Per layer, under Megatron's "moe/" names.
        assert close(s["moe/load_balancing_loss_layer_0"][r["iteration"]], f["layer_0_load_balancing_loss"])
        assert close(r["layer_0_z_loss"], f["layer_0_z_loss"], rel=6e-7)


def test_the_last_rank_writes_under_mpirun(build_dir, tmp_path):
    """Two pipeline stages: the loss is on the last rank, which alone writes (as in Megatron)."""
    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun")
    tb, jl = tmp_path / "tb", tmp_path / "m.jsonl"
    r = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism",
                        "none", "-np", "2", str(build_dir / "megatron"), "train", *TINY[2:], "--num-layers", "2",
                        "--pipeline-model-parallel-size", "2", "--train-iters", "3", "--log-interval", "1",
                        "--eval-iters", "1", "--eval-interval", "3", "--tensorboard-dir", str(tb), "--log-jsonl", str(jl)],
                       capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert len(list(tb.iterdir())) == 1
    logged, s = log_lines(r.stdout), scalars(tb)
    assert sorted(logged) == [1, 2, 3]
    for it, f in logged.items():
        assert close(s["lm loss"][it], f["lm loss"]) and close(s["grad-norm"][it], f["grad norm"], abs_=5e-4)
    assert close(s["lm loss validation"][3], validations(r.stdout, 3)[0][1])
    assert [json.loads(x)["iteration"] for x in jl.read_text().splitlines()] == [1, 2, 3, 3]


def test_json_lines_are_appended(build_dir, tmp_path):
    jl = tmp_path / "m.jsonl"
    for _ in range(2):
        train(build_dir, "--train-iters", "2", "--log-interval", "1", "--eval-iters", "0", "--log-jsonl", str(jl))
    assert [json.loads(x)["iteration"] for x in jl.read_text().splitlines()] == [1, 2, 1, 2]


def run(build_dir, *flags):
    return subprocess.run([str(build_dir / "megatron"), "train", *TINY, "--train-iters", "1", *flags],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", ["tb_file", "tb_under_file", "jsonl_dir", "jsonl_missing_dir", "tb_interval",
                                  "queue"])
def test_unwritable_paths_and_bad_values_are_one_line_errors(build_dir, tmp_path, case):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    flags, needle = {
        "tb_file": (["--tensorboard-dir", str(blocker)], "--tensorboard-dir"),
        "tb_under_file": (["--tensorboard-dir", str(blocker / "tb")], "--tensorboard-dir"),
        "jsonl_dir": (["--log-jsonl", str(tmp_path)], "--log-jsonl"),
        "jsonl_missing_dir": (["--log-jsonl", str(tmp_path / "no" / "m.jsonl")], "--log-jsonl"),
        "tb_interval": (["--tensorboard-log-interval", "0"], "--tensorboard-log-interval"),
        "queue": (["--tensorboard-queue-size", "0"], "--tensorboard-queue-size"),
    }[case]
    user_errors.assert_user_error(run(build_dir, *flags), needle, empty_stdout=True)
