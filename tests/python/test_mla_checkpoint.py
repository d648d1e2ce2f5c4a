"""A multi-latent attention model (with YaRN) saved by `megatron train` reloads with its shape: resumed
without any architecture flag it is rebuilt from the checkpoint's recorded arguments (MLA's ranks and
head sizes, the rope type and YaRN's factors) and continues the run; a conflicting shape flag is one line."""
import re
import subprocess

import user_errors

MLA = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--normalization", "RMSNorm",
       "--swiglu", "--disable-bias-linear", "--position-embedding-type", "rope", "--multi-latent-attention",
       "--q-lora-rank", "16", "--kv-lora-rank", "12", "--qk-head-dim", "8", "--qk-pos-emb-head-dim", "4",
       "--v-head-dim", "6", "--qk-layernorm", "--rotary-scaling-factor", "4", "--original-max-position-embeddings",
       "8", "--mscale-all-dim", "0.7"]
RUN = ["--mock-data", "--vocab-size", "300", "--seq-length", "16", "--micro-batch-size", "2", "--global-batch-size",
       "4", "--lr", "1e-3", "--lr-decay-style", "constant", "--log-interval", "1", "--eval-iters", "0"]


def train(build_dir, *flags):
    return subprocess.run([str(build_dir / "megatron"), "train", *flags], capture_output=True, text=True, timeout=120)


def losses(out):
    return [float(x) for x in re.findall(r"lm loss: ([0-9.E+-]+)", out)]


def test_mla_checkpoint_resumes_without_architecture_flags(build_dir, tmp_path):
    ck = str(tmp_path / "ck")
    whole = train(build_dir, *MLA, *RUN, "--train-iters", "4")
    assert whole.returncode == 0, whole.stderr
    assert "multi-latent attention (q LoRA 16, kv LoRA 12, q/k dim 8 + RoPE 4, v dim 6)" in whole.stdout
    assert "YaRN x4 over 8" in whole.stdout
    first = train(build_dir, *MLA, *RUN, "--train-iters", "2", "--save", ck, "--save-interval", "2")
    assert first.returncode == 0, first.stderr
    resumed = train(build_dir, *RUN, "--train-iters", "4", "--load", ck)
    assert resumed.returncode == 0, resumed.stderr
    for flag in ("--multi-latent-attention", "--q-lora-rank 16", "--kv-lora-rank 12", "--v-head-dim 6",
                 "--rope-type yarn", "--rotary-scaling-factor 4", "--mscale-all-dim 0.7",
                 "--original-max-position-embeddings 8"):
        assert flag in resumed.stdout, (flag, resumed.stdout)
    # The same run in two halves: the resumed iterations' losses are the uninterrupted run's.
    assert losses(first.stdout) + losses(resumed.stdout) == losses(whole.stdout)


def test_mla_checkpoint_refuses_another_shape(build_dir, tmp_path):
    ck = str(tmp_path / "ck")
    first = train(build_dir, *MLA, *RUN, "--train-iters", "1", "--save", ck, "--save-interval", "1")
    assert first.returncode == 0, first.stderr
    r = train(build_dir, *RUN, "--train-iters", "2", "--load", ck, "--kv-lora-rank", "8")
    user_errors.assert_user_error(r, "--kv-lora-rank", "12", "8")


def test_generation_refuses_mla_in_one_line(build_dir, tmp_path):
    ck = str(tmp_path / "ck")
    first = train(build_dir, *MLA, *RUN, "--train-iters", "1", "--save", ck, "--save-interval", "1")
    assert first.returncode == 0, first.stderr
    r = subprocess.run([str(build_dir / "megatron"), "generate", "--load", ck, "--prompt-token-ids", "1,2,3",
                        "--max-new-tokens", "2", "--output-token-ids"], capture_output=True, text=True, timeout=60)
    user_errors.assert_user_error(r, "multi-latent attention", "not supported yet")
