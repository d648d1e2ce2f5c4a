"""Bad input gets one clear line on stderr naming the flag or file, exit code 2, and nothing
on stdout (nothing half-done)."""
import struct
import subprocess

import numpy as np
import pytest
import user_errors


def write_indexed(prefix, docs, dtype=np.uint16, magic=b"MMIDIDX\x00\x00", version=1):
    """Megatron's indexed dataset layout (see src/data/indexed_dataset.h)."""
    codes = {np.uint16: 8, np.int32: 4}
    lengths = np.array([len(d) for d in docs], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(lengths[:-1]) * np.dtype(dtype).itemsize]).astype(np.int64)
    with open(f"{prefix}.bin", "wb") as f:
        for d in docs:
            f.write(np.asarray(d, dtype=dtype).tobytes())
    with open(f"{prefix}.idx", "wb") as f:
        f.write(magic)
        f.write(struct.pack("<Q", version))
        f.write(struct.pack("<B", codes[dtype]))
        f.write(struct.pack("<Q", len(docs)))
        f.write(struct.pack("<Q", len(docs) + 1))
        f.write(lengths.tobytes())
        f.write(pointers.tobytes())
        f.write(np.arange(len(docs) + 1, dtype=np.int64).tobytes())


TINY = ["--num-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "8",
        "--micro-batch-size", "1", "--global-batch-size", "1", "--train-iters", "1", "--eval-iters", "0"]


def run(build_dir, *flags):
    return subprocess.run([str(build_dir / "megatron"), "train", *flags], capture_output=True, text=True, timeout=60)


def assert_user_error(r, *needles):
    user_errors.assert_user_error(r, *needles, empty_stdout=True)


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 200, size=40) for _ in range(30)]
    write_indexed(tmp_path / "good", docs)
    return tmp_path / "good", docs


def test_good_dataset_trains(build_dir, dataset):
    prefix, _ = dataset
    r = run(build_dir, *TINY, "--data-path", str(prefix), "--vocab-size", "200", "--split", "90,10,0", "--log-interval", "1")
    assert r.returncode == 0, r.stderr
    assert "iteration        1/       1 |" in r.stdout


def test_unknown_flag(build_dir):
    assert_user_error(run(build_dir, "--num-layerz", "2"), "--num-layerz")


def test_hidden_not_divisible_by_heads(build_dir):
    assert_user_error(run(build_dir, "--hidden-size", "100", "--num-attention-heads", "3"),
                      "--hidden-size 100", "--num-attention-heads 3")


def test_global_batch_not_divisible_by_micro_batch(build_dir):
    assert_user_error(run(build_dir, "--global-batch-size", "10", "--micro-batch-size", "4"),
                      "--global-batch-size 10", "--micro-batch-size 4")


def test_recompute_num_layers_needs_recompute_gelu_and_a_layer_count(build_dir):
    assert_user_error(run(build_dir, *TINY, "--recompute-num-layers", "1"), "--recompute-num-layers 1",
                      "--recompute-gelu")
    assert_user_error(run(build_dir, *TINY, "--recompute-gelu", "--recompute-num-layers", "3"),
                      "--recompute-num-layers 3", "--num-layers 1")


@pytest.mark.parametrize("flags,needles", [
    (["--recompute-granularity", "full"], ["--recompute-granularity full", "--recompute-method"]),
    (["--recompute-granularity", "full", "--recompute-method", "uniform"],
     ["--recompute-granularity full", "--recompute-num-layers"]),
    (["--recompute-granularity", "selective", "--recompute-method", "block"], ["--recompute-method block", "full"]),
    (["--recompute-activations", "--recompute-method", "uniform"], ["--recompute-method uniform", "full"]),
    (["--recompute-granularity", "everything"], ["--recompute-granularity everything", "full or selective"]),
    (["--recompute-granularity", "full", "--recompute-method", "zigzag", "--recompute-num-layers", "1"],
     ["--recompute-method zigzag", "uniform or block"]),
    (["--recompute-modules", "mlp"], ["--recompute-modules", "selective"]),
    (["--recompute-activations", "--recompute-modules", "mla_up_proj"], ["mla_up_proj", "multi-latent attention"]),
    (["--recompute-granularity", "selective", "--recompute-modules", "attn"], ["--recompute-modules attn"]),
    (["--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", "1",
      "--recompute-gelu"], ["--recompute-gelu", "full"]),
])
def test_recompute_flags_follow_megatrons_rules(build_dir, flags, needles):
    assert_user_error(run(build_dir, *TINY, *flags), *needles)


def test_cross_entropy_chunks_must_fit_a_microbatch(build_dir):
    assert_user_error(run(build_dir, *TINY, "--cross-entropy-chunks", "0"), "--cross-entropy-chunks")
    assert_user_error(run(build_dir, *TINY, "--cross-entropy-chunks", "9"), "--cross-entropy-chunks 9", "8 tokens")


def test_missing_dataset(build_dir, tmp_path):
    assert_user_error(run(build_dir, *TINY, "--data-path", str(tmp_path / "nope")), str(tmp_path / "nope"))


