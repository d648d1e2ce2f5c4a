"""`megatron convert` against transformers: tiny random GPT2LMHeadModel, LlamaForCausalLM (GQA, untied,
theta 500000, with and without Llama 3 rope scaling; in fp32 and bf16), Qwen2ForCausalLM (q/k/v bias),
Qwen3ForCausalLM (q/k norm, tied) and MistralForCausalLM go Hugging Face -> our checkpoint -> Hugging Face
and come back bit-identical in every tensor, with the same config (every key the original has) and the
tokenizer and generation files copied; transformers loads the result and gives the original's logits
(fp32, within 1e-5). The model our importer builds, exported (save_hf_model), does too. The converted
checkpoint trains with no architecture flags (one rank, and TP=2 under mpirun). Bad input (no config,
an unknown architecture, malformed safetensors, a layout the model cannot split) is one line and exit 2."""
import json
import shutil
import struct
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hf_tiny_models import V, tiny_hf_model
from user_errors import assert_user_error

T = 16
MODELS = ("gpt2", "llama_gqa_untied", "llama31_scaling", "qwen2_qkv_bias", "qwen3_qk_norm_tied", "mistral")
# Assets a real model directory has beside its weights (the tokenizer's content is not read).
ASSETS = {"tokenizer.json": '{"version": "1.0", "model": {"type": "BPE"}}\n',
          "tokenizer_config.json": '{"model_max_length": 64}\n',
          "special_tokens_map.json": '{"eos_token": "</s>"}\n'}


