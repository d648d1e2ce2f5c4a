"""Tiny Megatron-LM checkpoints written by Megatron-Core itself (CPU, fp32, gloo), for
test_megatron_lm_checkpoint.py; run as a script: `python megatron_lm_fixtures.py OUT` writes

  OUT/<model>/ref.pt                            the tokens and Megatron-Core's logits for them (TP 1),
                                                and a prompt with its greedy continuation
  OUT/<model>/ref_bf16.pt                       the same for the weights rounded to bf16 (fp32 compute),
                                                saved as torch_dist_bf16_tp1 by a --bf16 run
  OUT/<model>/<format>_<layout>/                a checkpoint directory as Megatron-LM writes it:
      latest_checkpointed_iteration.txt
      iter_0000007/ .metadata, __*_*.distcp, common.pt, metadata.json      (format torch_dist)
      iter_0000007/ mp_rank_TT[_PPP]/model_optim_rng.pt                    (format torch)

for model gpt (LayerNorm, learned positions, GeLU, biases, tied) and llama (RMSNorm, RoPE, SwiGLU,
grouped-query attention, untied, no biases), layout tp1, tp2 (tensor parallel) and pp2 (pipeline
parallel), plus torch_dist_singleton_tp2 (Megatron's singleton_local_shards: per-layer keys, fc1's
gate and up halves apart) and torch_vpp2 (an interleaved pipeline, see save_torch_vpp_by_hand): 2 processes under torch.multiprocessing with the gloo backend, each building its part
of the model with Megatron-Core's own tensor/pipeline-parallel modules and loading the TP 1
checkpoint into it through dist_checkpointing (Megatron's resharding), then saving as Megatron-LM
does: dist_checkpointing.save of the sharded state dict with args in the common state (torch_dist),
and torch.save of each rank's state dict with args, rng state and optimizer state (torch). Also
`te` variants of the torch format: the state dict under Transformer Engine's names (layer norms
fused into linear_qkv / linear_fc1, _extra_state entries), as a TE-built model saves it.

Megatron-Core on a machine without CUDA needs a few shims, each a no-op on the CPU: torch.cuda.synchronize
and torch.cuda.current_device (its checkpoint writer), Tensor.cuda (the tied embedding's all-reduce
between the first and last pipeline stage) and the CUDA RNG tracker's fork around attention dropout
(which is off)."""
import argparse
import os
import random
import socket
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

LAYERS, C, HEADS, GROUPS, FF, VOCAB, SEQ, BATCH, ITER = 4, 64, 4, 2, 128, 128, 16, 2, 7
MODELS = ("gpt", "llama")
LAYOUTS = {"tp1": (1, 1), "tp2": (2, 1), "pp2": (1, 2)}


def _cpu_shims():
    warnings.filterwarnings("ignore")
    if not torch.cuda.is_available():
        import contextlib
        from megatron.core import tensor_parallel
        torch.cuda.synchronize = lambda *a, **k: None
        torch.cuda.current_device = lambda: "cpu"
        torch.Tensor.cuda = lambda self, *a, **k: self  # the tied embedding's first/last-stage all-reduce
        # The attention-dropout RNG fork needs a CUDA generator; dropout is off here.
        tensor_parallel.get_cuda_rng_tracker().fork = lambda *a, **k: contextlib.nullcontext()


def transformer_config(model, tp, pp):
    from megatron.core.transformer import TransformerConfig
    common = dict(num_layers=LAYERS, hidden_size=C, num_attention_heads=HEADS, ffn_hidden_size=FF,
                  use_cpu_initialization=True, hidden_dropout=0.0, attention_dropout=0.0,
                  params_dtype=torch.float32, layernorm_epsilon=1e-5, tensor_model_parallel_size=tp,
                  pipeline_model_parallel_size=pp, pipeline_dtype=torch.float32)
    if model == "gpt":  # tanh GeLU: Megatron-LM's --openai-gelu (and its default fused bias-GeLU)
        return TransformerConfig(**common, normalization="LayerNorm",
                                 activation_func=lambda x: F.gelu(x, approximate="tanh"))
    return TransformerConfig(**common, normalization="RMSNorm", num_query_groups=GROUPS, gated_linear_unit=True,
                             activation_func=F.silu, add_bias_linear=False)


