#!/usr/bin/env bash
# --check-for-nan-in-loss-and-grad and --rerun-mode (train/rerun_state_machine.h), through the
# MEGATRON_TEST_INJECT_NAN=ITER[:RANK][:once|always] hook. Usage: nan_check.sh MEGATRON [RANK [LAUNCHER...]]
# RANK: the rank whose loss is made NaN (0); LAUNCHER: e.g. "mpirun -np 2" (none: one process).
# NAN_CHECK_ARGS: more training flags (a layout).
set -u
bin=$1; rank=${2:-0}; shift $(( $# < 2 ? $# : 2 )); launch=("$@")
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
common=(train --device cpu --mock-data --vocab-size 300 --num-layers 2 --hidden-size 32 --num-attention-heads 4
        --seq-length 16 --micro-batch-size 2 --global-batch-size 4 --eval-iters 0 --log-interval 1 --train-iters 5
        --hidden-dropout 0.1 --attention-dropout 0.1 ${NAN_CHECK_ARGS:-})
fail() { echo "FAIL: $*"; for f in "$dir"/*; do echo "== $f"; cat "$f"; done; exit 1; }
run() {  # NAME INJECT ARGS...: stdout to NAME.out, stderr to NAME.err, exit code echoed
  local name=$1 inject=$2; shift 2
  MEGATRON_TEST_INJECT_NAN=$inject "${launch[@]}" "$bin" "${common[@]}" "$@" > "$dir/$name.out" 2> "$dir/$name.err"
  echo $?
}
losses() { grep -o "lm loss: [^|]*" "$dir/$1.out" | tr '\n' ' '; }

[ "$(run base "")" = 0 ] || fail "baseline run"
# A transient fault (the re-run is clean): said once on stderr; every loss as without it.
[ "$(run transient "3:$rank")" = 0 ] || fail "transient fault: expected exit 0"
grep -q "iteration 3: NaN/Inf in the loss on rank(s) $rank; the re-run .* transient fault" "$dir/transient.err" \
  || fail "transient fault: no warning naming iteration 3 and rank $rank"
[ "$(losses transient)" = "$(losses base)" ] || fail "transient fault: losses differ from the run without it"
[ "$(grep -c "lm loss" "$dir/transient.out")" = 5 ] || fail "transient fault: not 5 iteration lines"
# NaN again in the re-run: one line naming the iteration and the rank, exit 1, no iteration 3 logged.
[ "$(run persistent "3:$rank:always")" = 1 ] || fail "persistent NaN: expected exit 1"
[ "$(grep -c "^megatron: error" "$dir/persistent.err")" = 1 ] || fail "persistent NaN: not one error line"
grep -q "error: iteration 3: NaN/Inf in the loss on rank(s) $rank .* again .* data or model problem" "$dir/persistent.err" \
  || fail "persistent NaN: the line does not name iteration 3, rank $rank"
grep -q "iteration        3/" "$dir/persistent.out" && fail "persistent NaN: iteration 3 was stepped"
# --rerun-mode disabled: stop at once.
[ "$(run disabled "3:$rank" --rerun-mode disabled)" = 1 ] || fail "--rerun-mode disabled: expected exit 1"
grep -q "error: iteration 3: NaN/Inf in the loss on rank(s) $rank (--check-for-nan" "$dir/disabled.err" \
  || fail "--rerun-mode disabled: the line does not name iteration 3, rank $rank"
# --no-check-for-nan-in-loss-and-grad: trains on, the NaN counted in the log line.
[ "$(run nocheck "3:$rank" --no-check-for-nan-in-loss-and-grad)" = 0 ] || fail "--no-check: expected exit 0"
grep "iteration        3/" "$dir/nocheck.out" | grep -q "number of nan iterations:   1" \
  || fail "--no-check: iteration 3 not counted as a nan iteration"
# Megatron's --error-injection-rate 1 --error-injection-type transient_error: every iteration once.
[ "$(run inject "" --error-injection-rate 1)" = 0 ] || fail "--error-injection-rate 1: expected exit 0"
[ "$(losses inject)" = "$(losses base)" ] || fail "--error-injection-rate 1: losses differ"
[ "$(run report "" --rerun-mode report_stats)" = 0 ] || fail "--rerun-mode report_stats"
grep -q "rerun stats (--rerun-mode report_stats): 1 iteration(s) run twice; the loss differed in 0" "$dir/report.out" \
  || fail "report_stats: no stats line (or the loss was not deterministic)"
[ "$(losses report)" = "$(losses base)" ] || fail "report_stats: losses differ"
echo "PASS"
