#!/usr/bin/env bash
# An invalid layout is named once (by rank 0) in one line, and every rank exits with code 2.
#   invalid_layout.sh MEGATRON MPIRUN...
set -u
megatron=$1
shift
fail=0
check() {  # np expected-substring flags...
  local np=$1 want=$2
  shift 2
  out=$("$@" 2>&1)
  rc=$?
  lines=$(grep -c "megatron: error:" <<<"$out")
  if [ $rc -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -q "$want" <<<"$out"; then
    echo "FAIL (np $np, rc $rc, $lines error lines, want '$want'):"
    echo "$out"
    fail=1
  else
    grep "megatron: error:" <<<"$out"
  fi
}
base="--mock-data --vocab-size 300 --num-layers 1 --seq-length 32 --train-iters 1 --device cpu"
check 3 "world size 3 is not a multiple" "$@" -np 3 "$megatron" train $base --tensor-model-parallel-size 2
check 2 "num-attention-heads 3 is not divisible" "$@" -np 2 "$megatron" train $base --hidden-size 36 \
  --num-attention-heads 3 --tensor-model-parallel-size 2
check 2 "global-batch-size 6 is not divisible" "$@" -np 2 "$megatron" train $base --micro-batch-size 2 \
  --global-batch-size 6
check 2 "ffn-hidden-size 31 is not divisible" "$@" -np 2 "$megatron" train $base --ffn-hidden-size 31 \
  --tensor-model-parallel-size 2
check 2 "seq-length 33 is not divisible" "$@" -np 2 "$megatron" train --mock-data --vocab-size 300 \
  --num-layers 1 --seq-length 33 --train-iters 1 --device cpu --tensor-model-parallel-size 2 --sequence-parallel
# Pipelines: layers that do not split, Megatron's interleaving constraint, a malformed layout string.
check 2 "num-layers 3 does not split evenly over 2 pipeline stages" "$@" -np 2 "$megatron" train --mock-data \
  --vocab-size 300 --num-layers 3 --seq-length 32 --train-iters 1 --device cpu --pipeline-model-parallel-size 2
check 2 "multiple of --pipeline-model-parallel-size 2" "$@" -np 2 "$megatron" train --mock-data --vocab-size 300 \
  --num-layers 4 --seq-length 32 --train-iters 1 --device cpu --pipeline-model-parallel-size 2 \
  --num-virtual-stages-per-pipeline-rank 2 --micro-batch-size 2 --global-batch-size 6
check 2 "pipeline-model-parallel-layout \"Et|tx|L\": unknown character 'x'" "$@" -np 2 "$megatron" train --mock-data \
  --vocab-size 300 --num-layers 2 --seq-length 32 --train-iters 1 --device cpu --pipeline-model-parallel-size 2 \
  --pipeline-model-parallel-layout "Et|tx|L"
check 2 "zb-h1 takes no virtual stages" "$@" -np 2 "$megatron" train --mock-data --vocab-size 300 --num-layers 4 \
  --seq-length 32 --train-iters 1 --device cpu --pipeline-model-parallel-size 2 --num-virtual-stages-per-pipeline-rank 2 \
  --pipeline-schedule zb-h1
exit $fail