def test_truncated_bin(build_dir, dataset):
    prefix, _ = dataset
    data = open(f"{prefix}.bin", "rb").read()
    open(f"{prefix}.bin", "wb").write(data[: len(data) // 2])
    assert_user_error(run(build_dir, *TINY, "--data-path", str(prefix)), f"{prefix}.bin")


def test_truncated_idx(build_dir, dataset):
    prefix, _ = dataset
    data = open(f"{prefix}.idx", "rb").read()
    open(f"{prefix}.idx", "wb").write(data[:40])
    assert_user_error(run(build_dir, *TINY, "--data-path", str(prefix)), f"{prefix}.idx")


def test_wrong_magic(build_dir, tmp_path, dataset):
    _, docs = dataset
    write_indexed(tmp_path / "bad", docs, magic=b"NOTMAGIC!")
    assert_user_error(run(build_dir, *TINY, "--data-path", str(tmp_path / "bad")), f"{tmp_path / 'bad'}.idx")


def test_vocabulary_smaller_than_data(build_dir, dataset):
    prefix, _ = dataset
    assert_user_error(run(build_dir, *TINY, "--data-path", str(prefix), "--vocab-size", "50"),
                      "--vocab-size 50", "largest token id")


def test_profile_needs_a_gpu(build_dir):
    assert_user_error(run(build_dir, *TINY, "--mock-data", "--vocab-size", "64", "--device", "cpu", "--profile"),
                      "--profile", "--device cuda")


def test_profile_range_must_be_nonempty(build_dir):
    assert_user_error(run(build_dir, *TINY, "--mock-data", "--vocab-size", "64", "--profile",
                          "--profile-step-start", "3", "--profile-step-end", "3"),
                      "--profile-step-start 3", "--profile-step-end 3")


def test_tp_comm_overlap_needs_sequence_parallel(build_dir):
    assert_user_error(run(build_dir, *TINY, "--mock-data", "--vocab-size", "64", "--tp-comm-overlap"),
                      "--tp-comm-overlap", "--sequence-parallel")


LLAMA = ["--normalization", "RMSNorm", "--swiglu", "--position-embedding-type", "rope", "--disable-bias-linear",
         "--untie-embeddings-and-output-weights", "--mock-data", "--vocab-size", "64"]


@pytest.mark.parametrize("flags, needles", [
    (["--group-query-attention", "--num-query-groups", "3"], ["--num-query-groups 3", "--num-attention-heads 2"]),
    (["--group-query-attention", "--num-query-groups", "0"], ["--num-query-groups"]),
    (["--rotary-percent", "0"], ["--rotary-percent 0", "(0, 1]"]),
    (["--rotary-percent", "1.5"], ["--rotary-percent 1.5"]),
    (["--kv-channels", "6", "--rotary-percent", "0.5"], ["--rotary-percent 0.5", "head dimension 6", "3 rotated"]),
    (["--normalization", "BatchNorm"], ["--normalization 'BatchNorm'", "LayerNorm or RMSNorm"]),
    (["--position-embedding-type", "alibi"], ["--position-embedding-type 'alibi'"]),
    (["--qk-layernorm", "--normalization", "LayerNorm"], ["--qk-layernorm", "RMSNorm"]),
    (["--model-preset", "llama9-1t"], ["--model-preset 'llama9-1t'", "llama3.2-1b"]),
    (["--num-experts", "4", "--moe-router-topk", "5"], ["--moe-router-topk 5", "--num-experts 4"]),
    (["--num-experts", "4", "--moe-router-score-function", "relu"], ["--moe-router-score-function 'relu'"]),
    (["--num-experts", "4", "--moe-layer-freq", "[1,0,1]"], ["--moe-layer-freq '[1,0,1]'", "3 entries"]),
    (["--num-experts", "4", "--moe-layer-freq", "every"], ["--moe-layer-freq 'every'"]),
    (["--num-experts", "4", "--moe-router-load-balancing-type", "switch"], ["'switch'", "global_aux_loss"]),
    (["--num-experts", "4", "--moe-token-dispatcher-type", "flex"], ["not supported yet: --moe-token-dispatcher-type flex"]),
    (["--num-experts", "4", "--moe-pad-expert-input-to-capacity"], ["--moe-expert-capacity-factor"]),
    (["--num-experts", "4", "--expert-tensor-parallel-size", "2"], ["--expert-tensor-parallel-size 2"]),
    (["--num-experts", "3", "--expert-model-parallel-size", "2"], ["--num-experts 3", "--expert-model-parallel-size 2"]),
    (["--expert-model-parallel-size", "2"], ["world size 1", "expert (2)"]),
    (["--moe-expert-capacity-factor", "1.0"], ["--num-experts"]),
    (["--num-experts", "4", "--moe-router-num-groups", "2"], ["--moe-router-num-groups 2", "--moe-router-group-topk 0"]),
    (["--num-experts", "4", "--moe-router-num-groups", "3", "--moe-router-group-topk", "1"], ["--moe-router-num-groups 3"]),
    (["--num-experts", "4", "--moe-router-dtype", "bf16"], ["--moe-router-dtype 'bf16'"]),
    (["--multi-latent-attention", "--kv-lora-rank", "0"], ["--kv-lora-rank"]),
    (["--multi-latent-attention", "--q-lora-rank", "-1"], ["--q-lora-rank -1"]),
    (["--multi-latent-attention", "--qk-pos-emb-head-dim", "3"], ["--qk-pos-emb-head-dim 3", "even"]),
    (["--multi-latent-attention", "--group-query-attention", "--num-query-groups", "1"], ["--group-query-attention",
                                                                                          "--multi-latent-attention"]),
    (["--rope-type", "ntk"], ["--rope-type 'ntk'", "rope or yarn"]),
    (["--rope-type", "yarn", "--use-rope-scaling"], ["--rope-type yarn", "--use-rope-scaling"]),
    (["--rope-type", "yarn", "--rotary-scaling-factor", "0"], ["--rotary-scaling-factor 0"]),
])
def test_bad_architecture_is_one_line_exit_2(build_dir, flags, needles):
    base = [f for f in TINY + LLAMA + ["--ffn-hidden-size", "32"]]
    # A later occurrence of a flag given in `flags` replaces the base's value.
    for f in flags:
        if f.startswith("--") and f in base and base.index(f) + 1 < len(base) and not base[base.index(f) + 1].startswith("--"):
            i = base.index(f)
            del base[i:i + 2]
    assert_user_error(run(build_dir, *base, *flags), *needles)


def test_swiglu_without_ffn_hidden_size_takes_megatrons_default(build_dir):
    r = run(build_dir, "--num-layers", "1", "--hidden-size", "96", "--num-attention-heads", "2", "--seq-length", "8",
            "--micro-batch-size", "1", "--global-batch-size", "1", "--train-iters", "1", "--eval-iters", "0", *LLAMA)
    assert r.returncode == 0, r.stderr
    assert "ffn 256," in r.stdout, r.stdout  # int(4 * 96 * 2 / 3 / 64) * 64


def test_model_preset_prints_its_flags_and_explicit_flags_win(build_dir):
    r = run(build_dir, "--model-preset", "llama3.2-1b", "--num-layers", "1", "--hidden-size", "64",
            "--num-attention-heads", "4", "--num-query-groups", "2", "--ffn-hidden-size", "128", "--seq-length", "16",
            "--micro-batch-size", "1", "--global-batch-size", "1", "--train-iters", "1", "--eval-iters", "0",
            "--mock-data", "--vocab-size", "64", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("> model preset llama3.2-1b:"))
    assert "--rotary-base 500000" in line and "--use-rope-scaling" in line and "--num-layers" not in line, line
    assert "> GPT: 1 layers, hidden 64, ffn 128, heads 4" in r.stdout, r.stdout
    assert "RMSNorm, SwiGLU MLP, 4 heads in 2 query groups of dim 16" in r.stdout, r.stdout


@pytest.mark.parametrize("flags, needles", [
    (["--num-query-groups", "2"], ["--num-query-groups 2 needs --group-query-attention"]),
    (["--swiglu", "--hidden-size", "16"], ["--swiglu's default --ffn-hidden-size", "is 0"]),
    (["--kv-channels", "-1"], ["--kv-channels must be >= 0"]),
    (["--model-preset", "llama3.2-1b", "--model-preset", "qwen3-0.6b"], ["--model-preset is given twice"]),
])
def test_more_architecture_errors(build_dir, flags, needles):
    base = [f for f in TINY]
    if "--hidden-size" in flags:
        i = base.index("--hidden-size")
        del base[i:i + 2]
    assert_user_error(run(build_dir, *base, "--mock-data", "--vocab-size", "64", *flags), *needles)


def test_moe_experts_need_no_bias_flag(build_dir):
    assert_user_error(run(build_dir, *TINY, "--mock-data", "--vocab-size", "64", "--num-experts", "4"),
                      "--num-experts", "--disable-bias-linear")


def test_context_parallel_requirements_name_the_flags(build_dir):
    # The sequence is cut into 2 CP chunks.
    assert_user_error(run(build_dir, *TINY, "--context-parallel-size", "3"), "--seq-length 8",
                      "--context-parallel-size 3")
    # a2a gives each rank whole heads and query groups.
    assert_user_error(run(build_dir, *TINY, "--context-parallel-size", "4", "--cp-comm-type", "a2a"),
                      "--cp-comm-type a2a", "--context-parallel-size 4")
    # Megatron's other exchanges are not built (accepted with one context-parallel rank only).
    assert_user_error(run(build_dir, *TINY, "--context-parallel-size", "2", "--cp-comm-type", "a2a+p2p"),
                      "--cp-comm-type a2a+p2p", "p2p or a2a")
    assert_user_error(run(build_dir, *TINY, "--context-parallel-size", "2", "--num-experts", "2", "--disable-bias-linear"),
                      "--context-parallel-size 2", "--num-experts")
    assert_user_error(run(build_dir, *TINY, "--cp-comm-type", "ring"), "--cp-comm-type")
