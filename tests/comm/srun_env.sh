#!/usr/bin/env bash
# srun's environment, faked in one process: a task of several with no PMI (MPI sees 1 process) is
# one line naming --mpi=pmix and exit 2, not N independent trainings; SLURM_LOCALID is the local
# rank that chooses the GPU (printed in the start-up line). Usage: srun_env.sh MEGATRON
set -u
bin=$1
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
common=(train --device cpu --mock-data --vocab-size 300 --num-layers 1 --hidden-size 32 --num-attention-heads 4
        --seq-length 16 --micro-batch-size 2 --global-batch-size 2 --eval-iters 0 --log-interval 1 --train-iters 1)
fail() { echo "FAIL: $*"; cat "$dir/out" "$dir/err"; exit 1; }
clean=(env -u OMPI_COMM_WORLD_SIZE -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_LOCAL_RANK -u PMIX_RANK -u PMI_RANK
       -u PMI_SIZE -u MPI_LOCALNRANKS -u MPI_LOCALRANKID -u LOCAL_RANK -u SLURM_STEP_NUM_TASKS)
"${clean[@]}" SLURM_NTASKS=2 SLURM_PROCID=0 SLURM_LOCALID=0 "$bin" "${common[@]}" > "$dir/out" 2> "$dir/err"
rc=$?
[ $rc = 2 ] || fail "srun without PMI: exit $rc, expected 2"
[ "$(grep -c . "$dir/err")" = 1 ] && grep -q "task 0 of 2 .* 'srun --mpi=pmix'" "$dir/err" || fail "srun without PMI: not one line naming --mpi=pmix"
grep -q "iteration" "$dir/out" && fail "srun without PMI: trained"
# One task (of a step in a bigger allocation): trains; SLURM_LOCALID is the local rank.
"${clean[@]}" SLURM_NTASKS=4 SLURM_STEP_NUM_TASKS=1 SLURM_PROCID=0 SLURM_LOCALID=3 "$bin" "${common[@]}" > "$dir/out" 2> "$dir/err" \
  || fail "one srun task: expected exit 0"
grep -q "> launcher: srun, world size 1; rank 0: local rank 3, device cpu" "$dir/out" || fail "one srun task: no start-up line with local rank 3"
"${clean[@]}" -u SLURM_PROCID -u SLURM_NTASKS -u SLURM_LOCALID "$bin" "${common[@]}" > "$dir/out" 2> "$dir/err" || fail "no launcher"
grep -q "> launcher: none, world size 1; rank 0: local rank 0, device cpu" "$dir/out" || fail "no launcher: start-up line"
echo PASS
