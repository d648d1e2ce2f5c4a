#!/usr/bin/env python3
"""Regenerates megatron_lm_configs.txt: Megatron-LM's GPT training configurations as tiny
`megatron train` argument lines (needs a Megatron-LM checkout and PyYAML; CI only reads the output).

    extract_configs.py MEGATRON_LM_DIR > tests/compat/megatron_lm_configs.txt

Every `pretrain_gpt.py` launch of tests/functional_tests/test_cases/gpt/*/model_config.yaml (the
inference and RL modes left out) and the GPT-3, Llama-3, Mixtral, gpt-oss and DeepSeek-V3 example
scripts, with every flag kept as written except: the sizes made tiny (hidden 64, 4 heads, seq 64,
2-8 layers, 2 iterations, small batches; each still divisible by the parallel layout as written),
the data replaced by --mock-data, and paths replaced by @TMP@ (a folder per config) and @CKPT@.
Each output line is: name <TAB> ranks of the as-written layout <TAB> the argument line.
"""
import glob
import math
import os
import shlex
import sys

# The example scripts' training arguments (transcribed flag names and values; sizes tiny-fied below).
EXAMPLES = {
    "example_gpt3_175b": """--num-layers 96 --hidden-size 12288 --num-attention-heads 96 --seq-length 2048
        --max-position-embeddings 2048 --attention-backend auto --micro-batch-size 1 --global-batch-size 1536
        --train-iters 500000 --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.95
        --init-method-std 0.006 --clip-grad 1.0 --fp16 --lr 6.0e-5 --lr-decay-style cosine --min-lr 6.0e-6
        --lr-warmup-fraction .001 --lr-decay-iters 430000 --tensor-model-parallel-size 8
        --pipeline-model-parallel-size 16 --data-path DATA --vocab-file VOCAB --merge-file MERGES --split 949,50,1
        --log-interval 100 --save-interval 10000 --eval-interval 1000 --save CKPT --load CKPT --eval-iters 10
        --tensorboard-dir TB""",
    "example_llama3_8b_fp8": """--use-mcore-models --num-layers 32 --hidden-size 4096 --ffn-hidden-size 14336
        --num-attention-heads 32 --group-query-attention --num-query-groups 8 --kv-channels 128 --seq-length 8192
        --max-position-embeddings 8192 --position-embedding-type rope --rotary-base 1000000 --rotary-percent 1.0
        --attention-dropout 0.0 --hidden-dropout 0.0 --swiglu --normalization RMSNorm --init-method-std 0.0134
        --attention-backend fused --apply-layernorm-1p --untie-embeddings-and-output-weights --disable-bias-linear
        --micro-batch-size 1 --global-batch-size 128 --train-samples 1953125000 --lr-decay-samples 1949218748
        --lr-warmup-samples 3906252 --lr 0.00015 --min-lr 0.00001 --decoupled-lr 5.0e-4 --decoupled-min-lr 4.5e-5
        --lr-decay-style cosine --clip-grad 1.0 --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.95 --bf16
        --grad-reduce-in-bf16 --cross-entropy-loss-fusion --calculate-per-token-loss --manual-gc
        --empty-unused-memory-level 1 --exit-duration-in-mins 235 --use-distributed-optimizer --overlap-grad-reduce
        --overlap-param-gather --fp8-format hybrid --fp8-amax-history-len 1024 --fp8-amax-compute-algo max
        --fp8-param-gather --tensor-model-parallel-size 1 --context-parallel-size 1 --sequence-parallel
        --mock-data --tokenizer-type NullTokenizer --vocab-size 128256 --data-cache-path CACHE --tiktoken-pattern v2
        --split 99,1,0 --no-create-attention-mask-in-dataloader --no-mmap-bin-files --num-workers 1
        --log-interval 1 --eval-iters 32 --eval-interval 100 --save-interval 1000 --log-throughput --profile
        --profile-step-start 4 --profile-step-end 6 --ckpt-format torch_dist --distributed-timeout-minutes 60
        --save CKPT --load CKPT --tensorboard-dir TB""",
    "example_mixtral_8x7b": """--use-mcore-models --disable-bias-linear --seq-length 4096
        --max-position-embeddings 32768 --num-layers 32 --hidden-size 4096 --ffn-hidden-size 14336
        --num-attention-heads 32 --init-method-std 0.01 --attention-dropout 0.0 --hidden-dropout 0.0
        --normalization RMSNorm --position-embedding-type rope --swiglu --untie-embeddings-and-output-weights
        --group-query-attention --num-query-groups 8 --no-masked-softmax-fusion --no-position-embedding
        --rotary-base 1000000 --num-experts 8 --moe-router-topk 2 --moe-router-load-balancing-type aux_loss
        --moe-aux-loss-coeff 1e-2 --moe-grouped-gemm --moe-token-dispatcher-type alltoall --overlap-param-gather
        --overlap-grad-reduce --tokenizer-type Llama2Tokenizer --tokenizer-model TOKENIZER --data-path DATA
        --split 99990,8,2 --micro-batch-size 1 --global-batch-size 256 --lr 1e-4 --train-iters 500000
        --lr-decay-iters 320000 --lr-decay-style cosine --min-lr 1.0e-5 --weight-decay 0.1 --lr-warmup-iters 500
        --clip-grad 1.0 --bf16 --tensor-model-parallel-size 1 --pipeline-model-parallel-size 4
        --expert-model-parallel-size 8 --use-distributed-optimizer --sequence-parallel --log-interval 1
        --save-interval 10000 --eval-interval 1000 --eval-iters 10 --save CKPT --load CKPT --tensorboard-dir TB
        --no-load-optim --no-load-rng""",
    "example_gptoss_20b": """--no-masked-softmax-fusion --transformer-impl transformer_engine --disable-bias-linear
        --untie-embeddings-and-output-weights --no-rope-fusion --normalization RMSNorm --num-layers 12
        --hidden-size 512 --ffn-hidden-size 2048 --num-attention-heads 64 --group-query-attention
        --num-query-groups 8 --seq-length 8192 --max-position-embeddings 8192 --use-mcore-models
        --rotary-percent 1.0 --rope-type rope --position-embedding-type rope --rotary-base 10000
        --no-bias-gelu-fusion --export-force-local-attention --no-bias-dropout-fusion --quick-geglu
        --glu-linear-offset 1.0 --softmax-type learnable --window-attn-skip-freq 2
        --activation-func-clamp-value 7.0 --window-size 127,0 --enable-gpt-oss --num-experts 4 --moe-router-topk 2
        --moe-router-load-balancing-type aux_loss --moe-aux-loss-coeff 1e-3 --moe-grouped-gemm
        --moe-token-dispatcher-type alltoall --overlap-param-gather --overlap-grad-reduce --moe-ffn-hidden-size 2048
        --moe-router-dtype fp32 --moe-z-loss-coeff 1e-3 --moe-permute-fusion --mock-data
        --tokenizer-type NullTokenizer --vocab-size 128256 --data-cache-path CACHE --tiktoken-pattern v2
        --split 99,1,0 --no-create-attention-mask-in-dataloader --no-mmap-bin-files --num-workers 1
        --micro-batch-size 1 --global-batch-size 128 --lr 1.0e-5 --train-samples 1953125000
        --lr-decay-samples 1949218748 --lr-decay-style cosine --min-lr 1.0e-6 --weight-decay 0.1
        --lr-warmup-fraction 0.05 --clip-grad 1.0 --bf16 --use-flash-attn --attention-softmax-in-fp32
        --accumulate-allreduce-grads-in-fp32 --disable-bf16-reduced-precision-matmul --recompute-activations
        --tensor-model-parallel-size 1 --pipeline-model-parallel-size 8 --expert-model-parallel-size 1
        --sequence-parallel --context-parallel-size 1 --use-distributed-optimizer --fp8-format hybrid
        --fp8-param-gather --fp8-amax-compute-algo max --fp8-amax-history-len 1024 --log-interval 1
        --save-interval 10000 --eval-interval 50000000 --eval-iters 0 --save CKPT --tensorboard-dir TB
        --moe-per-layer-logging --no-load-optim --no-load-rng --log-throughput""",
    "example_deepseek_v3_fsdp": """--distributed-timeout-minutes 60 --tensor-model-parallel-size 1
        --expert-model-parallel-size 8 --expert-tensor-parallel-size 1 --context-parallel-size 1
        --use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather --use-mcore-models
        --sequence-parallel --use-flash-attn --disable-bias-linear --micro-batch-size 4 --global-batch-size 2048
        --train-samples 585937500 --exit-duration-in-mins 220 --no-check-for-nan-in-loss-and-grad --manual-gc
        --manual-gc-interval 10 --recompute-granularity selective --recompute-modules mlp moe mla_up_proj layernorm
        --transformer-impl transformer_engine --seq-length 4096 --data-cache-path CACHE
        --tokenizer-type HuggingFaceTokenizer --tokenizer-model TOKENIZER --data-path DATA --split 99,1,0
        --no-mmap-bin-files --no-create-attention-mask-in-dataloader --num-workers 6 --num-layers 61
        --hidden-size 7168 --ffn-hidden-size 18432 --num-attention-heads 128 --kv-channels 128
        --max-position-embeddings 4096 --position-embedding-type rope --rotary-base 10000
        --make-vocab-size-divisible-by 3232 --normalization RMSNorm --norm-epsilon 1e-6 --swiglu
        --untie-embeddings-and-output-weights --multi-latent-attention --attention-dropout 0.0 --hidden-dropout 0.0
        --clip-grad 1.0 --weight-decay 0.1 --qk-layernorm --lr-decay-samples 584765624 --lr-warmup-samples 1536000
        --lr-warmup-init 3.9e-7 --lr 3.9e-6 --min-lr 3.9e-7 --lr-decay-style cosine --adam-beta1 0.9
        --adam-beta2 0.95 --num-experts 256 --moe-layer-freq [0]*3+[1]*58 --moe-ffn-hidden-size 2048
        --moe-shared-expert-intermediate-size 2048 --moe-router-load-balancing-type seq_aux_loss --moe-router-topk 8
        --moe-token-dispatcher-type flex --moe-flex-dispatcher-backend hybridep --moe-router-pre-softmax
        --moe-grouped-gemm --moe-aux-loss-coeff 1e-4 --moe-router-group-topk 4 --moe-router-num-groups 8
        --moe-router-topk-scaling-factor 2.5 --moe-router-score-function sigmoid --moe-router-enable-expert-bias
        --moe-router-bias-update-rate 1e-3 --moe-router-dtype fp32 --moe-permute-fusion
        --moe-router-force-load-balancing --q-lora-rank 1536 --kv-lora-rank 512 --qk-head-dim 128
        --qk-pos-emb-head-dim 64 --v-head-dim 128 --rotary-scaling-factor 40 --mscale 1.0 --mscale-all-dim 1.0
        --mtp-num-layers 1 --mtp-loss-scaling-factor 0.1 --eval-iters 32 --eval-interval 100
        --auto-detect-ckpt-format --load CKPT --save CKPT --save-interval 100 --dist-ckpt-strictness log_all
        --init-method-std 0.02 --log-timers-to-tensorboard --log-memory-to-tensorboard --log-num-zeros-in-grad
        --log-params-norm --log-validation-ppl-to-tensorboard --log-throughput --log-interval 1 --logging-level 40
        --tensorboard-dir TB --bf16 --enable-experimental --use-megatron-fsdp
        --data-parallel-sharding-strategy optim_grads_params --no-gradient-accumulation-fusion
        --calculate-per-token-loss --init-model-with-meta-device --ckpt-format fsdp_dtensor --fsdp-double-buffer
        --use-nccl-ub --megatron-fsdp-grad-comm-dtype bf16 --megatron-fsdp-main-grads-dtype bf16""",
}


