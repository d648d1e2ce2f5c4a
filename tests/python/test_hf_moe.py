"""Mixture-of-Experts models from and to Hugging Face, against transformers itself: tiny random
MixtralForCausalLM (every layer MoE, top-2 of 4 renormalised) and Qwen3MoeForCausalLM (q/k norm; with
norm_topk_prob and its last layer dense through mlp_only_layers, and without norm_topk_prob: the
softmax over all experts, --moe-router-pre-softmax). Imported (fp32), our logits are transformers'
within 1e-4; the model we built, exported, is the original tensor for tensor (bit-identical) with a
config transformers reads as the same model; `megatron convert` there and back is bit-identical with
every config key kept, also from transformers 5's fused expert tensors (gate_up_proj, down_proj, as
its state_dict() holds them). `megatron generate --load-hf` gives `model.generate`'s greedy tokens
(one process, and tensor parallelism 2), and so does `generate --load` of a checkpoint of ours against
transformers on its conversion. `megatron train --load-hf --save-hf` with lr 0 writes the
weights back bit-identical under one rank, EP=2, TP=2 x EP=2 and PP=2 x EP=2; the first loss equals
the converted checkpoint's; a few real steps write a model transformers loads and generates with as
we do. Bad input is one line and exit code 2."""
import json
import os
import re
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hf_tiny_models import V, tiny_hf_model
from user_errors import assert_user_error

MODELS = ("mixtral", "qwen3_moe_dense_last", "qwen3_moe_no_norm_topk")
T = 16
PROMPTS = [[5, 17, 42, 7, 99], [3, 4], [250, 1, 8, 9, 10, 11, 12, 13, 14, 15, 16], [77]]
NEW = 16
TRAIN = ["--mock-data", "--seq-length", "16", "--micro-batch-size", "2", "--global-batch-size", "8",
         "--log-interval", "1", "--eval-iters", "0", "--device", "cpu"]
