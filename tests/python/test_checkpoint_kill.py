"""`kill -9` of `megatron train` while a checkpoint save is in flight loses nothing but that
save: `--load` resumes from the previous complete iteration, skipping the partial directory with
a warning, and the continued losses equal an uninterrupted run's at the same iterations.

The save is slowed by the test-only MT_TEST_CHECKPOINT_WRITE_DELAY_MS (src/checkpoint/checkpoint.h:
each rank sleeps that long after the iteration directory exists, before writing its shard), so
the kill lands while iteration 4's directory exists without metadata.json.
"""
import os
import re
import signal
import subprocess
import time

# A tiny GPT on the bundled corpus (no --data-path), one thread: a few seconds in all.
TINY = ["--device", "cpu", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
        "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "6",
        "--log-interval", "1", "--eval-iters", "0"]
DELAY_MS = 1500


def env(delay_ms=0):
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.pop("MT_TEST_CHECKPOINT_WRITE_DELAY_MS", None)
    if delay_ms:
        e["MT_TEST_CHECKPOINT_WRITE_DELAY_MS"] = str(delay_ms)
    return e


def losses(stdout):
    """{iteration: the log line's 'lm loss' text} (printed to 7 significant digits)."""
    return {int(m.group(1)): m.group(2)
            for m in re.finditer(r"iteration +(\d+)/ +\d+ \|.*?\| lm loss: ([0-9.E+-]+) \|", stdout)}


def test_kill_during_save_resumes_from_previous_complete_iteration(build_dir, tmp_path):
    megatron = str(build_dir / "megatron")
    ck = tmp_path / "ck"
    straight = subprocess.run([megatron, "train", *TINY], capture_output=True, text=True, env=env(), timeout=120)
    assert straight.returncode == 0, straight.stderr
    want = losses(straight.stdout)
    assert sorted(want) == [1, 2, 3, 4, 5, 6], straight.stdout

    # Saves every 2 iterations, each slowed; killed once iteration 2 is complete and iteration 4's
    # save has begun.
    log = open(tmp_path / "killed.log", "w")
    p = subprocess.Popen([megatron, "train", *TINY, "--save", str(ck), "--save-interval", "2"], stdout=log,
                         stderr=subprocess.STDOUT, env=env(DELAY_MS))
    tracker, partial = ck / "latest_checkpointed_iteration.txt", ck / "iter_0000004"
    deadline = time.monotonic() + 60
    while not partial.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=30) == -signal.SIGKILL
    log.close()
    killed = (tmp_path / "killed.log").read_text()
    assert partial.is_dir(), killed
    assert not (partial / "metadata.json").exists(), "the save finished before the kill: " + killed
    assert tracker.read_text() == "2"
    assert (ck / "iter_0000002" / "metadata.json").exists()
    assert losses(killed).items() <= want.items(), killed

    # Resume (saving into the same directory, which replaces the partial iteration 4).
    r = subprocess.run([megatron, "train", *TINY, "--load", str(ck), "--save", str(ck), "--save-interval", "2"],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"WARNING: skipping incomplete checkpoint {partial} (no metadata.json: its save did not finish)" in r.stderr
    assert re.search(rf"> loaded checkpoint {re.escape(str(ck / 'iter_0000002'))} \(iteration 2,", r.stdout), r.stdout
    got = losses(r.stdout)
    assert sorted(got) == [3, 4, 5, 6], r.stdout
    assert got == {i: want[i] for i in (3, 4, 5, 6)}
    assert tracker.read_text() == "6"
    assert (partial / "metadata.json").exists()
