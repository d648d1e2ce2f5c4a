"""`megatron convert --from megatron-lm` against Megatron-Core itself: a tiny GPT (LayerNorm, learned
positions, GeLU, biases, tied) and a tiny Llama (RMSNorm, RoPE, SwiGLU, grouped-query attention, untied,
no biases) built and saved by Megatron-Core on the CPU (megatron_lm_fixtures.py: torch_dist and the legacy
torch format, TP 1, TP 2 and PP 2, each saved by Megatron-Core's own parallel modules; the torch format
also under Transformer Engine's names and as an interleaved pipeline; torch_dist also with per-layer
keys and SwiGLU halves apart, and in bf16) convert to our checkpoint and give Megatron-Core's logits within
1e-5 (fp32) and its loss; so does transformers with `--to hf`; the result trains with no architecture flags, and `train --load` / `generate
--load` of the Megatron-LM directory itself convert on the fly (the same losses; TP 2 and PP 2 under
mpirun; Megatron-Core's greedy tokens). Malformed input (a truncated
zip, a bad pickle opcode, a truncated .distcp, tensors of other sizes than the args say, an unsupported
architecture, no checkpoint at all) is one line, exit 2, and leaves no output directory."""
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import zipfile

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from user_errors import assert_user_error

pytest.importorskip("megatron.core", reason="megatron-core is not installed (scripts/setup.sh --python)")

HERE = pathlib.Path(__file__).resolve().parent
CASES = [(m, f, l) for m in ("gpt", "llama") for f in ("torch_dist", "torch", "torch_te")
         for l in ("tp1", "tp2", "pp2") if not (f == "torch_te" and l == "pp2")]
CASES += [(m, f, l) for m in ("gpt", "llama")
          for f, l in (("torch_dist_singleton", "tp2"), ("torch", "vpp2"), ("torch_dist_bf16", "tp1"))]