# MEGATRON_GENERATE_DEVICE=cuda: one process's generation on the GPU (fp32; scripts/device-test.sh).
DEVICE = os.environ.get("MEGATRON_GENERATE_DEVICE", "cpu")
MPI_FLAGS = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def megatron(build_dir, *args, np=1, check=True, timeout=300):
    cmd = [str(build_dir / "megatron"), *map(str, args)]
    if np > 1:
        if shutil.which("mpirun") is None:
            pytest.skip("no mpirun")
        cmd = ["mpirun", *MPI_FLAGS, "-np", str(np), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check:
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return r


def make_model(name, num_layers=2):
    torch.manual_seed(0)
    model = tiny_hf_model(name, num_layers).float().eval()
    with torch.no_grad():  # norms away from their init, so their mapping is exercised
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.add_(0.1 * torch.randn_like(p))
    return model


def weights(d):
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def assert_bit_identical(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """name -> (name, the transformers model, a directory whose hf/ holds it saved), made once."""
    made = {}

    def get(name):
        if name not in made:
            tmp = tmp_path_factory.mktemp(name)
            model = make_model(name)
            model.save_pretrained(tmp / "hf")
            made[name] = (name, model, tmp)
        return made[name]
    return get


@pytest.fixture(scope="module", params=MODELS)
def saved(request, zoo):
    return zoo(request.param)


def test_tiny_models_are_what_they_claim(saved):
    """The per-expert tensors save_pretrained writes, and the MoE layout of each config."""
    name, model, tmp = saved
    w = weights(tmp / "hf")
    cfg = json.loads((tmp / "hf" / "config.json").read_text())
    if name == "mixtral":
        assert w["model.layers.1.block_sparse_moe.experts.3.w1.weight"].shape == (32, 64)
        assert w["model.layers.1.block_sparse_moe.gate.weight"].shape == (4, 64)
    else:
        assert w["model.layers.0.mlp.experts.3.gate_proj.weight"].shape == (32, 64)
        assert cfg["norm_topk_prob"] == (name == "qwen3_moe_dense_last")
        dense_last = "model.layers.1.mlp.gate_proj.weight" in w
        assert dense_last == (name == "qwen3_moe_dense_last")
        if dense_last:
            assert w["model.layers.1.mlp.gate_proj.weight"].shape == (96, 64)


def probe(build_dir, hf_dir, tmp, ids):
    """hf_probe: our model's logits for ids, and that model exported (save_hf_model) to tmp/export."""
    save_file({"input_ids": ids, "labels": ids.clone()}, str(tmp / "in.safetensors"))
    r = subprocess.run([str(build_dir / "tools" / "hf_probe"), str(hf_dir), str(tmp / "in.safetensors"),
                        str(tmp / "out.safetensors"), str(tmp / "export")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return load_file(str(tmp / "out.safetensors"))["logits"]


def test_import_gives_transformers_logits_and_export_is_bit_identical(build_dir, saved, tmp_path):
    name, model, tmp = saved
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
    ours = probe(build_dir, tmp / "hf", tmp_path, ids)
    assert (ours - logits(model, ids)).abs().max().item() <= 1e-4
    assert_bit_identical(weights(tmp / "hf"), weights(tmp_path / "export"))
    # The config written without a base (ours alone) is read by transformers as the same model.
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(back) is type(model)
    for key in ("num_experts_per_tok", "norm_topk_prob", "mlp_only_layers", "moe_intermediate_size",
                "intermediate_size", "num_local_experts", "decoder_sparse_step"):
        if hasattr(model.config, key):
            assert getattr(back.config, key) == getattr(model.config, key), key
    assert torch.equal(logits(back, ids), logits(model, ids))


@pytest.fixture(scope="module")
def roundtrip(build_dir, saved):
    name, model, tmp = saved
    assert megatron(build_dir, "convert", "--from", "hf", "--to", "megatron", "--input", tmp / "hf",
                    "--output", tmp / "ck").returncode == 0
    assert megatron(build_dir, "convert", "--from", "megatron", "--to", "hf", "--input", tmp / "ck",
                    "--output", tmp / "back").returncode == 0
    return name, model, tmp


def test_convert_round_trip_is_bit_identical_with_the_same_config(roundtrip):
    _, model, tmp = roundtrip
    assert_bit_identical(weights(tmp / "hf"), weights(tmp / "back"))
    orig = json.loads((tmp / "hf" / "config.json").read_text())
    back = json.loads((tmp / "back" / "config.json").read_text())
    for k, v in orig.items():
        if k != "transformers_version":
            assert back.get(k) == v, (k, back.get(k), v)
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(2))
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(tmp / "back").eval(), ids), logits(model, ids))


def test_converted_checkpoint_records_the_experts_and_trains_without_flags(build_dir, roundtrip):
    name, _, tmp = roundtrip
    args = json.loads(next((tmp / "ck").glob("iter_*/common.json")).read_text())["args"]
    assert (args["num_experts"], args["moe_router_topk"], args["moe_ffn_hidden_size"]) == (4, 2, 32)
    assert args["moe_layer_freq"] == ("[1,0]" if name == "qwen3_moe_dense_last" else "1")
    assert args["moe_router_pre_softmax"] == (name == "qwen3_moe_no_norm_topk")
    r = megatron(build_dir, "train", "--load", tmp / "ck", "--train-iters", "1", *TRAIN)
    assert "--num-experts 4 --moe-ffn-hidden-size 32" in r.stdout
    assert ("--moe-router-pre-softmax" in r.stdout) == (name == "qwen3_moe_no_norm_topk")
    ref = losses(r.stdout)
    # The same model from the Hugging Face directory: the same first loss (and router loss).
    one = losses(megatron(build_dir, "train", "--load-hf", tmp / "hf", "--train-iters", "1", *TRAIN).stdout)
    assert len(ref) == len(one) == 1 and one[0] == pytest.approx(ref[0], rel=1e-6)
    assert ref[0] == pytest.approx(5.70, abs=0.2)  # about ln(300): a random model


def losses(out):
    return [float(x) for x in re.findall(r"lm loss: ([0-9.E+-]+)", out)]


def test_fused_expert_tensors_import(build_dir, saved, tmp_path):
    """A directory holding transformers 5's in-memory layout (save_file of state_dict(): the router as
    mlp.gate, each layer's experts in gate_up_proj [E, 2F, C] and down_proj [E, C, F])."""
    name, model, tmp = saved
    fused = tmp_path / "fused"
    fused.mkdir()
    shutil.copy(tmp / "hf" / "config.json", fused / "config.json")
    sd = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del sd["lm_head.weight"]  # as save_pretrained leaves it out
    assert "model.layers.0.mlp.experts.gate_up_proj" in sd
    save_file(sd, str(fused / "model.safetensors"), metadata={"format": "pt"})
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(3))
    assert (probe(build_dir, fused, tmp_path, ids) - logits(model, ids)).abs().max().item() <= 1e-4
    # Written back as save_pretrained writes: the per-expert tensors, bit for bit.
    assert_bit_identical(weights(tmp / "hf"), weights(tmp_path / "export"))
    assert megatron(build_dir, "convert", "--from", "hf", "--to", "megatron", "--input", fused, "--output",
                    tmp_path / "ck").returncode == 0
    assert megatron(build_dir, "convert", "--from", "megatron", "--to", "hf", "--input", tmp_path / "ck",
                    "--output", tmp_path / "back").returncode == 0
    assert_bit_identical(weights(tmp / "hf"), weights(tmp_path / "back"))


