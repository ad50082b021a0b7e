#!/usr/bin/env bash
# Per-kernel profile of the GLA forward + backward on the GPU machine (the device tool), for the
# kernel work of issue 5: builds tests/cuda/gla_backward_bench.cc with nvcc, times every anchor
# shape, then runs Nsight Compute over one call of each at B = ${GLA_PROFILE_B:-8 1} and writes, per
# kernel, its duration and the few counters that say what bounds it (HBM and L2 throughput,
# tensor-pipe use, achieved occupancy, the main warp stalls).
#   bash deploy/gpu-profile.sh            there, no carry needed; results in $OUT (profile_B*.csv)
#   bash deploy/gpu-profile.sh medium     there, carry ["gpu-pack"] (deploy/gpu-bundle.sh here first): the
#                                         medium-M projection kernel against cuBLAS at gla-1.3B's in-proj
#                                         and down, 17 / 32 / 128 rows (linear_medium_m_bench --profile),
#                                         every launch with its counters (profile_medium.csv);
#                                         GLA_PROFILE_DETAIL=1 adds one launch each in detail, and the SASS
# Clocks are left as they are (--clock-control none), as the device notes ask.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gla-profile}
case ${1:-gla} in gla | medium) ;; *) echo "gpu-profile.sh: unknown target '$1' (gla, medium)" >&2; exit 2 ;; esac
mkdir -p "$out" build-gpu
if [ "${1:-gla}" = medium ]; then
  [ -f gpu-pack/gpu-bundle.tar.xz ] || { echo "no gpu-pack/: run deploy/gpu-bundle.sh here and carry gpu-pack" >&2; exit 1; }
  tar -xJf gpu-pack/gpu-bundle.tar.xz
  ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2> /dev/null || true)
  [ -n "$ncu_bin" ] || { echo "ncu not found: no per-kernel profile"; exit 1; }
  # What bounds a weight-streaming GEMM: DRAM and L2 throughput and bytes, the shared-memory bank
  # conflicts, occupancy and registers, the tensor pipe, and where the warps stall.
  m=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum
  m+=,lts__t_sectors.avg.pct_of_peak_sustained_elapsed,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum
  m+=,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active
  m+=,launch__grid_size,launch__registers_per_thread,launch__occupancy_limit_shared_mem,launch__occupancy_limit_registers
  m+=,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active
  for stall in barrier long_scoreboard short_scoreboard mio_throttle math_pipe_throttle lg_throttle wait membar; do
    m+=,smsp__average_warps_issue_stalled_${stall}_per_issue_active.ratio
  done
  "$ncu_bin" --clock-control none --target-processes all --csv --metrics "$m" \
    gpu-bundle/run linear_medium_m_bench --profile > "$out/profile_medium.csv" 2> "$out/profile_medium.err"
  echo "ncu exit $? (stderr: $out/profile_medium.err)"
  python3 - "$out/profile_medium.csv" << 'EOF'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head, rows = rows[0], rows[1:]
ki, mi, vi, ii = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value"), head.index("ID")
per = collections.OrderedDict()
for r in rows:
    per.setdefault((int(r[ii]), r[ki].split("(")[0][:60]), {})[r[mi]] = r[vi]
short = lambda s: s.replace("smsp__average_warps_issue_stalled_", "stall_").replace("_per_issue_active.ratio", "")
for (i, name), m in per.items():  # every launch, in order: the bench's loop says which shape and rows
    print(f"{i:4d} {name:60s} " + "  ".join(f"{short(k).split('.')[0]}={v}" for k, v in m.items()))
EOF
  # GLA_PROFILE_DETAIL=1: the warp-state, instruction and scheduler sections over one launch each of
  # cuBLAS's kernel and the medium kernel with bf16 and FP8 rows (in-proj, 17 rows, the second
  # repetition), and the medium kernels' SASS (detail_medium.txt, sass_medium.txt).
  if [ -n "${GLA_PROFILE_DETAIL:-}" ]; then
    cuobjdump -sass gpu-bundle/bin/linear_medium_m_bench | awk '/Function : /{p = ($0 ~ /MediumMKernel/)} p' \
      > "$out/sass_medium.txt"
    "$ncu_bin" --clock-control none -k 'regex:MediumMKernel|nvjet' -s 4 -c 3 --section SpeedOfLight --section WarpStateStats \
      --section SourceCounters --section InstructionStats --section MemoryWorkloadAnalysis --section Occupancy \
      --section SchedulerStats --section LaunchStats --print-details all gpu-bundle/run linear_medium_m_bench --profile \
      > "$out/detail_medium.txt" 2>&1
    grep -v '^==PROF==' "$out/detail_medium.txt" | grep -E '^  [a-zA-Z_].*\(|Duration|Instructions Executed  |Warp Cycles Per Issued|Stall [A-Z]|Active Warps Per Sch|Eligible Warps Per|No Eligible|DRAM Throughput' |
      awk '!seen[$0]++'
  fi
  exit 0
