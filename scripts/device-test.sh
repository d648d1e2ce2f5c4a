#!/usr/bin/env bash
# Builds megatron.cpp with the CUDA backend (sm_90a) and runs the whole test suite, CUDA tests
# included, on a GPU machine. Logs go to $OUT when set (the device runner brings that folder
# back), else to build-gpu/logs; a summary table per test suite ends the output.
#
#   scripts/device-test.sh                     # configure, build everything, run ctest
#   TEST_REGEX='^Cuda' scripts/device-test.sh  # only tests whose name matches (ctest -R)
#   BUILD_TARGET="megatron test_kernels" scripts/device-test.sh   # build these targets instead of all
#   JOBS=8 CTEST_JOBS=4 BUILD_DIR=build-gpu2 ... # parallelism and build folder
#   TRAIN=0 SANITIZE=0 BENCH=0                 # skip the training check, sanitizer, benchmarks
#   BENCH_MODELS="124m 350m 1.3b"              # benchmark models (bench/gpt_gpu_vs_pytorch.py)
#   LLAMA_BENCH_MODELS="llama3.2-1b"           # Llama benchmarks (bench/llama_gpu_vs_pytorch.py; "" skips)
#   LLAMA_BENCH_ARGS="--cross-entropy-chunks 4" # extra megatron train flags for them
#   DIST=0                                     # skip the 2-GPU NCCL layout check (runs when >= 2 GPUs)
#   MULTI_BENCH="dp tp"                        # 2-GPU benchmarks (bench/gpt_multi_gpu.py), when >= 2 GPUs
#   PROFILE=1                                  # per-kernel GPU time, ours vs PyTorch (scripts/device-profile.sh,
#                                              # MODEL=124m by default)
#   SCALE=1                                    # issue 7 on 4 or 8 GPUs: GPT 1.3B DP weak scaling, the 7B-class
#                                              # GPT's TP x DP layouts, save on all GPUs / resume as TP=4
#   SCALE_PARTS="dp grid reshard"              # which of the three (each takes minutes: split them over calls)
#   PIPELINE_BUBBLE=1                          # bench/pipeline_bubble.py on the host's CPU cores (MPI ranks):
#                                              # measured vs analytic bubble of 1F1B, interleaved and ZB-H1
#   TRAIN_MOE=1                                # a small MoE (8 experts top-2, aux and z losses) GPU bf16 vs CPU fp32
#   MOE_BENCH=1                                # bench/moe_gpu_vs_pytorch.py (Qwen3-MoE-style 3B vs torch._grouped_mm);
#                                              # MOE_BENCH_ARGS: extra megatron train flags for it
#   GENERATE=0                                 # skip the generation checks (megatron generate on the GPU vs
#                                              # transformers) and, with BENCH, bench/generate_benchmark.py
#   CTEST=0                                    # skip the test suite (a benchmark-only call, with BUILD_TARGET=megatron)
#   LONG_CONTEXT_BENCH=1                       # issue 20's long-context benchmark (bench/long_context_gpu_vs_pytorch.py):
#                                              # Llama-3.2-1B at 16k-128k, recompute picked per length, vs PyTorch full
#                                              # activation checkpointing + torch.compile; JSON to $OUT/long_context.json.
#                                              # LONG_CONTEXT_BUDGET: its seconds (default: what is left of 580 s since
#                                              # this script started); LONG_CONTEXT_MEMORY_CAP_GIB: a run peaking above
#                                              # it does not fit (default: the card's own memory); LONG_CONTEXT_ARGS:
#                                              # more flags for it ("--seqs 65536,131072", "--reach-seqs 262144", ...);
#                                              # LONG_CONTEXT_RECOMPUTE: our recompute ladder, ';'-separated flag strings
#                                              # ("none;--recompute-gelu;..."); LONG_CONTEXT_OURS_ARGS: extra train flags.
#                                              # Alone, in one 600 s call:
#                                              #   LONG_CONTEXT_BENCH=1 CTEST=0 TRAIN=0 SANITIZE=0 BENCH=0 GENERATE=0 \
#                                              #   BUILD_TARGET=megatron scripts/device-test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-16}
CTEST_JOBS=${CTEST_JOBS:-8}
LOG_DIR=${OUT:-$BUILD_DIR/logs}
mkdir -p "$LOG_DIR"

