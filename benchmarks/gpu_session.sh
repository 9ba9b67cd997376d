#!/usr/bin/env bash
# One GPU session (see ../.library/device): build with the tests and benchmarks, then the stages
# named on the command line, in order. Logs go to $OUT; a short summary to stdout.
#   bash benchmarks/gpu_session.sh [test] [bench] [bidir] [profile]
#     test:    ctest (CUDA kernels against the CPU) and the GPU half of pytest
#     bench:   the SDAR rows of issue 4 (bench_engine, graphs and eager), bench_kernels, bench_generate.py
#              (bench_a: SDAR-8B and the kernels; bench_b: SDAR-4B, SDAR-1.7B and the Python API)
#     bidir:   the LLaDA-8B / Dream-7B rows of issue 5 (canvas against the caches)
#     key:     the rows the acceptance points name (SDAR-8B b1, SDAR-4B b128, kernels, LLaDA-8B b1)
#     quickbench: three engine rows and bench_kernels
#     diag: the host's share of a step (coarse events, graphs on) and per-op GPU time (CUDA events)
#     ncu: per-kernel GPU time of short eager runs (Nsight Compute)
#     ncuprefill: what holds the prefill attention: one launch (8 x 2,048 prompt tokens) under Nsight
#                 Compute's full set; the report goes to $OUT
#     kernels: bench_kernels (attention, sampling, the model shapes' GEMMs)
#     plan: the attention plan's key runs (bench_kernels --split-sweep 1 and 2) and the engine rows they touch
#     ctest: the C++ tests only (CUDA kernels against the CPU)
#     final: the benchmark matrix that fits one 10-minute call
#     clocks: the SM clock, power and throttle reasons under the SDAR-4B batch-128 row and under
#             its forward's GEMMs and attention kept running (the power cap's floor)
#     overlap: the same forward's GEMMs and attention at once on two stream lanes, and as two
#              half-batches, kept running (does overlap lower the joules?)
#     lmhead: the fused LM head and greedy sampling (CUTLASS) against cuBLASLt's LM head and the
#             sampling pass by rows, kept running, and SDAR-4B batch 128 with it on and off
#     mlp: the fused gate_up + SiLU·mul (CUTLASS) against cuBLASLt and the SiLU·mul kernel by rows,
#          kept running, and engine rows (SDAR-4B batch 128 and 256 block 4, 128 block 16) with the
#          default and with BLOCKINFER_GEMM_CUTLASS=0, alternating
# The build finds CUTLASS's headers in the nvidia-cutlass package of this Python; on a machine
# without network, CUTLASS_WHEEL=path/to/nvidia_cutlass-*.whl installs that wheel first.
#     gemmsus: each cuBLASLt candidate for SDAR-4B's four GEMMs at 640 rows kept running (the
#              power cap ranks them by joules per FLOP), then the heuristic's choice at 8,192 rows
#              (the most FLOPs per joule the library reaches on these weights) and again at 640
#     profile: per-op profile of two SDAR rows (device synchronised per op, so slower)
#     ttft: long prompts, SDAR-8B batch 1 (time to first tokens: the prefill rides on the first
#           block's first step), and per-op GPU time of the 16,384-token one (eager, CUDA events)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/blockinfer-gpu}; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
[ -n "${CUTLASS_WHEEL:-}" ] && python3 -m pip install --quiet --no-deps "$CUTLASS_WHEEL" > "$OUT/cutlass_install.log" 2>&1
python3 -m pip install --no-build-isolation --no-deps . -C build-dir=build/gpu \
  -C cmake.define.BLOCKINFER_BUILD_TESTS=ON -C cmake.define.BLOCKINFER_BUILD_BENCHMARKS=ON > "$OUT/build.log" 2>&1 \
  || { echo "BUILD FAILED"; grep -E "error|Error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
mk() { d=$(mktemp -d)/$1; mkdir -p "$d"; cp "benchmarks/configs/$1.json" "$d/config.json"; echo "$d"; }
B=build/gpu/bench_engine
# NAME COMMAND...: the command's output, then the SM clock, power and throttle reasons of its busy
# samples (nvidia-smi every 100 ms into $OUT/clocks_NAME.csv).
clocked() {
  local name=$1; shift
  nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu,clocks_event_reasons.active \
    --format=csv,noheader,nounits -lms 100 > "$OUT/clocks_$name.csv" 2>&1 &
  local smi=$!
  "$@" 2>&1
  kill $smi; python3 benchmarks/clock_summary.py "$OUT/clocks_$name.csv"
}
for stage in "$@"; do
  t0=$(date +%s)
  case $stage in
  test)
    ctest --test-dir build/gpu --output-on-failure > "$OUT/ctest.log" 2>&1
    grep -E "tests passed|FAILED|Failed|Skipped|rel err" "$OUT/ctest.log" | head -20
    # The GPU half: the GPU-only files whole, the device-parametrised ones' cuda cases.
    (cd tests/python && timeout 330 python3 -m pytest test_gpu_engine.py test_kernels.py -q -rs -p no:cacheprovider \
       > "$OUT/pytest_gpu.log" 2>&1;
     timeout 220 python3 -m pytest test_parity.py test_policy_parity.py test_llada.py test_dream.py test_batching.py test_streaming.py \
       test_sampling_behaviour.py test_async_scheduling.py test_prefill_first.py -k cuda -q -rs -p no:cacheprovider > "$OUT/pytest_cuda_params.log" 2>&1)
    for f in pytest_gpu pytest_cuda_params; do
      echo "$f: $(grep -E "passed|failed" "$OUT/$f.log" | tail -1)"; grep -E "^FAILED|^ERROR" "$OUT/$f.log" | head -10
    done
    grep -E "max \|dlogit\||agreement|identical under|graphs," "$OUT/pytest_gpu.log" | head -40 ;;
  bench|bench_a)
    {
      timeout 150 $B "$(mk sdar-8b)" --batch 1,8,32,128 --block 4,16 --prompt 256 --gen 512
      timeout 60 $B "$(mk sdar-8b)" --batch 1 --block 4 --prompt 256 --gen 512 --eager 1
      build/gpu/bench_kernels
    } 2>&1 | tee "$OUT/bench_a.md" ;;&
  bench|bench_b)
    {
      timeout 150 $B "$(mk sdar-4b)" --batch 1,8,32,128,256 --block 4,16 --prompt 256 --gen 512
      timeout 60 $B "$(mk sdar-4b)" --batch 128 --block 4 --prompt 256 --gen 512 --eager 1
      timeout 120 $B "$(mk sdar-1.7b)" --batch 1,8,32,128,256 --block 4,16 --prompt 256 --gen 512
      python3 benchmarks/bench_generate.py --config benchmarks/configs/sdar-1.7b.json --batch 1 32 --block 4 \
        --prompt-len 256 --max-tokens 512
    } 2>&1 | tee "$OUT/bench_b.md" ;;
  key)
    # The rows the acceptance points name, for a short session.
    {
      timeout 100 $B "$(mk sdar-8b)" --batch 1 --block 4,16 --prompt 256 --gen 512
      timeout 60 $B "$(mk sdar-8b)" --batch 1 --block 4 --prompt 256 --gen 512 --eager 1
      timeout 100 $B "$(mk sdar-4b)" --batch 128 --block 4 --prompt 256 --gen 512
      timeout 60 $B "$(mk sdar-4b)" --batch 128 --block 4 --prompt 256 --gen 512 --eager 1
      build/gpu/bench_kernels
      d=$(mk llada-8b)
      for mode in canvas dual_cache; do
        timeout 150 $B "$d" --mode $mode --batch 1 --block 32 --steps 32 --prompt 256,1024,2048 --gen 256
      done
    } 2>&1 | tee "$OUT/key.md" ;;
  final)
    # The matrix that fits one 10-minute device call: SDAR-4B at every batch and both blocks (the
    # batch-128 acceptance row among them, eager too), SDAR-8B batch 1/8/32, SDAR-1.7B block 4, the
    # Python API, Dream-7B canvas against dual cache, and the kernels.
    {
      timeout 170 $B "$(mk sdar-4b)" --batch 1,8,32,128,256 --block 4,16 --prompt 256 --gen 512
      timeout 40 $B "$(mk sdar-4b)" --batch 128 --block 4 --prompt 256 --gen 512 --eager 1
      timeout 90 $B "$(mk sdar-8b)" --batch 1,8,32 --block 4,16 --prompt 256 --gen 512
      timeout 70 $B "$(mk sdar-1.7b)" --batch 1,8,32,128,256 --block 4 --prompt 256 --gen 512
      timeout 40 python3 benchmarks/bench_generate.py --config benchmarks/configs/sdar-1.7b.json --batch 1 32 --block 4 \
        --prompt-len 256 --max-tokens 512
      d=$(mk dream-7b)
      for mode in canvas dual_cache; do
        timeout 70 $B "$d" --mode $mode --batch 1,16 --block 32 --steps 32 --prompt 256 --gen 256
      done
      timeout 30 build/gpu/bench_kernels
    } 2>&1 | tee "$OUT/final.md" ;;
  mlp)
    {
      timeout 150 build/gpu/bench_kernels --silu-mul-sweep 128,160,256,320,512,640,1024,2048,2560,4096,8192 \
        --sustained-seconds 1
      d4=$(mk sdar-4b)
      for i in 1 2; do
        for e in "" BLOCKINFER_GEMM_CUTLASS=0; do
          echo "${e:-default}:"
          env $e timeout 60 $B "$d4" --batch 128,256 --block 4 --prompt 256 --gen 512 | grep -E "^\| [A-Za-z]" | grep -v "^| shape"
          env $e timeout 60 $B "$d4" --batch 128 --block 16 --prompt 256 --gen 512 | grep -E "^\| [A-Za-z]" | grep -v "^| shape"
        done
      done
    } 2>&1 | tee "$OUT/mlp.md" ;;
  ctest)
    ctest --test-dir build/gpu --output-on-failure > "$OUT/ctest.log" 2>&1
    grep -E "tests passed|FAILED|Failed|Skipped|rel err" "$OUT/ctest.log" | head -20 ;;
  quickbench)
    {
      $B "$(mk sdar-8b)" --batch 1 --block 4 --prompt 256 --gen 128
      $B "$(mk sdar-8b)" --batch 1 --block 4 --prompt 256 --gen 128 --eager 1
      $B "$(mk sdar-4b)" --batch 128 --block 4 --prompt 256 --gen 128
      build/gpu/bench_kernels
    } 2>&1 | tee "$OUT/quickbench.md" ;;
  bidir)
    {
      for shape in llada-8b dream-7b; do
        d=$(mk $shape)
        for mode in canvas dual_cache; do
          $B "$d" --mode $mode --batch 1,16 --block 32 --steps 32 --prompt 256 --gen 256
          $B "$d" --mode $mode --batch 1 --block 32 --steps 32 --prompt 1024 --gen 256
        done
        for mode in prefix_cache block_causal; do
          $B "$d" --mode $mode --batch 1 --block 32 --steps 32 --prompt 256 --gen 256
        done
      done
    } 2>&1 | tee "$OUT/bidir.md" ;;
  diag)
    # Where a step's time goes: coarse CUDA events with graphs on (the host's share of a step) and
    # GPU time per op (CUDA events, eager launches). (bench_kernels times cuBLASLt's candidates.)
    d4=$(mk sdar-4b); d8=$(mk sdar-8b); dl=$(mk llada-8b)
    {
      for p in steps events; do
        e=""; [ $p = events ] && e="--eager 1"
        BLOCKINFER_PROFILE=$p $B "$d4" --batch 128 --block 4 --gen 128 $e
        BLOCKINFER_PROFILE=$p $B "$d8" --batch 1 --block 4 --gen 128 $e
        BLOCKINFER_PROFILE=$p $B "$dl" --mode dual_cache --batch 1 --block 32 --steps 32 --prompt 1024 --gen 128 $e
      done
    } > "$OUT/diag.txt" 2>&1
    grep -v "^|---" "$OUT/diag.txt" ;;
  ncu)
    # Per-kernel GPU time (Nsight Compute, one duration metric, clocks and caches left alone) over
    # short eager runs: SDAR-8B batch 1 block 4, SDAR-4B batch 128 block 4 and LLaDA-8B dual cache
    # batch 1, prompt 1,024.
    # benchmarks/ncu_summary.py groups each CSV by kernel, per decode step.
    # (--page raw also prints every device attribute: the LLaDA CSV of a whole run is too big to
    # bring back, so it keeps only the block forwards' first 3,000 kernels.)
    m="--clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --page raw"
    timeout 150 ncu $m $B "$(mk sdar-8b)" --batch 1 --block 4 --gen 16 --eager 1 > "$OUT/ncu_sdar8b_b1.csv" 2> "$OUT/ncu_sdar8b.err"
    timeout 200 ncu $m $B "$(mk sdar-4b)" --batch 128 --block 4 --gen 16 --eager 1 > "$OUT/ncu_sdar4b_b128.csv" 2> "$OUT/ncu_sdar4b.err"
    timeout 150 ncu $m --launch-skip 3000 --launch-count 3000 $B "$(mk llada-8b)" --mode dual_cache --batch 1 --block 32 \
      --steps 32 --prompt 1024 --gen 32 --eager 1 > "$OUT/ncu_llada8b_dual.csv" 2> "$OUT/ncu_llada.err"
    wc -l "$OUT"/ncu_*.csv; tail -n 3 "$OUT"/ncu_*.err
    for f in "$OUT"/ncu_*.csv; do echo "$f"; python3 benchmarks/ncu_summary.py "$f" --last-steps 8 | head -24; done ;;
  ncuprefill)
    # The tensor-core attention on a prefill (bench_kernels --prefill-only 1: its first launch is
    # the 8 x 2,048 row's): throughput, occupancy, pipes and the stall reasons of one launch.
    timeout 240 ncu --clock-control none --cache-control none --set full --kernel-name regex:k_attention_mma \
      --launch-count 1 --export "$OUT/ncu_prefill" build/gpu/bench_kernels --prefill-only 1 > "$OUT/ncu_prefill.log" 2>&1
    tail -n 3 "$OUT/ncu_prefill.log"
    ncu --import "$OUT/ncu_prefill.ncu-rep" --page details > "$OUT/ncu_prefill_details.txt" 2>&1
    ncu --import "$OUT/ncu_prefill.ncu-rep" --page raw > "$OUT/ncu_prefill_raw.txt" 2>&1
    grep -E "Throughput|Registers|Occupancy|Warp Cycles|Issue|Executed Ipc|Bank|Hit Rate|stalled|Stall" \
      "$OUT/ncu_prefill_details.txt" | head -60
    grep -E "pcsamp_warps_issue_stalled_[a-z_]+ |pipe_tensor_op_hmma_cycles_active.avg.pct|inst_executed_pipe_lsu.avg.pct" \
      "$OUT/ncu_prefill_raw.txt" | grep -v "not_issued" | head -40 ;;
  kernels)
    build/gpu/bench_kernels 2>&1 | tee "$OUT/kernels.md" ;;
  lmhead)
    # The fused LM head and greedy sampling against cuBLASLt's LM head and the sampling pass, by
    # rows, then SDAR-4B batch 128 block 4 with it on and off, alternating.
    {
      timeout 150 build/gpu/bench_kernels --lm-head-sweep 4,16,64,80,320,512,640 --sustained-seconds 1
      d4=$(mk sdar-4b)
      for i in 1 2; do
        for f in 1 0; do
          echo "BLOCKINFER_FUSED_LM_HEAD=$f"
          BLOCKINFER_FUSED_LM_HEAD=$f timeout 90 $B "$d4" --batch 128 --block 4 --prompt 256 --gen 512 2>&1 | grep -E "^\| sdar"
        done
      done
    } 2>&1 | tee "$OUT/lmhead.md" ;;
  plan)
    # The attention plan's key runs: the denoise sweep, and the rows whose plans the cost changed or
    # kept unmeasured (a one-sequence 4,096-token prefill, LLaDA-8B canvas and dual cache).
    {
      timeout 60 build/gpu/bench_kernels --split-sweep 1
      timeout 60 build/gpu/bench_kernels --split-sweep 2
      timeout 100 $B "$(mk sdar-8b)" --batch 1 --block 4 --prompt 4096 --gen 4
      d=$(mk llada-8b)
      for mode in canvas dual_cache; do
        timeout 120 $B "$d" --mode $mode --batch 1 --block 32 --steps 32 --prompt 1024 --gen 256
      done
    } 2>&1 | tee "$OUT/plan.md" ;;
  clocks)
    # The SM clock, power and throttle reasons while SDAR-4B batch 128 block 4 runs (graphs on),
    # and while its decode forward's GEMMs, its attention, the two together, a copy of the
    # attention's DRAM traffic, and the GEMMs with that copy are kept running 15 s each
    # (bench_kernels --sustained): what the card's power cap leaves of the clock, and the joules a
    # kernel that reads the KV once could not go below.
    clocked engine timeout 100 $B "$(mk sdar-4b)" --batch 128 --block 4 --prompt 256 --gen 512 \
      | grep -v "^|---" | tee -a "$OUT/clocks.md"
    for v in 0 1 2 3 4; do
      clocked sustained_$v timeout 100 build/gpu/bench_kernels --sustained 15 --sustained-only $v \
        | grep -v "^|---" | tee -a "$OUT/clocks.md"
    done ;;
  overlap)
    # Whether running work at once lowers the joules of SDAR-4B's batch-128 decode forward: its
    # GEMMs and attention in order, at once on two stream lanes with no dependency (the most any
    # overlap could give), the batch's two halves one after the other and on two lanes, and the
    # halves' GEMMs and attention alone (bench_kernels --sustained-only 6 to 11), 6 s each.
    for v in 0 2 6 7 8 10 11 1; do
      clocked overlap_$v timeout 90 build/gpu/bench_kernels --sustained 6 --sustained-only $v \
        | grep -v "^|---" | tee -a "$OUT/overlap.md"
    done ;;
  gemmsus)
    clocked gemmsus timeout 300 build/gpu/bench_kernels --sustained-gemms 640 --sustained-count 12 --sustained-seconds 1 \
      | tee "$OUT/gemmsus.md"
    timeout 200 build/gpu/bench_kernels --sustained-gemms 8192 --sustained-count 1 --sustained-seconds 4 2>&1 | tee -a "$OUT/gemmsus.md"
    timeout 200 build/gpu/bench_kernels --sustained-gemms 640 --sustained-count 1 --sustained-seconds 4 2>&1 | tee -a "$OUT/gemmsus.md" ;;
  ttft)
    d=$(mk sdar-8b)
    {
      timeout 120 $B "$d" --batch 1 --block 4 --prompt 1024,4096,16384 --gen 16
      timeout 60 $B "$d" --batch 8 --block 4 --prompt 4096 --gen 16
      BLOCKINFER_PROFILE=events timeout 120 $B "$d" --batch 1 --block 4 --prompt 16384 --gen 4 --eager 1
    } 2>&1 | tee "$OUT/ttft.md" | grep -v "^|---" ;;
  profile)
    d=$(mk sdar-8b); BLOCKINFER_PROFILE=1 $B "$d" --batch 1 --block 4 --gen 64 > "$OUT/profile.txt" 2>&1
    d=$(mk sdar-4b); BLOCKINFER_PROFILE=1 $B "$d" --batch 128 --block 4 --gen 32 >> "$OUT/profile.txt" 2>&1
    tail -50 "$OUT/profile.txt" ;;
  *) echo "unknown stage $stage" ;;
  esac
  echo "stage $stage: $(( $(date +%s) - t0 )) s"
done