fi
flags=(-O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -I. -DGLA_HAVE_CUDA=1 -Xcompiler -Wall)
kernels=(kernels/cuda/gla_decode.cu kernels/cuda/gla_prefill_recurrent.cu kernels/cuda/gla_prefill_chunk.cu
         kernels/cuda/gla_backward_chunk.cu)
nvcc "${flags[@]}" -Xptxas -v -o build-gpu/gla_backward_bench tests/cuda/gla_backward_bench.cc "${kernels[@]}" \
  2> "$out/ptxas.txt" || { cat "$out/ptxas.txt"; exit 1; }
grep -E "Compiling entry|registers|spill" "$out/ptxas.txt" | grep -B1 -E "registers|spill" | grep -A1 -i "bwd\|chunk" |
  sed 's/ptxas info *: //' | head -n 60
build-gpu/gla_backward_bench | tee "$out/bench.txt"
ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2> /dev/null || true)
[ -n "$ncu_bin" ] || { echo "ncu not found: no per-kernel profile"; exit 0; }
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,lts__t_sectors.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
metrics+=,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__occupancy_limit_shared_mem
metrics+=,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio
metrics+=,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio
metrics+=,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed
for b in ${GLA_PROFILE_B:-8 1}; do
  # One timed call of each kind after the two warm-ups: the last 8 launches of the step are what a
  # training step runs.
  GLA_BENCH_B=$b GLA_BENCH_REPS=1 "$ncu_bin" --clock-control none --csv --metrics "$metrics" \
    build-gpu/gla_backward_bench > "$out/profile_B$b.csv" 2> "$out/profile_B$b.err"
  echo "== B=$b: per kernel (last launch of each name), ms and counters"
  python3 - "$out/profile_B$b.csv" << 'EOF'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head, rows = rows[0], rows[1:]
ki, mi, vi, ii = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value"), head.index("ID")
ui = head.index("Metric Unit")
to_ms = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "second": 1e3, "s": 1e3}
per = collections.OrderedDict()
for r in rows:
    v = r[vi]
    if r[mi] == "gpu__time_duration.sum":
        v = float(v.replace(",", "")) * to_ms.get(r[ui], float("nan"))
    per.setdefault((int(r[ii]), r[ki].split("(")[0].split("<")[0]), {})[r[mi]] = v
last = collections.OrderedDict()
for (i, name), m in per.items():
    last[name] = m
short = lambda s: s.replace("smsp__average_warps_issue_stalled_", "stall_").replace("_per_issue_active.ratio", "")
for name, m in last.items():
    t = m["gpu__time_duration.sum"]
    print(f"{name:28s} {t:7.3f} ms  " + "  ".join(f"{short(k).split('.')[0]}={v}" for k, v in m.items() if k != "gpu__time_duration.sum"))
EOF
done
# GLA_PROFILE_DETAIL="NAME ..." (parts of kernel names, e.g. GlaBwdKeys): each kernel's warp stalls,
# memory tables and hottest source lines (a -lineinfo build), once, at B = 8.
if [ -n "${GLA_PROFILE_DETAIL:-}" ]; then
  nvcc "${flags[@]}" -lineinfo -o build-gpu/gla_backward_bench_lines tests/cuda/gla_backward_bench.cc "${kernels[@]}"
  for k in $GLA_PROFILE_DETAIL; do
    GLA_BENCH_B=8 GLA_BENCH_REPS=1 "$ncu_bin" --clock-control none -k "regex:$k" -s 2 -c 1 --section WarpStateStats \
      --section SourceCounters --section MemoryWorkloadAnalysis_Tables --section Occupancy --print-details all \
      build-gpu/gla_backward_bench_lines > "$out/detail_$k.txt" 2>&1
    echo "== $k"
    grep -v "^==PROF==" "$out/detail_$k.txt" | grep -v "^ *-* *$" | head -n 120
  done
fi
