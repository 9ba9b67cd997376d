#!/usr/bin/env bash
# One GPU session (see ../.library/device): build with the tests and benchmarks, run the C++ and
# Python tests, then the benchmark rows of issue 4. Logs go to $OUT; a short summary to stdout.
#   bash benchmarks/gpu_session.sh [quick]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/blockinfer-gpu}; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps . -C build-dir=build/gpu \
  -C cmake.define.BLOCKINFER_BUILD_TESTS=ON -C cmake.define.BLOCKINFER_BUILD_BENCHMARKS=ON > "$OUT/build.log" 2>&1 \
  || { echo "BUILD FAILED"; grep -E "error|Error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [ "${1:-}" != "bench" ]; then
ctest --test-dir build/gpu --output-on-failure > "$OUT/ctest.log" 2>&1
grep -E "tests passed|FAILED|Failed|Skipped|passed, " "$OUT/ctest.log" | head -20
# "final": only the test files that exercise the GPU (the CPU half runs in CI).
if [ "${1:-}" = "final" ]; then
  files="test_gpu_engine.py test_kernels.py test_parity.py test_policy_parity.py"
else
  files="."
fi
(cd tests/python && python3 -m pytest $files -q -rs -p no:cacheprovider > "$OUT/pytest.log" 2>&1)
grep -E "^FAILED|^ERROR|passed|failed" "$OUT/pytest.log" | tail -15
grep -E "max \|dlogit\||agreement|identical under" "$OUT/pytest.log" | head -20
fi
[ "${1:-}" = "quick" ] && exit 0
mk() { d=$(mktemp -d); cp "benchmarks/configs/$1.json" "$d/config.json"; echo "$d"; }
B=build/gpu/bench_engine
{
  $B "$(mk sdar-8b)" --batch 1 --block 4,16 --prompt 256 --gen 128
  $B "$(mk sdar-4b)" --batch 1,32,128 --block 4 --prompt 256 --gen 128
  $B "$(mk sdar-1.7b)" --batch 1,8,32,128,256 --block 4 --prompt 256 --gen 128
  build/gpu/bench_kernels
  python3 benchmarks/bench_generate.py --config benchmarks/configs/sdar-1.7b.json --batch 1 32 --block 4 \
    --prompt-len 256 --max-tokens 128
} 2>&1 | tee "$OUT/bench.md"
[ "${1:-}" = "final" ] && exit 0
# Where the time goes: per-op profile of two rows (device synchronised per op, so slower).
d=$(mk sdar-1.7b); BLOCKINFER_PROFILE=1 $B "$d" --batch 1 --block 4 --gen 32 > "$OUT/profile.txt" 2>&1
d=$(mk sdar-4b); BLOCKINFER_PROFILE=1 $B "$d" --batch 128 --block 4 --gen 32 >> "$OUT/profile.txt" 2>&1
tail -40 "$OUT/profile.txt"