def parse_line(text):
    """An argument line as an ordered list of (flag, [values])."""
    out = []
    for w in shlex.split(text):
        if w.startswith("--"):
            out.append((w, []))
        else:
            out[-1][1].append(w)
    return out


def from_yaml(model_args):
    out = []
    for k, v in model_args.items():
        if v is True or (isinstance(v, str) and v.lower() == "true"):
            out.append((k, []))
        elif v is False or (isinstance(v, str) and v.lower() == "false"):
            continue
        else:
            s = str(v).strip()
            if s.startswith("[") and s.endswith("]") and " " in s and "," not in s and k != "--moe-layer-freq":
                s = s[1:-1]  # "[2 2]": a list of values
            out.append((k, s.split() if " " in s and k not in ("--step-batch-size-schedule",) else [s]))
    return out


DATA_FLAGS = {"--data-path", "--vocab-file", "--merge-file", "--tokenizer-model", "--train-data-path",
              "--valid-data-path", "--test-data-path"}
PATH_FLAGS = {"--tensorboard-dir": "@TMP@/tensorboard", "--wandb-save-dir": "@TMP@/wandb",
              "--data-cache-path": "@TMP@/cache", "--save": "@CKPT@", "--load": "@CKPT@",
              "--tp-comm-overlap-cfg": "@TMP@/tp_comm_overlap_cfg.yaml", "--export-kd-teacher-load": "@TMP@/teacher",
              "--export-kd-cfg": "@TMP@/distill_config.yaml"}


