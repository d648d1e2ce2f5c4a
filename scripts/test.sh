#!/usr/bin/env bash
# The whole test suite: installs what is needed, builds everything (CUDA code is compiled when
# nvcc is present; GPU tests skip without a device), runs the C++ tests (ctest) and the Python
# interoperability tests (pytest) and the sanitizer build (scripts/sanitize.sh), then prints one
# summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --python || exit 1
bash scripts/build.sh || exit 1

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p build/test-logs
ctest --test-dir build --output-on-failure -j2 2>&1 | tee build/test-logs/ctest.log
ctest_rc=${PIPESTATUS[0]}
MEGATRON_BUILD_DIR=$PWD/build .venv/bin/python -m pytest -q tests/python 2>&1 | tee build/test-logs/pytest.log
py_rc=${PIPESTATUS[0]}

# AddressSanitizer + UndefinedBehaviorSanitizer over the input-facing layers (a second build, build-asan/).
bash scripts/sanitize.sh 2>&1 | tee build/test-logs/sanitize.log
san_rc=${PIPESTATUS[0]}

c_fail=$(grep -oE "tests passed, [0-9]+ tests failed out of [0-9]+" build/test-logs/ctest.log | tail -1)
c_total=$(echo "$c_fail" | grep -oE "[0-9]+$" || echo 0)
c_failed=$(echo "$c_fail" | grep -oE "passed, [0-9]+" | grep -oE "[0-9]+" || echo 0)
p_passed=$(grep -oE "[0-9]+ passed" build/test-logs/pytest.log | tail -1 | grep -oE "[0-9]+" || echo 0)
p_failed=$(grep -oE "[0-9]+ failed" build/test-logs/pytest.log | tail -1 | grep -oE "[0-9]+" || echo 0)
passed=$(( ${c_total:-0} - ${c_failed:-0} + ${p_passed:-0} ))
failed=$(( ${c_failed:-0} + ${p_failed:-0} ))
echo "tests: ${passed} passed, ${failed} failed"
[ "$san_rc" -eq 0 ] && echo "sanitizers: clean" || echo "sanitizers: FAILED (build/test-logs/sanitize.log)"
if [ "$san_rc" -ne 0 ] || [ "$ctest_rc" -ne 0 ] || [ "$py_rc" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then exit 1; fi