def build(model, tp=1, pp=1, pp_rank=0):
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    cfg = transformer_config(model, tp, pp)
    spec = get_gpt_layer_local_spec(normalization=cfg.normalization)
    return GPTModel(config=cfg, transformer_layer_spec=spec, vocab_size=VOCAB, max_sequence_length=SEQ,
                    pre_process=pp_rank == 0, post_process=pp_rank == pp - 1,
                    position_embedding_type="learned_absolute" if model == "gpt" else "rope",
                    rotary_base=500000 if model == "llama" else 10000,
                    share_embeddings_and_output_weights=model == "gpt")


def megatron_lm_args(model, tp, pp, ckpt_format):
    """The argparse.Namespace Megatron-LM's training loop saves (the fields a loader reads, and a few
    others of the types it holds: None, enums, torch dtypes, lists)."""
    from megatron.core.transformer.enums import AttnBackend
    llama = model == "llama"
    return argparse.Namespace(
        num_layers=LAYERS, hidden_size=C, ffn_hidden_size=FF, num_attention_heads=HEADS, kv_channels=C // HEADS,
        group_query_attention=llama, num_query_groups=GROUPS if llama else 1, max_position_embeddings=SEQ,
        seq_length=SEQ, vocab_size=None, padded_vocab_size=VOCAB, make_vocab_size_divisible_by=64,
        normalization="RMSNorm" if llama else "LayerNorm", norm_epsilon=1e-5, swiglu=llama,
        position_embedding_type="rope" if llama else "learned_absolute", rotary_base=500000 if llama else 10000,
        rotary_percent=1.0, use_rope_scaling=False, rope_scaling_factor=8.0, rotary_interleaved=False,
        untie_embeddings_and_output_weights=llama, add_bias_linear=not llama, add_qkv_bias=False,
        qk_layernorm=False, openai_gelu=not llama, bias_gelu_fusion=False, squared_relu=False,
        apply_layernorm_1p=False, hidden_dropout=0.0, attention_dropout=0.0, init_method_std=0.02, bf16=False,
        fp16=False, params_dtype=torch.float32, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=None, num_experts=None, multi_latent_attention=False,
        use_mcore_models=True, transformer_impl="local", ckpt_format=ckpt_format, attention_backend=AttnBackend.auto,
        micro_batch_size=2, global_batch_size=8, lr=3e-4, train_iters=100, data_path=["mock"], seed=1234,
        iteration=ITER, consumed_train_samples=56)


def write_tracker(d):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(ITER))


def save_torch_dist(model_chunk, args, d, metadata=None):
    from megatron.core import dist_checkpointing
    it = os.path.join(d, f"iter_{ITER:07d}")
    os.makedirs(it, exist_ok=True)
    state = {"args": args, "checkpoint_version": 3.0, "iteration": ITER,
             "model": model_chunk.sharded_state_dict(metadata=metadata),
             "num_floating_point_operations_so_far": 1.0e9}
    dist_checkpointing.save(state, it)
    if torch.distributed.get_rank() == 0:
        write_tracker(d)


TE_NAMES = {"input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
            "input_layernorm.bias": "self_attention.linear_qkv.layer_norm_bias",
            "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
            "pre_mlp_layernorm.bias": "mlp.linear_fc1.layer_norm_bias"}


