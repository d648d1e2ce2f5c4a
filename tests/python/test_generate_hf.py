"""`megatron generate` against transformers' own generate: tiny random models (Llama with GQA, untied
output layer and theta 500000; Qwen 3 with q/k norm, tied, head_dim 16 != hidden / heads; GPT-2 with
learned positions and biases) saved with save_pretrained and loaded with --load-hf give exactly
`model.generate(do_sample=False)`'s tokens (fp32, CPU): one prompt at a time, a batch of prompts of
different lengths (each compared with transformers run on it alone), and stopping at an
end-of-sequence id. Text prompts through the model directory's tokenizer.json; a checkpoint of our
own (`megatron train --save`) through --load, against the same weights in transformers; sampling
that repeats with its seed; tensor parallelism over 2 processes (mpirun, CPU) giving the same tokens;
and bad input as one line with exit code 2.
MEGATRON_GENERATE_DEVICE=cuda runs ours on the GPU (fp32; scripts/device-test.sh does)."""
import json
import os
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import REPO
from hf_tiny_models import common, tiny_hf_model
import user_errors

MODELS = ("llama_gqa_untied", "qwen3_qk_norm_tied", "gpt2")

# Prompts of different lengths; none holds the models' end-of-sequence ids (Llama's 2).
PROMPTS = [[5, 17, 42, 7, 99], [3, 4], [250, 1, 8, 9, 10, 11, 12, 13, 14, 15, 16], [77]]
NEW = 16
DEVICE = os.environ.get("MEGATRON_GENERATE_DEVICE", "cpu")


def generate(build_dir, *flags, check=True):
    r = subprocess.run([str(build_dir / "megatron"), "generate", "--device", DEVICE, *flags], capture_output=True,
                       text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def ours_ids(build_dir, model_dir, prompts, *flags):
    args = ["--load-hf", str(model_dir), "--output-token-ids", "--max-new-tokens", str(NEW), *flags]
    for p in prompts:
        args += ["--prompt-token-ids", ",".join(map(str, p))]
    out = generate(build_dir, *args).stdout.strip().splitlines()
    assert len(out) == len(prompts), out
    return [[int(t) for t in line.split(",")] for line in out]


def theirs(model, prompt, **kw):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=NEW, **kw)
    return out[0, len(prompt):].tolist()


def random_model(name, seed=0):
    torch.manual_seed(seed)
    model = tiny_hf_model(name).float().eval()
    with torch.no_grad():  # norms and biases away from their init, so their mapping is exercised
        for pname, p in model.named_parameters():
            if "norm" in pname or ".ln_" in pname or pname.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    model = random_model(request.param)
    model.save_pretrained(tmp / "hf", safe_serialization=True)
    return model, tmp / "hf"


def test_greedy_matches_transformers_one_prompt(build_dir, saved):
    model, d = saved
    for p in PROMPTS:
        assert ours_ids(build_dir, d, [p]) == [theirs(model, p)], p


def test_greedy_batch_of_different_lengths_matches_each_prompt_alone(build_dir, saved):
    model, d = saved
    assert ours_ids(build_dir, d, PROMPTS) == [theirs(model, p) for p in PROMPTS]


def test_stops_at_end_of_sequence(build_dir, saved):
    model, d = saved
    full = theirs(model, PROMPTS[0])
    eos = full[5]
    want = theirs(model, PROMPTS[0], eos_token_id=eos)
    assert want == full[:full.index(eos) + 1]  # transformers stops after emitting it
    assert ours_ids(build_dir, d, [PROMPTS[0]], "--eos-token-id", str(eos)) == [want]
    # In a batch the other prompts go on to their own end.
    got = ours_ids(build_dir, d, [PROMPTS[0], PROMPTS[1]], "--eos-token-id", str(eos))
    assert got == [want, theirs(model, PROMPTS[1], eos_token_id=eos)]


