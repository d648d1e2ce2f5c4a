#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU code (build-asan/), and the tests
# of the layers that read untrusted input — core (files, JSON depth, allocation), data (indexed
# datasets, tokenizers, index caches), checkpoint (our format, safetensors, Hugging Face and
# Megatron-LM imports), optim and train (arguments, metrics writers) — plus a short training run,
# a save/resume and bad-input runs of the binary. Any sanitizer report fails it (UBSan does not
# recover). scripts/test.sh runs it; alone: bash scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${ASAN_BUILD_DIR:-build-asan}
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMT_WITH_CUDA=OFF \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" >/dev/null
fi
targets=(megatron test_core test_data test_checkpoint test_optim test_train)
cmake --build "$BUILD" -j"$(nproc)" --target "${targets[@]}"
# Open MPI's and OpenBLAS's own allocations are not ours to report as leaks at exit.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=2
status=0
for t in test_core test_data test_checkpoint test_optim test_train; do
  echo "sanitize: $t"
  "$BUILD/tests/$t" --gtest_brief=1 >"$BUILD/$t.log" 2>&1 || { status=1; tail -40 "$BUILD/$t.log"; }
done
bin="$BUILD/megatron"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tiny=(--num-layers 2 --hidden-size 32 --num-attention-heads 2 --seq-length 32 --micro-batch-size 2
      --global-batch-size 4 --eval-interval 3 --eval-iters 1 --log-interval 1)
echo "sanitize: train, save, resume"
"$bin" train "${tiny[@]}" --train-iters 3 --save "$tmp/ck" >"$tmp/a.log" 2>&1 || { status=1; tail -40 "$tmp/a.log"; }
"$bin" train "${tiny[@]}" --train-iters 5 --load "$tmp/ck" --save "$tmp/ck" --swiglu --normalization RMSNorm \
  --position-embedding-type rope >"$tmp/b.log" 2>&1 && { echo "sanitize: expected an architecture mismatch"; status=1; }
grep -q "runtime error\|ERROR: AddressSanitizer" "$tmp/b.log" && { status=1; tail -40 "$tmp/b.log"; }
"$bin" train "${tiny[@]}" --train-iters 5 --load "$tmp/ck" --save "$tmp/ck" >"$tmp/c.log" 2>&1 \
  || { status=1; tail -40 "$tmp/c.log"; }
echo "sanitize: bad input exits 2 without a report"
for bad in "--lr nan" "--data-path $tmp/nothing" "--load $tmp/ckk --save $tmp/ck" "--hidden-size 4000000" \
           "--tokenizer-type HuggingFaceTokenizer --tokenizer-model $tmp/a.log"; do
  # shellcheck disable=SC2086  # the flags split on purpose
  rc=0; "$bin" train "${tiny[@]}" --train-iters 1 $bad >"$tmp/bad.log" 2>&1 || rc=$?
  if [ "$rc" -ne 2 ] || grep -q "runtime error\|ERROR: AddressSanitizer" "$tmp/bad.log"; then
    echo "sanitize: '$bad' gave exit $rc"; tail -20 "$tmp/bad.log"; status=1
  fi
done
[ "$status" -eq 0 ] && echo "sanitize: clean" || echo "sanitize: FAILED"
exit "$status"