section() { printf '\n==== %s ====\n' "$*"; }

section "device"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"; } \
  2>&1 | tee "$LOG_DIR/device.txt"
{ nvcc --version | tail -1; cmake --version | head -1; g++ --version | head -1; } 2>&1 | tee -a "$LOG_DIR/device.txt"
git log -1 --format='commit %H %s' 2>/dev/null | tee -a "$LOG_DIR/device.txt" || true

# Headers the GPU machine lacks, brought by scripts/device-deps.sh (carried .deps/).
if [[ -d .deps/pcre2 ]]; then
  root=$(realpath .deps/pcre2/usr)
  mkdir -p .deps/pkgconfig
  sed "s#^prefix=.*#prefix=$root#" .deps/pcre2/usr/lib/x86_64-linux-gnu/pkgconfig/libpcre2-8.pc \
    > .deps/pkgconfig/libpcre2-8.pc
  export PKG_CONFIG_PATH=$(realpath .deps/pkgconfig)${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
fi
[[ -d .deps/zlib && ! -f /usr/include/zlib.h ]] && export ZLIB_ROOT=$(realpath .deps/zlib/usr)
# cudnn-frontend headers (cuDNN fused attention), also brought by scripts/device-deps.sh.
cudnn_args=()
[[ -d .deps/cudnn_frontend/include ]] && cudnn_args=(-DMT_CUDNN_FRONTEND_INCLUDE="$(realpath .deps/cudnn_frontend/include)")

section "configure"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DMT_WITH_CUDA=ON \
  "${cudnn_args[@]}" 2>&1 | tee "$LOG_DIR/configure.log"
grep -q "CUDA backend ON" "$LOG_DIR/configure.log" || { echo "device-test: the CUDA backend was not enabled"; exit 1; }

section "build"
build_args=(--build "$BUILD_DIR" -j "$JOBS")
# shellcheck disable=SC2206  # several targets, space-separated
[[ -n "${BUILD_TARGET:-}" ]] && build_args+=(--target ${BUILD_TARGET})
start=$(date +%s)
cmake "${build_args[@]}" 2>&1 | tee "$LOG_DIR/build.log"
echo "build: $(( $(date +%s) - start )) s"

ctest_rc=0
if [[ "${CTEST:-1}" == 1 ]]; then
  section "test"
  ctest_args=(--test-dir "$BUILD_DIR" --output-on-failure -j "$CTEST_JOBS" --timeout 600
              --output-junit "$(realpath "$LOG_DIR")/ctest.xml")
  [[ -n "${TEST_REGEX:-}" ]] && ctest_args+=(-R "$TEST_REGEX")
  set +e
  ctest "${ctest_args[@]}" 2>&1 | tee "$LOG_DIR/ctest.log"
  ctest_rc=${PIPESTATUS[0]}
  set -e

  section "summary"
  # ctest lines look like: "  12/340 Test  #12: CudaGemm/CudaGemm.MatchesCpu/bf16_cf32_NN_beta0 ...   Passed    0.41 sec"
  awk '
    /Test +#[0-9]+: / {
      name = $0; sub(/.*Test +#[0-9]+: /, "", name); sub(/ .*/, "", name)
      suite = name; sub(/\..*/, "", suite); sub(/.*\//, "", suite)
      if ($0 ~ /Passed/) pass[suite]++
      else if ($0 ~ /Skipped|Not Run.*Disabled/) skip[suite]++
      else { fail[suite]++; failed[++nf] = name }
      if (!(suite in seen)) { seen[suite] = 1; order[++ns] = suite }
    }
    END {
      printf "%-40s %7s %7s %7s\n", "suite", "passed", "failed", "skipped"
      for (i = 1; i <= ns; i++) {
        s = order[i]; tp += pass[s]; tf += fail[s]; ts += skip[s]
        printf "%-40s %7d %7d %7d\n", s, pass[s], fail[s], skip[s]
      }
      printf "%-40s %7d %7d %7d\n", "TOTAL", tp, tf, ts
      if (nf) { print "\nfailed:"; for (i = 1; i <= nf; i++) print "  " failed[i] }
    }' "$LOG_DIR/ctest.log" | tee "$LOG_DIR/summary.txt"
fi

bin="$BUILD_DIR/megatron"
status=$ctest_rc
if [[ "${TRAIN:-1}" == 1 ]]; then
  section "train: GPU bf16 vs CPU fp32, 200 iterations of the default model"
  common=(--train-iters 200 --log-interval 20 --eval-interval 100 --eval-iters 5)
  "$bin" train --device cuda --bf16 "${common[@]}" 2>&1 | tee "$LOG_DIR/train_gpu.log" || status=1
  OMP_NUM_THREADS=$(nproc) "$bin" train --device cpu "${common[@]}" 2>&1 | tee "$LOG_DIR/train_cpu.log" || status=1
  paste <(grep -oE "lm loss: [0-9.E+-]+" "$LOG_DIR/train_cpu.log") <(grep -oE "lm loss: [0-9.E+-]+" "$LOG_DIR/train_gpu.log") \
    | awk '{printf "cpu %s   gpu %s   diff %+.4f\n", $3, $6, $6 - $3}' | tee "$LOG_DIR/train_compare.txt"
  section "train: a small Llama (GQA, RoPE with Llama 3.1 scaling, SwiGLU, RMSNorm, untied, dropout 0.1), GPU bf16 vs CPU fp32"
  llama=(--normalization RMSNorm --swiglu --group-query-attention --num-query-groups 2 --position-embedding-type rope
         --use-rope-scaling --untie-embeddings-and-output-weights --disable-bias-linear --qk-layernorm)
  "$bin" train --device cuda --bf16 "${common[@]}" "${llama[@]}" 2>&1 | tee "$LOG_DIR/train_llama_gpu.log" || status=1
  OMP_NUM_THREADS=$(nproc) "$bin" train --device cpu "${common[@]}" "${llama[@]}" 2>&1 \
    | tee "$LOG_DIR/train_llama_cpu.log" || status=1
  paste <(grep -oE "lm loss: [0-9.E+-]+" "$LOG_DIR/train_llama_cpu.log") \
    <(grep -oE "lm loss: [0-9.E+-]+" "$LOG_DIR/train_llama_gpu.log") \
    | awk '{printf "cpu %s   gpu %s   diff %+.4f\n", $3, $6, $6 - $3}' | tee "$LOG_DIR/train_llama_compare.txt"
  section "train: document masks (--reset-attention-mask --reset-position-ids: the block attention kernel), GPU bf16 vs CPU fp32"
  docs=(--train-iters 60 --log-interval 20 --eval-iters 0 "${llama[@]}" --reset-attention-mask --reset-position-ids)
  "$bin" train --device cuda --bf16 "${docs[@]}" 2>&1 | tee "$LOG_DIR/train_docs_gpu.log" || status=1
  OMP_NUM_THREADS=$(nproc) "$bin" train --device cpu "${docs[@]}" 2>&1 | tee "$LOG_DIR/train_docs_cpu.log" || status=1
  paste <(grep -oE "lm loss: [0-9.E+-]+" "$LOG_DIR/train_docs_cpu.log") \
    <(grep -oE "lm loss: [0-9.E+-]+" "$LOG_DIR/train_docs_gpu.log") \
    | awk '{printf "cpu %s   gpu %s   diff %+.4f\n", $3, $6, $6 - $3}' | tee "$LOG_DIR/train_docs_compare.txt"
fi
if [[ "${TRAIN_MOE:-0}" == 1 ]]; then
  section "train: a small MoE (Mixtral-style, 8 experts top-2, aux and z losses), GPU bf16 vs CPU fp32"
  moe=(--train-iters 100 --log-interval 20 --eval-iters 0 --normalization RMSNorm --swiglu --group-query-attention
       --num-query-groups 2 --position-embedding-type rope --untie-embeddings-and-output-weights --disable-bias-linear
       --num-experts 8 --moe-router-topk 2 --moe-ffn-hidden-size 512 --moe-aux-loss-coeff 0.01 --moe-z-loss-coeff 0.001)
  "$bin" train --device cuda --bf16 "${moe[@]}" 2>&1 | tee "$LOG_DIR/train_moe_gpu.log" || status=1
  OMP_NUM_THREADS=$(nproc) "$bin" train --device cpu "${moe[@]}" 2>&1 | tee "$LOG_DIR/train_moe_cpu.log" || status=1
  paste <(grep -oE "lm loss: [0-9.E+-]+" "$LOG_DIR/train_moe_cpu.log") <(grep -oE "lm loss: [0-9.E+-]+" "$LOG_DIR/train_moe_gpu.log") \
    | awk '{printf "cpu %s   gpu %s   diff %+.4f\n", $3, $6, $6 - $3}' | tee "$LOG_DIR/train_moe_compare.txt"
fi
if [[ "${MOE_BENCH:-0}" == 1 ]]; then
  section "benchmark: Qwen3-MoE-style 3B (64 experts top-8), megatron.cpp vs PyTorch torch._grouped_mm + torch.compile"
  python3 bench/moe_gpu_vs_pytorch.py --build-dir "$BUILD_DIR" --ours-args="${MOE_BENCH_ARGS:-}" 2>&1 \
    | tee "$LOG_DIR/bench_moe.log" || status=1
fi
if [[ "${LONG_CONTEXT_BENCH:-0}" == 1 ]]; then
  section "benchmark: long context (issue 20), Llama-3.2-1B at 16k-128k, megatron.cpp vs PyTorch full AC + torch.compile"
  # The device allows 600 s a command: the benchmark gets what is left of 580 s (at least 60) unless told.
  lc_budget=${LONG_CONTEXT_BUDGET:-$(( 580 - SECONDS > 60 ? 580 - SECONDS : 60 ))}
  lc_args=(--build-dir "$BUILD_DIR" --time-budget "$lc_budget" --out "$LOG_DIR/long_context.json")
  [[ -n "${LONG_CONTEXT_MEMORY_CAP_GIB:-}" ]] && lc_args+=(--memory-cap-gib "$LONG_CONTEXT_MEMORY_CAP_GIB")
  [[ -n "${LONG_CONTEXT_RECOMPUTE:-}" ]] && lc_args+=("--recompute-options=$LONG_CONTEXT_RECOMPUTE")
  [[ -n "${LONG_CONTEXT_OURS_ARGS:-}" ]] && lc_args+=("--ours-args=$LONG_CONTEXT_OURS_ARGS")
  # shellcheck disable=SC2206  # several flags, space-separated
  [[ -n "${LONG_CONTEXT_ARGS:-}" ]] && lc_args+=(${LONG_CONTEXT_ARGS})
  PYTHONUNBUFFERED=1 python3 bench/long_context_gpu_vs_pytorch.py "${lc_args[@]}" 2>&1 \
    | tee "$LOG_DIR/bench_long_context.log" || status=1
fi
if [[ "${GENERATE:-1}" == 1 ]]; then
  section "generate: megatron generate on the GPU (fp32) gives transformers' greedy tokens; KV cache kernels vs CPU"
  MEGATRON_GENERATE_DEVICE=cuda MEGATRON_BUILD_DIR="$BUILD_DIR" python3 -m pytest -q tests/python/test_generate_hf.py \
    -k "greedy or end_of_sequence or our_checkpoint" 2>&1 | tee "$LOG_DIR/generate_gpu.log" || status=1
  # Mixtral and Qwen3-MoE (the MoE layer's eval path on the GPU: router, permutation, grouped GEMM)
  MEGATRON_GENERATE_DEVICE=cuda MEGATRON_BUILD_DIR="$BUILD_DIR" python3 -m pytest -q tests/python/test_hf_moe.py \
    -k "test_greedy_generation_matches_transformers" 2>&1 | tee -a "$LOG_DIR/generate_gpu.log" || status=1
  "$BUILD_DIR/tests/test_kernels" --gtest_filter='*KVCache*:*Argmax*' 2>&1 | tail -4 | tee -a "$LOG_DIR/generate_gpu.log" \
    || status=1
fi
if [[ "${SANITIZE:-1}" == 1 ]] && command -v compute-sanitizer >/dev/null; then
  section "compute-sanitizer (memcheck) on a short GPU run"
  compute-sanitizer --tool memcheck --error-exitcode 3 "$bin" train --device cuda --bf16 --train-iters 3 \
    --log-interval 1 --eval-iters 1 --eval-interval 3 --num-layers 2 --seq-length 64 2>&1 \
    | tail -20 | tee "$LOG_DIR/sanitizer.log" || status=1
fi
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
if [[ "${DIST:-1}" == 1 && "$ngpu" -ge 2 ]]; then
  section "NCCL: DP=2, DP=2 + distributed optimizer, TP=2, TP=2 + SP vs one GPU (fp32, then bf16)"
  BUILD_DIR="$BUILD_DIR" bash scripts/device-dist-check.sh 2>&1 | tee "$LOG_DIR/dist_fp32.log" || status=1
  BUILD_DIR="$BUILD_DIR" bash scripts/device-dist-check.sh --bf16 2>&1 | tee "$LOG_DIR/dist_bf16.log" || status=1
  section "NCCL: a rank killed or stopped mid-run ends the job within --distributed-timeout-minutes"
  for mode in kill stop; do
    DEVICE=cuda bash tests/parallel/rank_failure.sh $mode "$bin" mpirun --allow-run-as-root --oversubscribe \
      -x NCCL_NVLS_ENABLE=0 2>&1 | tee "$LOG_DIR/rank_failure_$mode.log" || status=1
  done
  section "GPT 350M: saved under TP=2 + SP, resumed under DP=2 with the distributed optimizer"
  BUILD_DIR="$BUILD_DIR" bash scripts/device-reshard-check.sh 2>&1 | tee "$LOG_DIR/reshard.log" || status=1
fi
if [[ "${BENCH:-1}" == 1 ]]; then
  for m in ${BENCH_MODELS:-124m}; do
    section "benchmark $m: megatron.cpp vs PyTorch torch.compile"
    # 1.3B: keeping GeLU's output in all 24 layers would cost 6.4 GB, above PyTorch's peak memory;
    # the logits in 4 chunks free 1.2 GB, so 20 layers keep it and the first 4 recompute it.
    extra=(); [[ "$m" == 1.3b ]] && extra=("--ours-args=--recompute-gelu --recompute-num-layers 4 --cross-entropy-chunks 4")
    python3 bench/gpt_gpu_vs_pytorch.py --model "$m" --build-dir "$BUILD_DIR" "${extra[@]}" 2>&1 \
      | tee "$LOG_DIR/bench_$m.log" || status=1
  done
  for m in ${LLAMA_BENCH_MODELS-llama3.2-1b}; do
    section "benchmark $m: megatron.cpp vs PyTorch torch.compile (and eager)"
    python3 bench/llama_gpu_vs_pytorch.py --model "$m" --build-dir "$BUILD_DIR" --pytorch-eager \
      ${LLAMA_BENCH_ARGS:+"--ours-args=$LLAMA_BENCH_ARGS"} 2>&1 | tee "$LOG_DIR/bench_$m.log" || status=1
  done
  if [[ "${GENERATE:-1}" == 1 ]]; then
    section "benchmark: generation, Llama 3.2 1B shape, batch 1 and 16, vs transformers (static cache + torch.compile)"
    python3 bench/generate_benchmark.py --build-dir "$BUILD_DIR" 2>&1 | tee "$LOG_DIR/bench_generate.log" || status=1
  fi
  section "GEMM kernels at the models' shapes vs a square GEMM"
  "$BUILD_DIR/gemm_bench" 2>&1 | tee "$LOG_DIR/gemm_bench.md" || status=1
  section "attention kernels: causal forward/backward TFLOP/s, seq 1024/2048/4096, head dim 64/128"
  "$BUILD_DIR/attention_bench" 2>&1 | tee "$LOG_DIR/attention_bench.md" || status=1
  section "LayerNorm kernels: bandwidth at the models' widths"
  "$BUILD_DIR/layernorm_bench" 2>&1 | tee "$LOG_DIR/layernorm_bench.md" || status=1
  section "time to the first iteration, GPT 1.3B"
  python3 bench/time_to_first_iteration.py --model 1.3b --build-dir "$BUILD_DIR" 2>&1 \
    | tee "$LOG_DIR/bench_first_iteration.log" || status=1
fi
if [[ "${BENCH:-1}" == 1 && "$ngpu" -ge 2 ]]; then
  for mode in ${MULTI_BENCH:-dp tp}; do
    section "benchmark on 2 GPUs: $mode"
    OUT="$LOG_DIR" python3 bench/gpt_multi_gpu.py --mode "$mode" --build-dir "$BUILD_DIR" 2>&1 \
      | tee "$LOG_DIR/bench_multi_$mode.log" || status=1
  done
fi
if [[ "${PIPELINE_BUBBLE:-0}" == 1 ]]; then
  section "pipeline bubble on CPU ranks: 1F1B, interleaved, ZB-H1 at P = 2, 4 and m = 4, 8, 16"
  python3 bench/pipeline_bubble.py --build-dir "$BUILD_DIR" 2>&1 | tee "$LOG_DIR/bench_pipeline_bubble.log" || status=1
fi
if [[ "${PROFILE:-0}" == 1 ]]; then
  section "profile: GPU time per kernel and category, megatron.cpp vs PyTorch"
  OUT="$LOG_DIR" BUILD_DIR="$BUILD_DIR" bash scripts/device-profile.sh 2>&1 | tee "$LOG_DIR/profile.log" || status=1
fi
if [[ "${SCALE:-0}" == 1 && "$ngpu" -ge 4 ]]; then
  # Each layout with and without --tp-comm-overlap (micro batch 4, 2 microbatches per DP rank).
  if [[ "$ngpu" -ge 8 ]]; then
    counts=2,4,8; layouts=2x4,2x4:tpoverlap,4x2,4x2:tpoverlap,2x2,2x2:tpoverlap; preset=8gpu
  else
    counts=2,4; layouts=2x2,2x2:tpoverlap,4x1,4x1:tpoverlap; preset=4gpu
  fi
  parts=" ${SCALE_PARTS:-dp grid reshard} "
  if [[ "$parts" == *" dp "* ]]; then
    section "scale-out: GPT 1.3B data-parallel weak scaling on 1,$counts GPUs, and PyTorch DDP on 1 and $ngpu"
    OUT="$LOG_DIR" python3 bench/gpt_multi_gpu.py --mode dp --model 1.3b --gpus "$counts" \
      --build-dir "$BUILD_DIR" 2>&1 | tee "$LOG_DIR/bench_scale_dp.log" || status=1
  fi
  if [[ "$parts" == *" grid "* ]]; then
    section "scale-out: 7B-class GPT, TP x DP = $layouts"
    OUT="$LOG_DIR" python3 bench/gpt_multi_gpu.py --mode grid --model 7b --layouts "$layouts" --micro-batch 4 \
      --accum 2 --build-dir "$BUILD_DIR" 2>&1 | tee "$LOG_DIR/bench_scale_grid.log" || status=1
  fi
  if [[ "$parts" == *" reshard "* ]]; then
    section "scale-out: 7B-class GPT saved on $ngpu GPUs at iteration 50, resumed as TP=4 x DP=1"
    PRESET=$preset BUILD_DIR="$BUILD_DIR" bash scripts/device-reshard-check.sh 2>&1 \
      | tee "$LOG_DIR/reshard_$preset.log" || status=1
  fi
fi
echo "logs: $LOG_DIR"
exit "$status"