def test_timing_line(build_dir, saved):
    _, d = saved
    r = generate(build_dir, "--load-hf", str(d), "--prompt-token-ids", "1,2,3", "--output-token-ids",
                 "--max-new-tokens", "4", "--ignore-eos", "--timing")
    fields = dict(kv.split("=") for kv in r.stderr.strip().splitlines()[-1].removeprefix("timing: ").split())
    assert fields["batch"] == "1" and fields["prompt_tokens"] == "3" and fields["decode_steps"] == "3"
    assert float(fields["ttft_ms"]) > 0 and float(fields["decode_tokens_per_s"]) > 0


def test_sampling_repeats_with_its_seed(build_dir, saved):
    _, d = saved
    flags = ["--temperature", "1.5", "--top-k", "50", "--top-p", "0.95", "--ignore-eos"]
    a = ours_ids(build_dir, d, PROMPTS[:2], *flags, "--seed", "3")
    assert a == ours_ids(build_dir, d, PROMPTS[:2], *flags, "--seed", "3")
    assert a != ours_ids(build_dir, d, PROMPTS[:2], *flags, "--seed", "4")
    # A sequence draws the same tokens alone as in a batch (its draws are keyed by its index).
    assert ours_ids(build_dir, d, PROMPTS[:1], *flags, "--seed", "3") == a[:1]
    # top-k 1 is greedy whatever the temperature.
    assert ours_ids(build_dir, d, PROMPTS[:1], "--temperature", "2", "--top-k", "1") == ours_ids(build_dir, d,
                                                                                              PROMPTS[:1])


BUNDLED_TOKENIZER = REPO / "data" / "kjv_bpe4k_tokenizer.json"


def test_text_prompt_through_tokenizer_json(build_dir, tmp_path):
    tok = Tokenizer.from_file(str(BUNDLED_TOKENIZER))
    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(**common(vocab_size=tok.get_vocab_size()), rope_theta=500000.0,
                                         tie_word_embeddings=False)).float().eval()
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    shutil.copy(BUNDLED_TOKENIZER, tmp_path / "hf" / "tokenizer.json")
    prompt = "In the beginning God created"
    ids = tok.encode(prompt).ids
    want = tok.decode(ids + theirs(model, ids, eos_token_id=None), skip_special_tokens=False)
    r = generate(build_dir, "--load-hf", str(tmp_path / "hf"), "--prompt", prompt, "--max-new-tokens", str(NEW),
                 "--ignore-eos")
    assert r.stdout == want + "\n"
    # A batch from a prompts file: one completion per prompt, in order.
    (tmp_path / "prompts.txt").write_text(f"{prompt}\n\nAnd the earth\n")
    r = generate(build_dir, "--load-hf", str(tmp_path / "hf"), "--prompts-file", str(tmp_path / "prompts.txt"),
                 "--max-new-tokens", str(NEW), "--ignore-eos")
    ids2 = tok.encode("And the earth").ids
    assert r.stdout == want + "\n" + tok.decode(ids2 + theirs(model, ids2, eos_token_id=None)) + "\n"


MPIRUN = shutil.which("mpirun")
MPI_FLAGS = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"]


def ours_tp2_ids(build_dir, load_flags, prompts):
    """`megatron generate` with tensor parallelism 2 under mpirun (CPU, one thread per rank)."""
    cmd = [MPIRUN, *MPI_FLAGS, "-np", "2", "-x", "OMP_NUM_THREADS=1", str(build_dir / "megatron"), "generate",
           "--device", "cpu", "--tensor-model-parallel-size", "2", *load_flags, "--output-token-ids",
           "--max-new-tokens", str(NEW)]
    for p in prompts:
        cmd += ["--prompt-token-ids", ",".join(map(str, p))]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return [[int(t) for t in line.split(",")] for line in r.stdout.strip().splitlines()]


@pytest.mark.skipif(MPIRUN is None, reason="no mpirun")
def test_tensor_parallel_2_matches_transformers(build_dir, saved):
    model, d = saved
    assert ours_tp2_ids(build_dir, ["--load-hf", str(d)], PROMPTS) == [theirs(model, p) for p in PROMPTS]


