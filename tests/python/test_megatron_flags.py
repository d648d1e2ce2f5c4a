"""Megatron's reading of a command line (issue 24): the last of a repeated flag wins,
--sequence-parallel at TP=1 warns and is turned off, "not supported yet" comes before any
world-size error, an unknown flag is named once with its value and the closest flag, and the
logging flags print what they say."""
import re
import subprocess

TINY = ["--mock-data", "--vocab-size", "250", "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "4", "--log-interval", "1",
        "--eval-iters", "0", "--device", "cpu"]


def run(build_dir, *flags):
    return subprocess.run([str(build_dir / "megatron"), "train", *TINY, *flags], capture_output=True, text=True,
                          timeout=120)


def lines(r):
    return [l for l in r.stdout.splitlines() if " iteration " in l]


def test_last_of_a_repeated_flag_wins(build_dir):
    r = run(build_dir, "--train-iters", "5", "--lr", "1", "--train-iters", "1", "--lr", "0.5", "--lr-decay-style",
            "constant", "--bf16", "--bf16", "--data-cache-path", "a", "--data-cache-path", "b")
    assert r.returncode == 0, r.stderr
    (line,) = lines(r)
    assert "iteration        1/       1 |" in line and "learning rate: 5.000000E-01 |" in line


def test_sequence_parallel_at_tp1_warns_and_is_off(build_dir):
    r = run(build_dir, "--train-iters", "1", "--sequence-parallel")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("warning: --sequence-parallel is turned off") == 1


def test_unknown_flags_named_once_with_values_and_a_suggestion(build_dir):
    r = run(build_dir, "--num-layerz", "3", "--attention-backend", "unfused", "--foo", "x", "y", "--dist-ckpt-strictness",
            "log_all")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == ("megatron train: error: unrecognized arguments: --num-layerz 3 (did you mean "
                                "--num-layers?), --foo x y (see 'megatron train --help')")


def test_feature_errors_come_before_world_size_errors(build_dir):
    r = run(build_dir, "--context-parallel-size", "2", "--pipeline-model-parallel-size", "2", "--fp8-format", "hybrid")
    assert r.returncode == 2
    assert r.stderr.strip() == ("megatron: error: not supported yet: --fp8-format hybrid: fp8 training (train in "
                                "--bf16)")


def test_accepted_flags_train_and_mapped_ones_are_named(build_dir, tmp_path):
    r = run(build_dir, "--train-iters", "1", "--transformer-impl", "transformer_engine", "--use-mcore-models",
            "--distributed-backend", "nccl", "--no-gradient-accumulation-fusion", "--manual-gc", "--attention-backend",
            "flash", "--ckpt-format", "torch_dist", "--save", str(tmp_path / "ck"), "--wandb-project", "x")
    assert r.returncode == 0, r.stderr
    assert "--ckpt-format torch_dist: checkpoints are megatron.cpp's sharded format" in r.stdout
    assert "--attention-backend flash: cuDNN's fused attention" in r.stdout
    assert "--wandb-project x: ignored (Weights & Biases logging is not built)" in r.stdout
    r = run(build_dir, "--train-iters", "1", "--transformer-impl", "te")
    assert r.returncode == 2 and "--transformer-impl 'te' must be one of transformer_engine, local" in r.stderr


def test_num_zeros_and_params_norm(build_dir):
    # Tied embeddings, vocabulary 250 padded to 256: the 6 padding rows x 64 get no gradient, every
    # other element does.
    r = run(build_dir, "--train-iters", "2", "--log-num-zeros-in-grad", "--log-params-norm", "--lr", "0", "--min-lr", "0")
    assert r.returncode == 0, r.stderr
    norms = [float(re.search(r"params norm: ([0-9.]+) \|", l).group(1)) for l in lines(r)]
    assert [re.search(r"num zeros: ([0-9.]+) \|", l).group(1) for l in lines(r)] == ["384.0", "384.0"]
    assert len(norms) == 2 and norms[0] == norms[1] > 0  # --lr 0: the parameters do not move
    r2 = run(build_dir, "--train-iters", "1", "--log-params-norm", "--lr", "0", "--min-lr", "0", "--seed", "7")
    assert float(re.search(r"params norm: ([0-9.]+) \|", lines(r2)[0]).group(1)) != norms[0]


def test_train_samples_sets_the_iterations_and_the_schedule(build_dir):
    r = run(build_dir, "--train-samples", "12", "--lr-warmup-samples", "8", "--lr-decay-samples", "12", "--lr", "1",
            "--min-lr", "0", "--lr-decay-style", "linear")
    assert r.returncode == 0, r.stderr
    got = [re.search(r"learning rate: (\S+) \|", l).group(1) for l in lines(r)]
    assert got == ["5.000000E-01", "1.000000E+00", "0.000000E+00"]  # 4, 8, 12 samples
    assert "--train-samples 12: 3 iterations of global batch 4" in r.stdout


def test_per_token_loss_equals_the_mean_without_a_mask(build_dir):
    # Without --eod-mask-loss every microbatch has the same tokens: the two losses agree.
    a = lines(run(build_dir, "--train-iters", "2"))
    b = lines(run(build_dir, "--train-iters", "2", "--calculate-per-token-loss"))
    loss = lambda l: re.search(r"lm loss: (\S+) \|", l).group(1)
    assert [loss(l) for l in a] == [loss(l) for l in b]


def test_decoupled_lr_changes_training_only_through_the_embedding(build_dir):
    base = lines(run(build_dir, "--train-iters", "3"))
    same = lines(run(build_dir, "--train-iters", "3", "--decoupled-lr", "1e-3", "--decoupled-min-lr", "1e-4"))
    other = lines(run(build_dir, "--train-iters", "3", "--decoupled-lr", "0.05"))
    loss = lambda l: re.search(r"lm loss: (\S+) \|", l).group(1)
    assert [loss(l) for l in same] == [loss(l) for l in base]  # the defaults --lr 1e-3, --min-lr 1e-4
    assert loss(other[0]) == loss(base[0]) and loss(other[2]) != loss(base[2])