def ours_ids(build_dir, model_dir, prompts, np=1):
    device = DEVICE if np == 1 else "cpu"
    args = ["generate", "--device", device, "--load-hf", model_dir, "--output-token-ids", "--max-new-tokens", NEW]
    if np > 1:
        args += ["--tensor-model-parallel-size", np]
    for p in prompts:
        args += ["--prompt-token-ids", ",".join(map(str, p))]
    out = megatron(build_dir, *args, np=np).stdout.strip().splitlines()
    assert len(out) == len(prompts), out
    return [[int(t) for t in line.split(",")] for line in out]


def theirs(model, prompt):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=NEW)
    return out[0, len(prompt):].tolist()


def test_greedy_generation_matches_transformers(build_dir, saved):
    _, model, tmp = saved
    want = [theirs(model, p) for p in PROMPTS]
    assert ours_ids(build_dir, tmp / "hf", PROMPTS) == want  # a batch of different lengths
    assert ours_ids(build_dir, tmp / "hf", PROMPTS[:1]) == want[:1]


def test_greedy_generation_under_tensor_parallelism(build_dir, zoo):
    _, model, tmp = zoo("qwen3_moe_dense_last")
    assert ours_ids(build_dir, tmp / "hf", PROMPTS, np=2) == [theirs(model, p) for p in PROMPTS]


# ---- train --load-hf / --save-hf --------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixtral4(tmp_path_factory):
    """Four layers, so that two pipeline stages each hold two."""
    d = tmp_path_factory.mktemp("mixtral4") / "hf"
    make_model("mixtral", num_layers=4).save_pretrained(d)
    return d