# --- our own checkpoint (--load) --------------------------------------------------------------

LLAMA_TRAIN = ["--device", "cpu", "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "8",
               "--group-query-attention", "--num-query-groups", "2", "--ffn-hidden-size", "96",
               "--normalization", "RMSNorm", "--swiglu", "--position-embedding-type", "rope", "--rotary-base",
               "500000", "--disable-bias-linear", "--untie-embeddings-and-output-weights", "--seq-length", "32",
               "--micro-batch-size", "2", "--global-batch-size", "2", "--train-iters", "3", "--eval-iters", "0",
               "--lr", "1e-3"]


def hf_llama_from_our_checkpoint(ck_dir):
    """The same weights as a transformers LlamaForCausalLM (Megatron's per-group fused QKV and stacked
    gate/up split back), from the single-rank shard of our latest checkpoint."""
    it = (ck_dir / "latest_checkpointed_iteration.txt").read_text().strip()
    d = ck_dir / f"iter_{int(it):07d}"
    args = json.loads((d / "common.json").read_text())["args"]
    w = load_file(str(next(d.glob("shard_*.safetensors"))))
    Hh, Gg, Cc, F = args["num_attention_heads"], args["num_query_groups"], args["hidden_size"], args["ffn_hidden_size"]
    Dd = Cc // Hh
    cfg = LlamaConfig(vocab_size=args["vocab_size"], hidden_size=Cc, intermediate_size=F,
                      num_hidden_layers=args["num_layers"], num_attention_heads=Hh, num_key_value_heads=Gg,
                      max_position_embeddings=args["max_position_embeddings"], rope_theta=args["rotary_base"],
                      rms_norm_eps=args["layernorm_epsilon"], tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).float().eval()
    sd = {"model.embed_tokens.weight": w["embedding.word_embeddings.weight"],
          "model.norm.weight": w["decoder.final_layernorm.weight"], "lm_head.weight": w["output_layer.weight"]}
    for i in range(args["num_layers"]):
        o, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        qkv = w[o + "self_attention.linear_qkv.weight"].view(Gg, Hh // Gg + 2, Dd, Cc)
        fc1 = w[o + "mlp.linear_fc1.weight"].reshape(2 * F, Cc)  # [gate; up]
        sd.update({h + "input_layernorm.weight": w[o + "input_layernorm.weight"],
                   h + "self_attn.q_proj.weight": qkv[:, :Hh // Gg].reshape(Hh * Dd, Cc),
                   h + "self_attn.k_proj.weight": qkv[:, Hh // Gg].reshape(Gg * Dd, Cc),
                   h + "self_attn.v_proj.weight": qkv[:, Hh // Gg + 1].reshape(Gg * Dd, Cc),
                   h + "self_attn.o_proj.weight": w[o + "self_attention.linear_proj.weight"],
                   h + "post_attention_layernorm.weight": w[o + "pre_mlp_layernorm.weight"],
                   h + "mlp.gate_proj.weight": fc1[:F], h + "mlp.up_proj.weight": fc1[F:],
                   h + "mlp.down_proj.weight": w[o + "mlp.linear_fc2.weight"]})
    model.load_state_dict(sd, strict=True)
    return model


def test_our_checkpoint_matches_transformers_on_its_weights(build_dir, tmp_path):
    ck = tmp_path / "ck"
    data = ["--data-path", str(REPO / "data" / "kjv_bpe4k_text_document"), "--tokenizer-type", "HuggingFaceTokenizer",
            "--tokenizer-model", str(BUNDLED_TOKENIZER), "--split", "100,0,0",
            "--data-cache-path", str(tmp_path / "cache")]
    r = subprocess.run([str(build_dir / "megatron"), "train", *LLAMA_TRAIN, *data, "--save", str(ck),
                        "--save-interval", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    model = hf_llama_from_our_checkpoint(ck)
    prompts = [[5, 17, 42, 7, 99], [3, 4, 1000, 2000]]
    args = ["--load", str(ck), "--output-token-ids", "--max-new-tokens", str(NEW), "--ignore-eos"]
    for p in prompts:
        args += ["--prompt-token-ids", ",".join(map(str, p))]
    got = [[int(t) for t in line.split(",")] for line in generate(build_dir, *args).stdout.strip().splitlines()]
    assert got == [theirs(model, p, eos_token_id=None) for p in prompts]
    if MPIRUN:  # the single-rank checkpoint resharded over 2 tensor-parallel ranks
        assert ours_tp2_ids(build_dir, ["--load", str(ck), "--ignore-eos"], prompts) == got
    # The run's tokenizer (recorded in the checkpoint's arguments) reads text prompts.
    tok = Tokenizer.from_file(str(BUNDLED_TOKENIZER))
    ids = tok.encode("And God said").ids
    r = generate(build_dir, "--load", str(ck), "--prompt", "And God said", "--max-new-tokens", "8", "--ignore-eos")
    with torch.no_grad():
        gen = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=8, eos_token_id=None)[0].tolist()
    assert r.stdout == tok.decode(gen) + "\n"


# --- bad input ----------------------------------------------------------------------------------

def assert_user_error(r, *needles):
    user_errors.assert_user_error(r, *needles, empty_stdout=True)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama") / "hf"
    random_model("llama_gqa_untied").save_pretrained(d, safe_serialization=True)
    return d


def test_cli_errors(build_dir, llama_dir, tmp_path):
    d = str(llama_dir)
    ids = ["--prompt-token-ids", "1,2,3", "--output-token-ids"]
    assert_user_error(generate(build_dir, *ids, check=False), "--load DIR or --load-hf DIR")
    assert_user_error(generate(build_dir, "--load-hf", d, "--load", d, *ids, check=False), "--load DIR or --load-hf")
    assert_user_error(generate(build_dir, "--load-hf", str(tmp_path / "none"), *ids, check=False), "none")
    assert_user_error(generate(build_dir, "--load-hf", d, "--output-token-ids", check=False), "--prompt")
    assert_user_error(generate(build_dir, "--load-hf", d, "--prompt-token-ids", "1,x", "--output-token-ids",
                               check=False), "--prompt-token-ids \"1,x\"")
    assert_user_error(generate(build_dir, "--load-hf", d, "--prompt-token-ids", "1,300", "--output-token-ids",
                               check=False), "token id 300", "vocabulary of 300")
    assert_user_error(generate(build_dir, "--load-hf", d, *ids, "--max-new-tokens", "62", check=False),
                      "3 tokens + --max-new-tokens 62", "64 positions")
    assert_user_error(generate(build_dir, "--load-hf", d, *ids, "--max-new-tokens", "0", check=False),
                      "--max-new-tokens 0")
    assert_user_error(generate(build_dir, "--load-hf", d, *ids, "--top-p", "0", check=False), "--top-p 0")
    assert_user_error(generate(build_dir, "--load-hf", d, *ids, "--temperature", "-1", check=False), "--temperature")
    assert_user_error(generate(build_dir, "--load-hf", d, "--prompt", "hello", check=False), "no tokenizer",
                      "--load-hf " + d)
    assert_user_error(generate(build_dir, "--load-hf", d, "--prompts-file", str(tmp_path / "missing.txt"),
                               "--output-token-ids", check=False), "--prompts-file", "missing.txt")
    assert_user_error(generate(build_dir, "--load-hf", d, *ids, "--no-such-flag", check=False),
                      "megatron generate: error", "--no-such-flag")
    assert_user_error(generate(build_dir, "--load", str(tmp_path), *ids, check=False), str(tmp_path))
    assert_user_error(generate(build_dir, "--load-hf", d, *ids, "--tensor-model-parallel-size", "2", check=False),
                      "--tensor-model-parallel-size 2 with 1 process(es)")