def megatron(build_dir, *args, timeout=120):
    return subprocess.run([str(build_dir / "megatron"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def make_model(name, dtype=torch.float32):
    torch.manual_seed(0)
    model = tiny_hf_model(name).eval()
    with torch.no_grad():  # norms and biases away from their init, so their mapping is exercised
        for pname, p in model.named_parameters():
            if "norm" in pname or "ln_" in pname or pname.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.to(dtype)


def weights(d):
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


CASES = sorted(MODELS) + ["llama_gqa_untied:bf16", "qwen2_qkv_bias:sharded"]


@pytest.fixture(scope="module", params=CASES)
def roundtrip(request, build_dir, tmp_path_factory):
    name, _, variant = request.param.partition(":")
    tmp = tmp_path_factory.mktemp(name)
    model = make_model(name, torch.bfloat16 if variant == "bf16" else torch.float32)
    model.save_pretrained(tmp / "hf", safe_serialization=True)
    for f, text in ASSETS.items():
        (tmp / "hf" / f).write_text(text)
    r = megatron(build_dir, "convert", "--from", "hf", "--to", "megatron", "--input", tmp / "hf", "--output",
                 tmp / "ck")
    assert r.returncode == 0, r.stderr
    extra = ["--max-shard-size", "40KB"] if variant == "sharded" else []
    r = megatron(build_dir, "convert", "--from", "megatron", "--to", "hf", "--input", tmp / "ck", "--output",
                 tmp / "back", *extra)
    assert r.returncode == 0, r.stderr
    return name, variant, model, tmp


def test_every_tensor_is_bit_identical(roundtrip):
    _, variant, _, tmp = roundtrip
    a, b = weights(tmp / "hf"), weights(tmp / "back")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)) if a[k].numel() else True, k
    if variant == "bf16":
        assert all(t.dtype == torch.bfloat16 for t in b.values())


def test_config_agrees_and_files_are_copied(roundtrip):
    _, variant, _, tmp = roundtrip
    orig = json.loads((tmp / "hf" / "config.json").read_text())
    back = json.loads((tmp / "back" / "config.json").read_text())
    for k, v in orig.items():
        if k != "transformers_version":
            assert back.get(k) == v, (k, back.get(k), v)
    for f in ["generation_config.json", *ASSETS]:
        assert (tmp / "back" / f).read_bytes() == (tmp / "hf" / f).read_bytes(), f
    if variant == "sharded":
        index = json.loads((tmp / "back" / "model.safetensors.index.json").read_text())
        files = set(index["weight_map"].values())
        assert len(files) > 1 and all((tmp / "back" / f).exists() for f in files)
        assert not (tmp / "back" / "model.safetensors").exists()
        # The reference reader accepts our files, and their metadata says format pt.
        with open(tmp / "back" / sorted(files)[0], "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            assert json.loads(f.read(n))["__metadata__"] == {"format": "pt"}


def test_transformers_loads_the_export_with_the_same_logits(roundtrip):
    _, variant, model, tmp = roundtrip
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
    back = AutoModelForCausalLM.from_pretrained(tmp / "back").eval()
    assert type(back) is type(model)
    with torch.no_grad():
        want, got = model.float()(ids).logits, back.float()(ids).logits
    assert (want - got).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["gpt2", "llama31_scaling", "qwen3_qk_norm_tied"])
def test_our_model_exported_loads_in_transformers(build_dir, tmp_path, name):
    """Import into a GPTModel (hf_probe), save_hf_model, and load that with transformers."""
    model = make_model(name)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ids = torch.randint(0, V, (2, T))
    save_file({"input_ids": ids, "labels": ids.clone()}, str(tmp_path / "in.safetensors"))
    r = subprocess.run([str(build_dir / "tools" / "hf_probe"), str(tmp_path / "hf"), str(tmp_path / "in.safetensors"),
                        str(tmp_path / "out.safetensors"), str(tmp_path / "export")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        assert (model(ids).logits - back(ids).logits).abs().max().item() <= 1e-5
    a, b = weights(tmp_path / "hf"), weights(tmp_path / "export")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


TRAIN = ["--mock-data", "--seq-length", "16", "--micro-batch-size", "2", "--global-batch-size", "2",
         "--train-iters", "2", "--log-interval", "1", "--eval-iters", "0"]


def test_converted_checkpoint_trains_without_architecture_flags(roundtrip, build_dir):
    name, variant, _, tmp = roundtrip
    if variant:
        pytest.skip("one training run per family")
    r = megatron(build_dir, "train", "--load", tmp / "ck", "--save", tmp / "trained", "--save-interval", "2", *TRAIN)
    assert r.returncode == 0, r.stderr
    assert "> architecture from the checkpoint to load: --num-layers 2" in r.stdout
    assert "--no-load-optim" in r.stdout and "> loaded checkpoint" in r.stdout
    assert "iteration        2/       2" in r.stdout
    # The trained checkpoint goes back to Hugging Face with the original's config and tokenizer files.
    r = megatron(build_dir, "convert", "--from", "megatron", "--to", "hf", "--input", tmp / "trained", "--output",
                 tmp / "trained_hf", "--hf-assets", tmp / "hf")
    assert r.returncode == 0, r.stderr
    model_type = json.loads((tmp / "hf" / "config.json").read_text())["model_type"]
    assert json.loads((tmp / "trained_hf" / "config.json").read_text())["model_type"] == model_type
    assert (tmp / "trained_hf" / "tokenizer.json").exists()
    AutoModelForCausalLM.from_pretrained(tmp / "trained_hf")
    # A shape flag that disagrees with the checkpoint is one line.
    assert_user_error(megatron(build_dir, "train", "--load", tmp / "ck", "--num-layers", "3", *TRAIN),
                      "--num-layers: checkpoint 2, now 3")


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun")
def test_converted_checkpoint_trains_under_tensor_parallelism(build_dir, tmp_path):
    make_model("llama_gqa_untied").save_pretrained(tmp_path / "hf", safe_serialization=True)
    r = megatron(build_dir, "convert", "--from", "hf", "--to", "megatron", "--input", tmp_path / "hf", "--output",
                 tmp_path / "ck", "--target-tensor-parallel-size", "2")
    assert r.returncode == 0, r.stderr
    meta = json.loads(next((tmp_path / "ck").glob("iter_*/metadata.json")).read_text())
    assert meta["layout"]["tp"] == 2
    r = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", str(build_dir / "megatron"),
                        "train", "--load", str(tmp_path / "ck"), "--tensor-model-parallel-size", "2", *TRAIN],
                       capture_output=True, text=True, timeout=180, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "iteration        2/       2" in r.stdout


# ---- bad input ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_hf(tmp_path_factory):
    d = tmp_path_factory.mktemp("small") / "hf"
    make_model("llama_gqa_untied").save_pretrained(d, safe_serialization=True)
    return d


def convert_to_megatron(build_dir, src, out):
    return megatron(build_dir, "convert", "--from", "hf", "--to", "megatron", "--input", src, "--output", out)


def test_missing_config_is_one_line(build_dir, tmp_path):
    (tmp_path / "hf").mkdir()
    assert_user_error(convert_to_megatron(build_dir, tmp_path / "hf", tmp_path / "ck"), "config.json")


def test_unknown_architecture_is_one_line(build_dir, small_hf, tmp_path):
    shutil.copytree(small_hf, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "bert", ["BertForMaskedLM"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    assert_user_error(convert_to_megatron(build_dir, tmp_path / "hf", tmp_path / "ck"), 'model_type "bert"')
    assert not (tmp_path / "ck").exists()


def test_missing_tensor_is_one_line_and_writes_nothing(build_dir, small_hf, tmp_path):
    shutil.copytree(small_hf, tmp_path / "hf")
    w = load_file(str(tmp_path / "hf" / "model.safetensors"))
    del w["model.layers.1.mlp.up_proj.weight"]
    save_file(w, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    assert_user_error(convert_to_megatron(build_dir, tmp_path / "hf", tmp_path / "ck"),
                      "model.layers.1.mlp.up_proj.weight is missing")
    assert not (tmp_path / "ck").exists()


def raw_safetensors(header, data_bytes):
    text = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data_bytes)


X = '"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
MALFORMED = {  # a transformers file broken, or a file by hand: (make from the good bytes, words of the error)
    "header_past_eof": (lambda b: struct.pack("<Q", len(b)) + b[8:], ["truncated: header length"]),
    "truncated_data": (lambda b: b[:-7], ["tensor \"", "out of range", "truncated"]),
    "duplicate_key": (lambda b: raw_safetensors("{" + X + "," + X + "}", 4), ['key "x" twice']),
    "overlap": (lambda b: raw_safetensors({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                           "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12),
                ['"y"', "overlap"]),
    "gap": (lambda b: raw_safetensors({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                       "y": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, 12),
            ['"y"', "gap of 4 bytes"]),
    "unknown_dtype": (lambda b: raw_safetensors({"x": {"dtype": "F24", "shape": [1], "data_offsets": [0, 3]}}, 3),
                      ['"x"', 'unknown dtype "F24"']),
    "shape_vs_bytes": (lambda b: raw_safetensors({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}}, 8),
                       ['"x"', "needs 6 bytes but data_offsets span 8"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_safetensors_is_one_line(build_dir, small_hf, tmp_path, case):
    shutil.copytree(small_hf, tmp_path / "hf")
    f = tmp_path / "hf" / "model.safetensors"
    make, needles = MALFORMED[case]
    f.write_bytes(make(f.read_bytes()))
    assert_user_error(convert_to_megatron(build_dir, tmp_path / "hf", tmp_path / "ck"), str(f), *needles)
    assert not (tmp_path / "ck").exists()


def test_bad_flags_are_one_line(build_dir, small_hf, tmp_path):
    assert_user_error(megatron(build_dir, "convert", "--from", "hf", "--to", "megatron", "--input", small_hf,
                               "--output", tmp_path / "ck", "--target-tensor-parallel-size", "3"),
                      "--target-tensor-parallel-size 3 does not divide the model's attention heads (8)")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert_user_error(convert_to_megatron(build_dir, small_hf, tmp_path / "full"), "not an empty directory")
    assert_user_error(megatron(build_dir, "convert", "--from", "megatron", "--to", "hf", "--input", small_hf,
                               "--output", tmp_path / "o"), str(small_hf))
    assert_user_error(megatron(build_dir, "convert", "--from", "hf", "--to", "hf", "--input", small_hf,
                               "--output", tmp_path / "o"), "nothing to convert")
    assert_user_error(megatron(build_dir, "convert", "--from", "megatron", "--to", "hf", "--input", small_hf,
                               "--output", tmp_path / "o", "--max-shard-size", "5XB"), "--max-shard-size")
