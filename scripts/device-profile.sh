#!/usr/bin/env bash
# Where a training iteration's GPU time goes, ours and PyTorch's (torch.compile), same model and
# batch as bench/gpt_gpu_vs_pytorch.py: Nsight Compute times every kernel of PROFILE_ITERS
# steady-state iterations (--profile marks them; --clock-control none, caches left warm), and
# scripts/ncu_breakdown.py sums the time per kernel and per category (GEMM, attention, the rest).
# ncu runs kernels one at a time: the sums are busy time without overlap. Needs ncu (Firecracker
# GPU machines have it) and a CUDA build (scripts/device-test.sh builds one).
#   MODEL=124m BUILD_DIR=build-gpu PROFILE_ITERS=1 PYTORCH=1 scripts/device-profile.sh
#   MODEL=llama3.2-1b ...  (bench/llama_gpu_vs_pytorch.py's model and batch; its torchtitan-style peer)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${BUILD_DIR:-build-gpu}/megatron
out=${OUT:-${BUILD_DIR:-build-gpu}/logs}
mkdir -p "$out"
model=${MODEL:-124m}
iters=${PROFILE_ITERS:-1}
warmup=5
case "$model" in
  124m) shape=(12 768 12 16 1024) ;;
  350m) shape=(24 1024 16 16 1024) ;;
  1.3b) shape=(24 2048 16 8 2048) ;;
  llama3.2-1b) shape=(16 2048 32 4 2048) ;;
  *) echo "device-profile: MODEL must be 124m, 350m, 1.3b or llama3.2-1b, got '$model'" >&2; exit 2 ;;
esac
read -r L C H B T <<< "${shape[*]}"
ncu=(ncu --profile-from-start off --clock-control none --cache-control none --metrics gpu__time_duration.sum
     --csv --print-kernel-base function)
if [[ "$model" == llama* ]]; then
  train=("$bin" train --model-preset "$model" --device cuda --bf16 --mock-data --vocab-size 128256 --seq-length "$T"
         --micro-batch-size "$B" --global-batch-size "$B" --eval-iters 0 --lr 3e-4 --lr-decay-style constant
         ${OURS_ARGS:-})
  peer="from torch_llama import tokens_per_second
tokens_per_second((16, 2048, 32, 8, 8192, 2048, 128256, 500000.0, 32.0, True), $B, 1, $warmup, profile_iters=$iters)"
else
  train=("$bin" train --device cuda --bf16 --mock-data --vocab-size 50304 --num-layers "$L" --hidden-size "$C"
         --num-attention-heads "$H" --seq-length "$T" --micro-batch-size "$B" --global-batch-size "$B"
         --eval-iters 0 --hidden-dropout 0 --attention-dropout 0 --lr 3e-4 --lr-decay-style constant ${OURS_ARGS:-})
  peer="from torch_gpt import tokens_per_second
tokens_per_second($L, $C, $H, $T, 50304, $B, 1, $warmup, device='cuda', bf16=True, compile=True,
                  profile_iters=$iters)"
fi
# Wall time per iteration without the profiler (mean of iterations warmup+1 .. warmup+10).
"${train[@]}" --train-iters $((warmup + 10)) --log-interval "$warmup" > "$out/profile_${model}_plain.log"
step_ms=$(grep -oE "elapsed time per iteration \(ms\): [0-9.]+" "$out/profile_${model}_plain.log" | tail -1 | awk '{print $NF}')
"${ncu[@]}" "${train[@]}" --train-iters $((warmup + iters)) --log-interval 1 --profile \
  --profile-step-start "$warmup" --profile-step-end $((warmup + iters)) > "$out/ncu_${model}_ours.csv"
python3 scripts/ncu_breakdown.py "$out/ncu_${model}_ours.csv" --iters "$iters" --step-ms "$step_ms" \
  --title "megatron.cpp, $model, bf16, batch $B x $T" | tee "$out/profile_${model}_ours.md"
if [[ "${PYTORCH:-1}" == 1 ]]; then
  "${ncu[@]}" python3 -c "
import sys; sys.path.insert(0, 'bench')
$peer" > "$out/ncu_${model}_torch.csv"
  python3 scripts/ncu_breakdown.py "$out/ncu_${model}_torch.csv" --iters "$iters" \
    --title "PyTorch torch.compile, $model, bf16, batch $B x $T" | tee "$out/profile_${model}_torch.md"
fi