def megatron(build_dir, *args, timeout=120):
    return subprocess.run([str(build_dir / "megatron"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def convert(build_dir, src, out):
    return megatron(build_dir, "convert", "--from", "megatron-lm", "--to", "megatron", "--input", src, "--output", out)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    out = tmp_path_factory.mktemp("megatron_lm")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE))
    r = subprocess.run([sys.executable, str(HERE / "megatron_lm_fixtures.py"), str(out)], capture_output=True,
                       text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


@pytest.mark.parametrize("model,fmt,layout", CASES, ids=["-".join(c) for c in CASES])
def test_logits_match_megatron_core(fixtures, build_dir, tmp_path, model, fmt, layout):
    src = fixtures / model / f"{fmt}_{layout}"
    r = convert(build_dir, src, tmp_path / "ck")
    assert r.returncode == 0, r.stderr
    assert f"(iteration 7, TP {2 if layout == 'tp2' else 1} x PP {1 if layout in ('tp1', 'tp2') else 2})" in r.stdout
    common = json.loads((tmp_path / "ck" / "iter_0000000" / "common.json").read_text())
    assert common["converted_from"]["format"] == "megatron-lm"
    assert common["converted_from"]["ckpt_format"] == ("torch_dist" if fmt.startswith("torch_dist") else "torch")
    if fmt.endswith("bf16"):  # kept in bf16 (the model's dtype), and recorded so
        meta = json.loads((tmp_path / "ck" / "iter_0000000" / "metadata.json").read_text())
        assert "BF16" in json.dumps(meta) and "F32" not in json.dumps(meta)
        assert common["args"]["bf16"] is True
    ref = torch.load(fixtures / model / ("ref_bf16.pt" if fmt.endswith("bf16") else "ref.pt"))
    tokens, labels = ref["tokens"], torch.roll(ref["tokens"], -1, 1).contiguous()
    save_file({"input_ids": tokens, "labels": labels}, str(tmp_path / "in.safetensors"))
    r = subprocess.run([str(build_dir / "tools" / "checkpoint_probe"), str(tmp_path / "ck"),
                        str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = load_file(str(tmp_path / "out.safetensors"))
    diff = (out["logits"] - ref["logits"]).abs().max().item()
    print(f"{model} {fmt} {layout}: max |logit difference| {diff:.3g}")
    assert diff <= 1e-5, diff
    loss = F.cross_entropy(ref["logits"].reshape(-1, ref["logits"].shape[-1]), labels.reshape(-1)).item()
    assert abs(out["loss"].item() - loss) <= 1e-5 * abs(loss)


@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_to_hugging_face_gives_megatron_core_logits(fixtures, build_dir, tmp_path, model):
    """--to hf: GPT2LMHeadModel / LlamaForCausalLM that transformers loads, with Megatron-Core's logits."""
    from transformers import AutoModelForCausalLM
    r = megatron(build_dir, "convert", "--from", "megatron-lm", "--to", "hf", "--input",
                 fixtures / model / "torch_dist_tp2", "--output", tmp_path / "hf")
    assert r.returncode == 0, r.stderr
    assert ("GPT2LMHeadModel" if model == "gpt" else "LlamaForCausalLM") in r.stdout
    ref = torch.load(fixtures / model / "ref.pt")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").float().eval()
    with torch.no_grad():
        logits = hf(ref["tokens"]).logits
    diff = (logits - ref["logits"]).abs().max().item()
    print(f"{model} -> transformers: max |logit difference| {diff:.3g}")
    assert diff <= 1e-5, diff


TRAIN = ["--mock-data", "--seq-length", "16", "--micro-batch-size", "2", "--global-batch-size", "2",
         "--train-iters", "2", "--log-interval", "1", "--eval-iters", "0"]


@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_converted_checkpoint_trains_without_architecture_flags(fixtures, build_dir, tmp_path, model):
    assert convert(build_dir, fixtures / model / "torch_dist_pp2", tmp_path / "ck").returncode == 0
    r = megatron(build_dir, "train", "--load", tmp_path / "ck", *TRAIN)
    assert r.returncode == 0, r.stderr
    assert "> architecture from the checkpoint to load: --num-layers 4" in r.stdout
    assert "iteration        2/       2" in r.stdout


@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_train_loads_megatron_lm_directly(fixtures, build_dir, tmp_path, model):
    """`megatron train --load` of the Megatron-LM directory itself: the losses of its converted copy."""
    assert convert(build_dir, fixtures / model / "torch_tp2", tmp_path / "ck").returncode == 0
    direct = megatron(build_dir, "train", "--load", fixtures / model / "torch_tp2", *TRAIN)
    assert direct.returncode == 0, direct.stderr
    assert "> loaded Megatron-LM torch checkpoint" in direct.stdout and "weights only" in direct.stdout
    converted = megatron(build_dir, "train", "--load", tmp_path / "ck", *TRAIN)
    assert converted.returncode == 0, converted.stderr
    assert losses(direct.stdout) == losses(converted.stdout) and len(losses(direct.stdout)) == 2


def losses(stdout):
    return [line.split("lm loss:")[1].split("|")[0].strip() for line in stdout.splitlines() if "lm loss:" in line]


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun")
@pytest.mark.parametrize("layout", [["--tensor-model-parallel-size", "2"], ["--pipeline-model-parallel-size", "2"]],
                         ids=["tp2", "pp2"])
def test_train_loads_megatron_lm_under_another_layout(fixtures, build_dir, layout):
    """Saved under PP 2, loaded under TP 2 or PP 2 (2 ranks): the single rank's losses."""
    src = fixtures / "gpt" / "torch_dist_pp2"
    one = megatron(build_dir, "train", "--load", src, *TRAIN)
    assert one.returncode == 0, one.stderr
    r = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", str(build_dir / "megatron"),
                        "train", "--load", str(src), *layout, *TRAIN], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    assert [float(x) for x in losses(r.stdout)] == pytest.approx([float(x) for x in losses(one.stdout)], rel=1e-5)


@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_generate_loads_megatron_lm_directly(fixtures, build_dir, model):
    """`megatron generate --load` of a Megatron-LM directory: Megatron-Core's greedy continuation."""
    ref = torch.load(fixtures / model / "ref.pt")
    r = megatron(build_dir, "generate", "--device", "cpu", "--load", fixtures / model / "torch_dist_tp2",
                 "--prompt-token-ids", ",".join(map(str, ref["prompt"])), "--output-token-ids", "--max-new-tokens",
                 len(ref["greedy"]), "--ignore-eos")
    assert r.returncode == 0, r.stderr
    assert [int(t) for t in r.stdout.strip().split(",")] == ref["greedy"]


# --- malformed input: one line, exit 2, nothing written ---------------------------------------------------


def copy_ckpt(fixtures, name, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(fixtures / name, dst)
    return dst


def assert_rejected(build_dir, src, tmp_path, *needles):
    assert_user_error(convert(build_dir, src, tmp_path / "ck"), *needles)
    assert not (tmp_path / "ck").exists()


def legacy_pt(src, rank="mp_rank_00"):
    return src / "iter_0000007" / rank / "model_optim_rng.pt"


def test_truncated_zip(fixtures, build_dir, tmp_path):
    src = copy_ckpt(fixtures, "gpt/torch_tp2", tmp_path)
    pt = legacy_pt(src, "mp_rank_01")
    data = pt.read_bytes()
    pt.write_bytes(data[: len(data) // 2])
    assert_rejected(build_dir, src, tmp_path, str(pt), "zip", "truncated")


def test_bad_pickle_opcode(fixtures, build_dir, tmp_path):
    src = copy_ckpt(fixtures, "llama/torch_tp1", tmp_path)
    pt = legacy_pt(src)
    with zipfile.ZipFile(pt, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("model_optim_rng/data.pkl", b"\x80\x02}q\x00\xff.")
    assert_rejected(build_dir, src, tmp_path, str(pt), "data.pkl", "bad pickle at byte 5 (opcode 0xff)")


def test_truncated_distcp(fixtures, build_dir, tmp_path):
    src = copy_ckpt(fixtures, "llama/torch_dist_tp2", tmp_path)
    distcp = sorted((src / "iter_0000007").glob("*.distcp"))[-1]
    distcp.write_bytes(distcp.read_bytes()[:100])
    assert_rejected(build_dir, src, tmp_path, str(distcp), "truncated")


def resave(pt, edit):
    state = torch.load(pt, weights_only=False)
    edit(state)
    torch.save(state, pt)


def test_tensor_sizes_other_than_the_args_say(fixtures, build_dir, tmp_path):
    src = copy_ckpt(fixtures, "llama/torch_tp1", tmp_path)
    resave(legacy_pt(src), lambda s: setattr(s["args"], "ffn_hidden_size", 96))
    assert_rejected(build_dir, src, tmp_path, "decoder.layers.0.mlp.linear_fc1.weight", "[256, 64]", "needs [192, 64]")


def test_storage_smaller_than_its_tensor(fixtures, build_dir, tmp_path):
    src = copy_ckpt(fixtures, "gpt/torch_tp1", tmp_path)
    pt = legacy_pt(src)
    with zipfile.ZipFile(pt) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    storages = sorted(n for n in entries if "/data/" in n)
    entries[storages[0]] = entries[storages[0]][:-4]  # one element short
    with zipfile.ZipFile(pt, "w", compression=zipfile.ZIP_STORED) as z:
        for n, b in entries.items():
            z.writestr(n, b)
    assert_rejected(build_dir, src, tmp_path, str(pt), f"storage {storages[0].split('/')[-1]}", "its pickle says")


def test_extra_tensor_is_rejected(fixtures, build_dir, tmp_path):
    src = copy_ckpt(fixtures, "gpt/torch_tp1", tmp_path)
    resave(legacy_pt(src), lambda s: s["model"].__setitem__("decoder.layers.0.mlp.router.weight", torch.zeros(4, 64)))
    assert_rejected(build_dir, src, tmp_path, "decoder.layers.0.mlp.router.weight", "not part of the architecture")


def test_unsupported_architecture(fixtures, build_dir, tmp_path):
    src = copy_ckpt(fixtures, "gpt/torch_tp1", tmp_path)
    resave(legacy_pt(src), lambda s: setattr(s["args"], "num_experts", 8))
    assert_rejected(build_dir, src, tmp_path, "Mixture-of-Experts", "not supported yet")


def test_missing_rank(fixtures, build_dir, tmp_path):
    src = copy_ckpt(fixtures, "llama/torch_pp2", tmp_path)
    shutil.rmtree(src / "iter_0000007" / "mp_rank_00_001")
    assert_rejected(build_dir, src, tmp_path, "args say 1 x 2")


def test_not_a_checkpoint(build_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_rejected(build_dir, tmp_path / "empty", tmp_path, "not a Megatron-LM checkpoint")
    (tmp_path / "empty" / "latest_checkpointed_iteration.txt").write_text("12")
    assert_rejected(build_dir, tmp_path / "empty", tmp_path, "iter_0000012")