SIZES = ["--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--context-parallel-size",
         "--expert-model-parallel-size", "--expert-tensor-parallel-size"]
# Flags that only describe a multi-rank layout: left out of the single-rank variant.
LAYOUT_ONLY = ["--num-layers-per-virtual-pipeline-stage", "--num-virtual-stages-per-pipeline-rank",
               "--decoder-first-pipeline-num-layers", "--decoder-last-pipeline-num-layers",
               "--pipeline-model-parallel-layout", "--account-for-embedding-in-pipeline-split",
               "--account-for-loss-in-pipeline-split", "--microbatch-group-size-per-virtual-pipeline-stage",
               "--hierarchical-context-parallel-sizes"]


def single_rank(flags):
    return [(k, ["1"] if k in SIZES else v) for k, v in flags if k not in LAYOUT_ONLY]


def tiny(name, flags):
    d = {k: v for k, v in flags}
    get = lambda k, default=None: d[k][0] if k in d and d[k] else default
    tp = int(get("--tensor-model-parallel-size", 1))
    pp = int(get("--pipeline-model-parallel-size", 1))
    cp = int(get("--context-parallel-size", 1))
    ep = int(get("--expert-model-parallel-size", 1))
    experts = int(get("--num-experts", 0))
    vp_layers = get("--num-layers-per-virtual-pipeline-stage")
    vp_stages = int(get("--num-virtual-stages-per-pipeline-rank", 1))
    heads = 8 if tp >= 8 else 4
    hidden = 16 * heads
    # Layers: each pipeline stage (and virtual stage) keeps at least one.
    if "--decoder-first-pipeline-num-layers" in d:
        layers = pp
    elif "--account-for-embedding-in-pipeline-split" in d or "--account-for-loss-in-pipeline-split" in d:
        layers = pp * vp_stages - ("--account-for-embedding-in-pipeline-split" in d) - (
            "--account-for-loss-in-pipeline-split" in d)
    else:
        layers = max(2, pp * (2 if vp_layers else vp_stages))
    if "--moe-layer-freq" in d:
        layers = max(layers, 4)
    mbs = min(int(get("--micro-batch-size", 1)), 2)
    dp = ep if experts else 1  # the as-written layout's data-parallel ranks (expert parallelism splits them)
    microbatches = pp if pp > 1 else 2
    gbs = mbs * dp * microbatches
    world = tp * cp * pp * (ep if experts else 1)
    set_ = {
        "--num-layers": [str(layers)], "--hidden-size": [str(hidden)], "--num-attention-heads": [str(heads)],
        "--seq-length": ["64"], "--max-position-embeddings": ["64"], "--micro-batch-size": [str(mbs)],
        "--global-batch-size": [str(gbs)], "--train-iters": ["2"], "--log-interval": ["1"],
        "--eval-interval": ["2"], "--save-interval": ["2"], "--exit-interval": ["2"],
        "--ffn-hidden-size": ["128"], "--kv-channels": ["16"], "--moe-ffn-hidden-size": ["64"],
        "--moe-shared-expert-intermediate-size": ["64"], "--num-experts": [str(max(4, ep))],
        "--moe-router-topk": [str(min(int(get("--moe-router-topk", 2)), 2))],
        "--num-query-groups": [str(max(2, tp))], "--train-samples": [str(2 * gbs)],
        "--lr-decay-samples": [str(2 * gbs)], "--lr-decay-iters": ["2"], "--eval-global-batch-size": [str(gbs)],
        "--step-batch-size-schedule": [f"0:{gbs}"], "--q-lora-rank": ["32"], "--kv-lora-rank": ["16"],
        "--qk-head-dim": ["16"], "--qk-pos-emb-head-dim": ["8"], "--v-head-dim": ["16"],
        "--check-weight-hash-across-dp-replicas-interval": ["1"], "--seed": ["1234"],
        "--decoder-first-pipeline-num-layers": ["1"], "--decoder-last-pipeline-num-layers": ["1"],
        "--num-layers-per-virtual-pipeline-stage": ["1"], "--save-retain-interval": ["2"],
        "--moe-router-num-groups": ["4"], "--moe-router-group-topk": ["2"], "--moe-layer-freq": ["[0]*1+[1]*3"],
        "--linear-key-head-dim": ["16"], "--linear-value-head-dim": ["16"], "--linear-num-key-heads": ["2"],
        "--linear-num-value-heads": ["4"], "--dsa-indexer-n-heads": ["2"], "--dsa-indexer-head-dim": ["16"],
        "--dsa-indexer-topk": ["16"], "--mup-base-hidden-size": ["32"],
    }
    out = []
    for k, v in flags:
        if k in DATA_FLAGS or k == "--mock-data":
            continue
        if k == "--tokenizer-type" and v and v[0] != "NullTokenizer":
            continue
        if k in PATH_FLAGS:
            v = [PATH_FLAGS[k]]
        elif k == "--vocab-size":
            v = ["257" if int(v[0]) % 2 else "256"]
        elif k == "--lr-warmup-iters":
            v = ["1" if int(v[0]) > 0 else "0"]
        elif k == "--lr-warmup-samples":
            v = [str(gbs) if int(float(v[0])) > 0 else "0"]
        elif k == "--eval-iters":
            v = ["1" if int(v[0]) > 0 else "0"]
        elif k in set_:
            v = set_[k]
        out.append((k, v))
    out.append(("--mock-data", []))
    if "--vocab-size" not in d:
        out.append(("--vocab-size", ["256"]))
    out = [(k, [x.replace("${", "").replace("}", "").lower() if "${" in x else x for x in v]) for k, v in out]
    return world, out


def fmt(flags):
    return " ".join(shlex.join([k, *v]) for k, v in flags)


def main():
    import yaml
    root = sys.argv[1]
    configs = []
    for p in sorted(glob.glob(os.path.join(root, "tests/functional_tests/test_cases/gpt/*/model_config.yaml"))):
        y = yaml.safe_load(open(p))
        if y.get("MODE") in ("inference", "rl") or not y.get("MODEL_ARGS"):
            continue
        configs.append((os.path.basename(os.path.dirname(p)), from_yaml(y["MODEL_ARGS"])))
    for name, text in EXAMPLES.items():
        configs.append((name, parse_line(text)))
    print("# Megatron-LM's GPT training configurations, made tiny (tests/compat/extract_configs.py wrote this).")
    print("# name <TAB> ranks as written <TAB> single-rank variant <TAB> as-written layout")
    for name, flags in configs:
        world, out = tiny(name, flags)
        _, single = tiny(name, single_rank(flags))
        print(f"{name}\t{world}\t{fmt(single)}\t{fmt(out)}")


if __name__ == "__main__":
    main()