def save_torch(model_chunk, args, d, tp_rank, pp_rank, pp, te=False):
    sd = model_chunk.state_dict_for_save_checkpoint()
    if te:  # Transformer Engine's module names: the layer norms live in the linear layers
        out = {}
        for k, v in sd.items():
            for ours, theirs in TE_NAMES.items():
                if k.endswith(ours):
                    k = k[: -len(ours)] + theirs
            out[k] = v
        import io
        for k in list(out):
            if k.endswith("linear_qkv.weight"):
                out[k.replace(".weight", "._extra_state")] = io.BytesIO(b"fp8 metadata")
        sd = out
    opt = torch.optim.Adam([p for p in model_chunk.parameters()], lr=1e-3)
    for p in model_chunk.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for p in model_chunk.parameters():
        p.grad = None
    name = f"mp_rank_{tp_rank:02d}" + (f"_{pp_rank:03d}" if pp > 1 else "")
    path = os.path.join(d, f"iter_{ITER:07d}", name)
    os.makedirs(path, exist_ok=True)
    state = {"args": args, "checkpoint_version": 3.0, "iteration": ITER, "model": sd,
             "optimizer": {"optimizer": opt.state_dict()},
             "opt_param_scheduler": {"max_lr": 3e-4, "num_steps": 56},
             "rng_state": [{"random_rng_state": random.getstate(), "np_rng_state": np.random.get_state(),
                            "torch_rng_state": torch.get_rng_state(), "cuda_rng_state": torch.get_rng_state(),
                            "rng_tracker_states": {}}],
             "num_floating_point_operations_so_far": 1.0e9}
    torch.save(state, os.path.join(path, "model_optim_rng.pt"))
    if torch.distributed.get_rank() == 0:
        write_tracker(d)


def save_torch_vpp_by_hand(model_chunk, args, d, pp=2, vpp=2):
    """The legacy format of an interleaved pipeline (PP 2 x 2 virtual stages, one layer per chunk),
    cut from the TP 1 state dict by hand exactly as Megatron lays it out (Megatron-Core cannot build
    virtual stages without CUDA here): stage p's file holds "model0", "model1", chunk v of stage p
    holding global layer v * pp + p under local number 0; the first chunk has the embedding, the last
    the final norm and output layer (its copy of tied word embeddings as output_layer.weight)."""
    sd = model_chunk.state_dict_for_save_checkpoint()
    args = argparse.Namespace(**vars(args))
    args.pipeline_model_parallel_size, args.virtual_pipeline_model_parallel_size = pp, vpp
    per = LAYERS // (pp * vpp)
    for p in range(pp):
        state = {"args": args, "checkpoint_version": 3.0, "iteration": ITER}
        for v in range(vpp):
            first, last = (v * pp + p) * per, (v * pp + p + 1) * per
            chunk = {}
            for k, t in sd.items():
                if k.startswith("decoder.layers."):
                    n = int(k.split(".")[2])
                    if first <= n < last:
                        chunk[k.replace(f"decoder.layers.{n}.", f"decoder.layers.{n - first}.", 1)] = t
                elif k.startswith("embedding.") and p == 0 and v == 0:
                    chunk[k] = t
                elif (k.startswith("decoder.final_layernorm") or k.startswith("output_layer")) and \
                        p == pp - 1 and v == vpp - 1:
                    chunk[k] = t
            if p == pp - 1 and v == vpp - 1 and "output_layer.weight" not in chunk:
                chunk["output_layer.weight"] = sd["embedding.word_embeddings.weight"].clone()
            state[f"model{v}"] = chunk
        path = os.path.join(d, f"iter_{ITER:07d}", f"mp_rank_00_{p:03d}")
        os.makedirs(path, exist_ok=True)
        torch.save(state, os.path.join(path, "model_optim_rng.pt"))
    write_tracker(d)


def init_dist(rank, world, port, tp, pp):
    from megatron.core import parallel_state
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    return parallel_state


