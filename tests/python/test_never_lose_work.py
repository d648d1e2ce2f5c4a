"""A trainer never overwrites the work it should have resumed (issue 22): a --load that finds no
checkpoint refuses to start when --save holds checkpoints, --load DIR/iter_N and --ckpt-step
choose an iteration, a second trainer cannot save into the same directory, and the temporary
files of a killed save are removed."""
import fcntl
import hashlib
import json
import os
import subprocess

import pytest
import user_errors

TINY = ["--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "16",
        "--micro-batch-size", "2", "--global-batch-size", "2", "--eval-iters", "0", "--log-interval", "1"]


def train(build_dir, *flags, iters=2):
    return subprocess.run([str(build_dir / "megatron"), "train", *TINY, "--train-iters", str(iters), *flags],
                          capture_output=True, text=True, timeout=120)


def snapshot(d):
    """Every file under d (names and contents)."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture
def saved(build_dir, tmp_path):
    """A save directory with iterations 2 and 4."""
    ck = tmp_path / "ck"
    r = train(build_dir, "--save", str(ck), "--save-interval", "2", iters=4)
    assert r.returncode == 0, r.stderr
    assert (ck / "iter_0000002" / "metadata.json").exists() and (ck / "iter_0000004" / "metadata.json").exists()
    return ck


def test_mistyped_load_refuses_and_leaves_save_untouched(build_dir, saved, tmp_path):
    before = snapshot(saved)
    r = train(build_dir, "--load", str(tmp_path / "ckk"), "--save", str(saved), iters=6)
    user_errors.assert_user_error(r, "--load", "ckk", "--allow-start-from-scratch", "--save")
    assert snapshot(saved) == before
    assert not (tmp_path / "ckk").exists()


def test_allow_start_from_scratch_trains_with_a_warning(build_dir, saved, tmp_path):
    r = train(build_dir, "--load", str(tmp_path / "ckk"), "--save", str(saved), "--allow-start-from-scratch",
              "--save-interval", "100", iters=1)
    assert r.returncode == 0, r.stderr
    assert "could not find a checkpoint" in r.stderr


def test_first_launch_with_load_and_save_the_same_empty_directory_starts(build_dir, tmp_path):
    ck = tmp_path / "fresh"
    r = train(build_dir, "--load", str(ck), "--save", str(ck), iters=1)
    assert r.returncode == 0, r.stderr
    assert (ck / "iter_0000001" / "metadata.json").exists()


def test_load_of_an_iteration_directory_loads_that_iteration(build_dir, saved):
    r = train(build_dir, "--load", str(saved / "iter_0000002"), iters=3)
    assert r.returncode == 0, r.stderr
    assert "iter_0000002 (iteration 2," in r.stdout
    assert "iteration        3/       3 |" in r.stdout


def test_ckpt_step_chooses_the_iteration(build_dir, saved):
    r = train(build_dir, "--load", str(saved), "--ckpt-step", "2", iters=3)
    assert r.returncode == 0, r.stderr
    assert "iter_0000002 (iteration 2," in r.stdout


def test_ckpt_step_that_is_not_there_names_the_ones_that_are(build_dir, saved):
    r = train(build_dir, "--load", str(saved), "--ckpt-step", "3", iters=5)
    user_errors.assert_user_error(r, "--ckpt-step 3", "it holds 2, 4")


def test_ckpt_step_with_an_iteration_directory_is_an_error(build_dir, saved):
    r = train(build_dir, "--load", str(saved / "iter_0000002"), "--ckpt-step", "2", iters=5)
    user_errors.assert_user_error(r, "--ckpt-step 2", "already an iteration directory")


def test_second_trainer_on_one_save_directory_is_refused(build_dir, saved):
    lock = saved / ".megatron.lock"
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running trainer holds it
        before = snapshot(saved)
        r = train(build_dir, "--load", str(saved), "--save", str(saved), iters=6)
        user_errors.assert_user_error(r, "--save", "another process holds its lock")
        assert snapshot(saved) == before


def test_temporaries_of_a_killed_save_are_removed(build_dir, saved):
    dead = 4194304 + 12345  # above Linux's pid_max: no live process has it
    stale = [saved / f"latest_checkpointed_iteration.txt.tmp.{dead}",
             saved / "iter_0000004" / f"shard_00000_of_00001.safetensors.tmp.{dead}"]
    for p in stale:
        p.write_bytes(b"partial")
    r = train(build_dir, "--load", str(saved), "--save", str(saved), "--save-interval", "100", iters=5)
    assert r.returncode == 0, r.stderr
    assert "removed 2 temporary file(s)" in r.stdout
    assert not any(p.exists() for p in stale)


def crc32c(data):
    poly, crc = 0x82F63B78, 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (poly if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def edit_checkpoint(it_dir, common_name=None, common_edit=None):
    meta_path = it_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    text = (it_dir / meta["common"]["name"]).read_bytes()
    if common_edit:
        common = json.loads(text)
        common_edit(common)
        text = json.dumps(common).encode()
        (it_dir / meta["common"]["name"]).write_bytes(text)
    meta["common"]["bytes"] = len(text)
    meta["common"]["crc32c"] = f"{crc32c(text):08x}"
    if common_name:
        meta["common"]["name"] = common_name
    meta_path.write_text(json.dumps(meta))


def test_a_file_name_in_the_index_cannot_leave_the_checkpoint(build_dir, saved):
    edit_checkpoint(saved / "iter_0000004", common_name="../../../../../etc/passwd")
    r = train(build_dir, "--load", str(saved), iters=6)
    user_errors.assert_user_error(r, "metadata.json", "not a plain file name")


def test_a_symlink_out_of_the_checkpoint_is_refused(build_dir, saved, tmp_path):
    it = saved / "iter_0000004"
    outside = tmp_path / "outside.json"
    outside.write_text((it / "common.json").read_text())
    (it / "common.json").unlink()
    (it / "common.json").symlink_to(outside)
    r = train(build_dir, "--load", str(saved), iters=6)
    user_errors.assert_user_error(r, "metadata.json", "symbolic link out of the checkpoint")


def test_a_common_field_of_the_wrong_type_is_named(build_dir, saved):
    def edit(c):
        c["iteration"] = "four"
    edit_checkpoint(saved / "iter_0000004", common_edit=edit)
    r = train(build_dir, "--load", str(saved), iters=6)
    user_errors.assert_user_error(r, "common.json", '"iteration" must be an integer >= 0')


def inspect_verify(build_dir, path):
    return subprocess.run([str(build_dir / "megatron"), "checkpoint", "inspect", str(path), "--verify"],
                          capture_output=True, text=True, timeout=60)


def test_inspect_verify_rejects_what_load_rejects(build_dir, saved):
    r = inspect_verify(build_dir, saved)
    assert r.returncode == 0 and "verify: all" in r.stdout, r.stderr

    def edit(c):
        c["grad_scaler"] = {"scale": "big"}
    edit_checkpoint(saved / "iter_0000004", common_edit=edit)
    r = inspect_verify(build_dir, saved)
    assert r.returncode == 2 and '"grad_scaler.scale" must be a finite number' in r.stderr, r.stderr
    r = train(build_dir, "--load", str(saved), iters=6)
    user_errors.assert_user_error(r, '"grad_scaler.scale" must be a finite number')


def test_inspect_verify_rejects_a_tensor_with_a_missing_piece(build_dir, saved):
    it = saved / "iter_0000004"
    meta = json.loads((it / "metadata.json").read_text())
    name = next(n for n, t in meta["tensors"].items() if n.startswith("decoder.") and n.endswith("weight"))
    meta["tensors"][name]["pieces"] = []
    (it / "metadata.json").write_text(json.dumps(meta))
    r = inspect_verify(build_dir, saved)
    assert r.returncode == 2 and f"tensor {name} has 0 elements in its pieces" in r.stderr, r.stderr
    r = train(build_dir, "--load", str(saved), iters=6)
    assert r.returncode == 2 and name in r.stderr, r.stderr
