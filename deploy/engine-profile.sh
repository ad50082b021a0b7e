#!/usr/bin/env bash
# Where an engine step's time goes, per operation (issue 19: "where a target is missed, the profile
# that shows it"). On the GPU machine, after deploy/gpu-bundle.sh here, carry ["gpu-pack"]:
#   bash deploy/engine-profile.sh [1.3B 340M]      results in $OUT (profile_<preset>.txt, the CSVs)
#   GLA_PROFILE_WEIGHTS=fp8|int8 bash deploy/engine-profile.sh ...   the same with one-byte weights
# For each preset: gla-engine-bench as usual (wall times, floors from the ceilings it measures),
# then the same benchmark under Nsight Compute (every kernel timed alone, clocks and caches left
# as they are) cut into steps at their embedding gathers, and the prefill T=4096, TTFT(512) and
# decode B = 1 / 8 / 32 / 128 steps broken down by operation (deploy/engine_profile_report.py).
# A kernel timed alone has no launch gap and no overlap with its neighbours: the sum of a step's
# kernels against the step's wall time says what the gaps cost.
set -uo pipefail
cd "$(dirname "$0")/.."
weights=${GLA_PROFILE_WEIGHTS:-native}
case "$weights" in native | fp8 | int8) ;; *) echo "GLA_PROFILE_WEIGHTS must be native, fp8 or int8, not '$weights'" >&2; exit 2 ;; esac
out=${OUT:-/tmp/gla-engine-profile}
mkdir -p "$out"
[ -x gpu-bundle/run ] || tar -xJf gpu-pack/gpu-bundle.tar.xz
export PATH=$PWD/gpu-bundle/bin:$PATH
export LD_LIBRARY_PATH=$PWD/gpu-bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export GLA_COMMIT=${GLA_COMMIT:-$(cat gpu-pack/COMMIT 2> /dev/null || echo unknown)} GLA_BENCH_OUT=$out
ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2> /dev/null || true)
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } | tee "$out/device.txt"
metrics=gpu__time_duration.sum,launch__grid_size
for preset in ${*:-1.3B 340M}; do
  [ -d /tmp/gla-$preset ] || gpu-bundle/run gla-random-model --preset "$preset" --out /tmp/gla-$preset --dtype bf16 ||
    { echo "random $preset model: FAILED"; continue; }
  # The wall-time run tunes the bf16 GEMMs and keeps its choices in a cache file; the Nsight runs read
  # them from it, so they run the same algorithms and profile no tuning launches (tuning under Nsight,
  # every timing launch replayed, took past 300 s a model on 2026-12-07 and the runs were cut).
  rm -f "/tmp/gla-profile-gemms-$preset.cache"
  bench=(gpu-bundle/run gla-engine-bench --model /tmp/gla-$preset --name gla-$preset --weights "$weights"
         --gemm_tuning_cache "/tmp/gla-profile-gemms-$preset.cache")
  "${bench[@]}" --batches 1,8,32,128 > "$out/bench_$preset.txt" 2>&1
  grep -E '^(#|prefill|TTFT|decode)' "$out/bench_$preset.txt"
  [ -n "$ncu_bin" ] || { echo "ncu not found: no per-kernel profile"; continue; }
  # Steps: 0-3 prefill 4096, 4-7 TTFT 512, 8 the B=1 prompt, 9-12 greedy (12 timed), 13-16 sampled.
  "$ncu_bin" --clock-control none --cache-control none --csv --metrics "$metrics" \
    "${bench[@]}" --prefill_tokens 4096 --prompt 512 --batches 1 --decode_steps 1 > "$out/ncu_prefill_$preset.csv" 2>&1
  # Steps: 0-3 prefill 2048, 4-7 TTFT 16; per B: its prompts (one step), 4 greedy (the 4th timed),
  # 4 sampled: B=8 at 8-16, B=32 at 17-25, B=128 at 26-34.
  "$ncu_bin" --clock-control none --cache-control none --csv --metrics "$metrics" \
    "${bench[@]}" --prefill_tokens 2048 --prompt 16 --batches 8,32,128 --decode_steps 1 > "$out/ncu_decode_$preset.csv" 2>&1
  {
    python3 deploy/engine_profile_report.py "$out/ncu_prefill_$preset.csv" "$preset" prefill:4096=3 ttft:512=7 decode_B1:1=12
    python3 deploy/engine_profile_report.py "$out/ncu_decode_$preset.csv" "$preset" decode_B8:8=12 decode_B32:32=21 \
      decode_B128:128=30
  } > "$out/profile_$preset.txt" 2>&1
  cat "$out/profile_$preset.txt"
done
if tar -C "$out" -czf /tmp/gla-profile.tgz . 2> /dev/null; then
  find "$out" -mindepth 1 -maxdepth 1 ! -name 'profile_*.txt' -exec rm -rf {} +
  mv /tmp/gla-profile.tgz "$out/results.tgz"
fi