def reference(out, port):
    """TP 1: the weights (seeded, norms and biases moved off their init), the logits, both formats."""
    _cpu_shims()
    init_dist(0, 1, port, 1, 1)
    for model in MODELS:
        torch.manual_seed(0 if model == "gpt" else 1)
        m = build(model).eval()
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "norm" in n or n.endswith("bias"):
                    p.add_(0.1 * torch.randn_like(p))
        tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
        pos = torch.arange(SEQ).unsqueeze(0).expand(BATCH, -1)
        mask = torch.triu(torch.ones(1, 1, SEQ, SEQ, dtype=torch.bool), diagonal=1)
        with torch.no_grad():
            logits = m(tokens, pos, mask)
            seq = tokens[0, : SEQ // 2].tolist()  # greedy decoding, one whole forward per token
            while len(seq) < SEQ:
                n = len(seq)
                causal = torch.triu(torch.ones(1, 1, n, n, dtype=torch.bool), diagonal=1)
                seq.append(int(m(torch.tensor([seq]), torch.arange(n).unsqueeze(0), causal)[0, -1].argmax()))
        os.makedirs(os.path.join(out, model), exist_ok=True)
        torch.save({"tokens": tokens, "logits": logits.float(), "prompt": seq[: SEQ // 2], "greedy": seq[SEQ // 2:]},
                   os.path.join(out, model, "ref.pt"))
        save_torch_dist(m, megatron_lm_args(model, 1, 1, "torch_dist"), os.path.join(out, model, "torch_dist_tp1"))
        save_torch(m, megatron_lm_args(model, 1, 1, "torch"), os.path.join(out, model, "torch_tp1"), 0, 0, 1)
        save_torch(m, megatron_lm_args(model, 1, 1, "torch"), os.path.join(out, model, "torch_te_tp1"), 0, 0, 1,
                   te=True)
        save_torch_vpp_by_hand(m, megatron_lm_args(model, 1, 1, "torch"), os.path.join(out, model, "torch_vpp2"))
        # A bf16 run's checkpoint: the weights rounded to bf16; its reference runs them in fp32.
        mb = build(model).eval()
        mb.load_state_dict({k: v.bfloat16().float() for k, v in m.state_dict().items() if torch.is_tensor(v)},
                           strict=False)
        with torch.no_grad():
            logits_bf16 = mb(tokens, pos, mask)
        torch.save({"tokens": tokens, "logits": logits_bf16.float()}, os.path.join(out, model, "ref_bf16.pt"))
        args = megatron_lm_args(model, 1, 1, "torch_dist")
        args.bf16, args.params_dtype = True, torch.bfloat16
        save_torch_dist(mb.bfloat16(), args, os.path.join(out, model, "torch_dist_bf16_tp1"))
    torch.distributed.destroy_process_group()


def reshard(rank, world, port, out, layout):
    """One rank of a TP 2 or PP 2 world: Megatron-Core loads the TP 1 checkpoint into its part of the
    model and saves it in both formats."""
    _cpu_shims()
    from megatron.core import dist_checkpointing
    tp, pp = LAYOUTS[layout]
    ps = init_dist(rank, world, port, tp, pp)
    for model in MODELS:
        m = build(model, tp, pp, ps.get_pipeline_model_parallel_rank())
        sd = m.sharded_state_dict()
        from megatron.core.transformer.enums import AttnBackend
        with torch.serialization.safe_globals([argparse.Namespace, AttnBackend]):  # the saved args
            loaded = dist_checkpointing.load(sd, os.path.join(out, model, "torch_dist_tp1", f"iter_{ITER:07d}"))
        m.load_state_dict(loaded["model"] if "model" in loaded else loaded, strict=False)
        save_torch_dist(m, megatron_lm_args(model, tp, pp, "torch_dist"),
                        os.path.join(out, model, f"torch_dist_{layout}"))
        save_torch(m, megatron_lm_args(model, tp, pp, "torch"), os.path.join(out, model, f"torch_{layout}"),
                   ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank(), pp)
        if layout == "tp2":  # per-layer keys, SwiGLU's fc1 as two tensors (key_w, key_v)
            save_torch_dist(m, megatron_lm_args(model, tp, pp, "torch_dist"),
                            os.path.join(out, model, f"torch_dist_singleton_{layout}"),
                            metadata={"singleton_local_shards": True})
            save_torch(m, megatron_lm_args(model, tp, pp, "torch"), os.path.join(out, model, f"torch_te_{layout}"),
                       ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank(), pp, te=True)
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(out):
    torch.set_num_threads(1)
    import torch.multiprocessing as mp
    mp.spawn(lambda_free_reference, args=(out,), nprocs=1, join=True)
    for layout in ("tp2", "pp2"):
        mp.spawn(reshard_entry, args=(2, free_port(), out, layout), nprocs=2, join=True)


def lambda_free_reference(rank, out):
    reference(out, free_port())


def reshard_entry(rank, world, port, out, layout):
    reshard(rank, world, port, out, layout)


if __name__ == "__main__":
    main(sys.argv[1])