LAYOUTS = {"one_rank": (1, []), "ep2": (2, ["--expert-model-parallel-size", "2"]),
           "tp2_ep2": (4, ["--tensor-model-parallel-size", "2", "--expert-model-parallel-size", "2"]),
           "pp2_ep2": (4, ["--pipeline-model-parallel-size", "2", "--expert-model-parallel-size", "2"])}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_train_with_lr_zero_writes_the_weights_back_bit_identical(build_dir, mixtral4, tmp_path, layout):
    np, flags = LAYOUTS[layout]
    r = megatron(build_dir, "train", "--load-hf", mixtral4, "--save-hf", tmp_path / "out", "--train-iters", "1",
                 "--lr", "0", "--min-lr", "0", *TRAIN, *flags, np=np)
    assert "> saved a Hugging Face MixtralForCausalLM" in r.stdout
    assert_bit_identical(weights(mixtral4), weights(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_local_experts"] == 4


def test_trained_model_loads_in_transformers_and_generates_as_ours(build_dir, mixtral4, tmp_path):
    megatron(build_dir, "train", "--load-hf", mixtral4, "--save-hf", tmp_path / "out", "--train-iters", "3",
             "--lr", "1e-3", *TRAIN)
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    a, b = weights(mixtral4), weights(tmp_path / "out")
    assert sorted(a) == sorted(b)
    for k in ("model.layers.0.block_sparse_moe.gate.weight", "model.layers.3.block_sparse_moe.experts.0.w2.weight"):
        assert not torch.equal(a[k], b[k]), k  # it trained, router and experts included
    assert ours_ids(build_dir, tmp_path / "out", PROMPTS[:2]) == [theirs(trained, p) for p in PROMPTS[:2]]


def test_our_trained_checkpoint_generates_as_transformers_on_its_export(build_dir, zoo, tmp_path):
    """`megatron generate --load` of an MoE checkpoint of ours (the experts from its arguments), one
    process and TP=2, against transformers on the same checkpoint converted to Hugging Face."""
    _, _, tmp = zoo("qwen3_moe_dense_last")
    megatron(build_dir, "train", "--load-hf", tmp / "hf", "--save", tmp_path / "ck", "--save-interval", "3",
             "--train-iters", "3", "--lr", "1e-3", *TRAIN)
    megatron(build_dir, "convert", "--from", "megatron", "--to", "hf", "--input", tmp_path / "ck", "--output",
             tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    want = [theirs(model, p) for p in PROMPTS]
    args = ["generate", "--load", tmp_path / "ck", "--output-token-ids", "--max-new-tokens", NEW]
    for p in PROMPTS:
        args += ["--prompt-token-ids", ",".join(map(str, p))]
    got = megatron(build_dir, *args, "--device", DEVICE).stdout.strip().splitlines()
    assert [[int(t) for t in line.split(",")] for line in got] == want
    tp2 = megatron(build_dir, *args, "--device", "cpu", "--tensor-model-parallel-size", "2", np=2)
    tp2 = tp2.stdout.strip().splitlines()
    assert [[int(t) for t in line.split(",")] for line in tp2] == want


# ---- bad input ------------------------------------------------------------------------------------

def test_missing_expert_tensor_is_one_line(build_dir, zoo, tmp_path):
    _, _, tmp = zoo("mixtral")
    shutil.copytree(tmp / "hf", tmp_path / "hf")
    w = load_file(str(tmp_path / "hf" / "model.safetensors"))
    del w["model.layers.1.block_sparse_moe.experts.3.w2.weight"]
    save_file(w, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    assert_user_error(megatron(build_dir, "convert", "--from", "hf", "--to", "megatron", "--input", tmp_path / "hf",
                               "--output", tmp_path / "ck", check=False),
                      "model.layers.1.block_sparse_moe.experts.3.w2.weight is missing")
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("key,value,needle", [
    ("num_experts_per_tok", 5, "num_experts_per_tok 5 must be between 1 and the 4 experts"),
    ("num_local_experts", 0, "num_local_experts 0 must be positive"),
    ("num_local_experts", None, 'missing "num_local_experts"'),
])
def test_bad_moe_config_is_one_line(build_dir, zoo, tmp_path, key, value, needle):
    _, _, tmp = zoo("mixtral")
    shutil.copytree(tmp / "hf", tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg[key] = value
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    assert_user_error(megatron(build_dir, "convert", "--from", "hf", "--to", "megatron", "--input", tmp_path / "hf",
                               "--output", tmp_path / "ck", check=False), "config.json", needle)


@pytest.mark.parametrize("flag,needle", [
    ("--moe-router-score-function=sigmoid", "cannot have a sigmoid router"),
    ("--moe-router-enable-expert-bias", "cannot have expert biases in the router"),
])
def test_save_hf_of_a_model_no_family_holds_fails_before_training(build_dir, tmp_path, flag, needle):
    r = megatron(build_dir, "train", "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
                 "--ffn-hidden-size", "96", "--swiglu", "--normalization", "RMSNorm", "--position-embedding-type",
                 "rope", "--disable-bias-linear", "--num-experts", "4", flag, "--vocab-size", "300",
                 "--train-iters", "1", *TRAIN, "--save-hf", tmp_path / "out", check=False)
    assert_user_error(r, "--save-hf", "MixtralForCausalLM", needle)
    assert "iteration" not in r.stdout
