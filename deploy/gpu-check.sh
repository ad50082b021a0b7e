#!/usr/bin/env bash
# Builds, checks and times the CUDA paths in one call on the GPU machine (the device tool):
#   deploy/gpu-bundle.sh                       here first (engine/server binaries: needs gRPC)
#   bash deploy/gpu-check.sh [kernels|engine|sessions|durability|yields|ab|bench|weights|medium|gemms|rows|projections|batched|barriers|exchanges|startup|served|http|n|sdk|structured|store|devices]  there, carry ["gpu-pack"]; results in $OUT
#                                              (sessions: only the session tests and measurements)
#                                              (GLA_GPU_BENCH=0: the engine part without its benchmarks;
#                                               GLA_GPU_SESSION_BENCH=0: without the session measurements)
#   bash deploy/gpu-check.sh fla               alone, carry ["gpu-fla"]: fla's chunk_gla timed there
#   bash deploy/gpu-check.sh table             issue 19's one-run table on the defaults (both models)
#   bash deploy/gpu-check.sh prep_gate         the prefill's gates made in the chunkwise prep: tests, engine A/B
#                                              (GLA_AB_TESTS=0: the A/B alone)
#   bash deploy/gpu-check.sh plans             the chunkwise kernel's plans swept (segments, prep clusters)
#   bash deploy/gpu-check.sh fla_forward       carry ["gpu-pack", "gpu-fla"]: fla's chunk_gla forward
#                                              against ours in the same call (issue 19's 3x target)
#   bash deploy/gpu-profile.sh                 per-kernel Nsight Compute profile of the GLA fwd + bwd
# Part 1 (kernels): that machine has CUDA, g++ and GoogleTest but no gRPC/Abseil/SentencePiece, so
# the kernels, their CPU references, tests and benchmarks are built there with nvcc directly.
# Part 2 (engine, when gpu-bundle/ was carried): the CUDA engine tests (full model vs the
# reference, CUDA vs CPU, greedy text), the serving end-to-end suites against glad on the CUDA
# backend, the end-to-end benchmark on random-initialised gla-340M / gla-1.3B shapes, LoRA training
# throughput on the GPU and serving while a job trains there.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gla-gpu}
parts=${1:-all}
# The developer knobs below, checked before anything runs: a typo would otherwise cost a device
# call whose runs all fail (or silently take a default).
knob_error() { echo "gpu-check.sh: $1" >&2; exit 2; }
case $parts in
  all | kernels | engine | sessions | durability | yields | ab | bench | weights | medium | gemms | rows | projections | batched | barriers | exchanges | startup | served | \
    table | prep_gate | plans | http | n | sdk | structured | \
    store | devices | fla | fla_forward) ;;
  *) knob_error "unknown part '$parts' (see the usage at the top of this script)" ;;
esac
for v in GLA_AB_PRESETS GLA_SERVED_PRESETS GLA_TABLE_PRESETS GLA_PREP_GATE_PRESETS GLA_WEIGHTS_PRESETS GLA_MEDIUM_PRESETS GLA_GEMMS_PRESETS GLA_STARTUP_PRESETS GLA_ROWS_PRESETS GLA_BATCHED_PRESETS GLA_EXCHANGE_PRESETS; do
  for preset in ${!v-}; do
    case $preset in 340M | 1.3B) ;; *) knob_error "$v: unknown preset '$preset' (340M, 1.3B)" ;; esac
  done
done
[[ ${GLA_FLA_RUNS:-2} =~ ^[1-4]$ ]] || knob_error "GLA_FLA_RUNS must be 1-4, not '${GLA_FLA_RUNS}'"
[[ ${GLA_FLA_RUN_TIMEOUT:-260} =~ ^[1-9][0-9]{0,2}$ ]] ||
  knob_error "GLA_FLA_RUN_TIMEOUT must be seconds (1-999), not '${GLA_FLA_RUN_TIMEOUT}'"
[[ ${GLA_TABLE_ROUNDS:-2} =~ ^[1-4]$ ]] || knob_error "GLA_TABLE_ROUNDS must be 1-4, not '${GLA_TABLE_ROUNDS}'"
[[ ${GLA_AB_TESTS:-1} =~ ^[01]$ ]] || knob_error "GLA_AB_TESTS must be 0 or 1, not '${GLA_AB_TESTS}'"
[[ ${GLA_AB_BATCHES:-1} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
  knob_error "GLA_AB_BATCHES must be batch sizes separated by commas (1,8,32), not '${GLA_AB_BATCHES}'"
[[ ${GLA_MEDIUM_BATCHES:-1} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
  knob_error "GLA_MEDIUM_BATCHES must be batch sizes separated by commas (32,128), not '${GLA_MEDIUM_BATCHES}'"
[[ ${GLA_GEMMS_BATCHES:-1} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
  knob_error "GLA_GEMMS_BATCHES must be batch sizes separated by commas (32,128), not '${GLA_GEMMS_BATCHES}'"
for w in ${GLA_ROWS_WEIGHTS-} ${GLA_BATCHED_WEIGHTS-}; do
  case $w in native | fp8 | int8) ;; *) knob_error "GLA_ROWS_WEIGHTS / GLA_BATCHED_WEIGHTS: unknown format '$w'" ;; esac
done
[[ ${GLA_BATCHED_BATCHES:-1} =~ ^[1-8](,[1-8])*$ ]] ||
  knob_error "GLA_BATCHED_BATCHES must be batch sizes 1-8 separated by commas (2,4,8), not '${GLA_BATCHED_BATCHES}'"
[[ ${GLA_STARTUP_SLOTS:-1} =~ ^[1-9][0-9]*$ ]] || knob_error "GLA_STARTUP_SLOTS must be a slot count, not '${GLA_STARTUP_SLOTS}'"
[[ ${GLA_GEMMS_TESTS:-1} =~ ^[01]$ ]] || knob_error "GLA_GEMMS_TESTS must be 0 or 1, not '${GLA_GEMMS_TESTS}'"
[[ ${GLA_GEMMS_ROUNDS:-2} =~ ^[1-9]$ ]] || knob_error "GLA_GEMMS_ROUNDS must be 1-9, not '${GLA_GEMMS_ROUNDS}'"
[[ ${GLA_ENGINE_TESTS_TIMEOUT:-480} =~ ^[1-9][0-9]*$ ]] ||
  knob_error "GLA_ENGINE_TESTS_TIMEOUT must be seconds, not '${GLA_ENGINE_TESTS_TIMEOUT}'"
[[ ${GLA_AB_EXTRA_ARGS-} =~ ^[-a-z0-9_.\ ]*$ ]] || knob_error "GLA_AB_EXTRA_ARGS must be gla-engine-bench flags and values, not '${GLA_AB_EXTRA_ARGS}'"
[[ ${GLA_BATCHED_IN_FLIGHT:-1} =~ ^[0-9]+(,[0-9]+)*$ ]] ||
  knob_error "GLA_BATCHED_IN_FLIGHT must be tile counts separated by commas (0,2,3), not '${GLA_BATCHED_IN_FLIGHT}'"
[[ ${GLA_BATCHED_TILE_BYTES:-0} =~ ^[0-9]+(,[0-9]+)*$ ]] ||
  knob_error "GLA_BATCHED_TILE_BYTES must be byte caps separated by commas (0,16384), not '${GLA_BATCHED_TILE_BYTES}'"
[[ ${GLA_BARRIER_EXCHANGE:-2048} =~ ^[0-9]+$ ]] ||
  knob_error "GLA_BARRIER_EXCHANGE must be a float count (2048), not '${GLA_BARRIER_EXCHANGE}'"
[[ ${GLA_BATCHED_GRIDS:-0} =~ ^[0-9]+(,[0-9]+)*$ ]] ||
  knob_error "GLA_BATCHED_GRIDS must be block counts separated by commas (0,66), not '${GLA_BATCHED_GRIDS}'"
[[ ${GLA_BATCHED_ROUNDS:-1} =~ ^[1-9]$ ]] || knob_error "GLA_BATCHED_ROUNDS must be 1-9, not '${GLA_BATCHED_ROUNDS}'"
[[ ${GLA_EXCHANGE_ROUNDS:-2} =~ ^[1-9]$ ]] || knob_error "GLA_EXCHANGE_ROUNDS must be 1-9, not '${GLA_EXCHANGE_ROUNDS}'"
[[ ${GLA_PREP_GATE_ROUNDS:-2} =~ ^[1-9]$ ]] || knob_error "GLA_PREP_GATE_ROUNDS must be 1-9, not '${GLA_PREP_GATE_ROUNDS}'"
[[ ${GLA_EXCHANGE_LEVELS:-0} =~ ^[0-3](,[0-3])*$ ]] ||
  knob_error "GLA_EXCHANGE_LEVELS must be levels 0-3 separated by commas (0,2,3), not '${GLA_EXCHANGE_LEVELS}'"
[[ ${GLA_EXCHANGE_BATCHES:-1} =~ ^[1-8](,[1-8])*$ ]] ||
  knob_error "GLA_EXCHANGE_BATCHES must be batch sizes 1-8 separated by commas (1,2,4), not '${GLA_EXCHANGE_BATCHES}'"
[[ ${GLA_MEDIUM_ROWS:-256} =~ ^[1-9][0-9]*$ ]] || knob_error "GLA_MEDIUM_ROWS must be a row count, not '${GLA_MEDIUM_ROWS}'"
for w in ${GLA_MEDIUM_WEIGHTS-}; do
  case $w in native | fp8 | int8) ;; *) knob_error "GLA_MEDIUM_WEIGHTS: unknown format '$w' (native, fp8, int8)" ;; esac
done
[[ ${GLA_MEDIUM_ENGINE_TESTS:-1} =~ ^[01]$ ]] || knob_error "GLA_MEDIUM_ENGINE_TESTS must be 0 or 1"
[[ ${GLA_WEIGHTS_TESTS:-1} =~ ^[01]$ ]] || knob_error "GLA_WEIGHTS_TESTS must be 0 or 1, not '${GLA_WEIGHTS_TESTS}'"
[[ ${GLA_WEIGHTS_ROUNDS:-1} =~ ^[1-9][0-9]*$ ]] ||
  knob_error "GLA_WEIGHTS_ROUNDS must be a positive count, not '${GLA_WEIGHTS_ROUNDS}'"
mkdir -p "$out" build-gpu
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; nvcc --version | tail -n 2; } | tee "$out/device.txt"
# What every benchmark stamps on its table and JSON file (tests/cuda/bench_report.h): the commit
# deploy/gpu-bundle.sh recorded in gpu-pack/COMMIT (the tree copied here is the one it bundled), and
# the folder its JSON results go to.
GLA_COMMIT=${GLA_COMMIT:-$(cat gpu-pack/COMMIT 2> /dev/null || git rev-parse --short=12 HEAD 2> /dev/null || echo unknown)}
export GLA_COMMIT GLA_BENCH_OUT=$out
failures=0
checks_run=" "
note() { echo "== $*" | tee -a "$out/summary.txt"; }
# GLA_CHECKS="NAME ...": only the checks of those names run (the others say they were skipped), so a
# short device call can rerun part of a part (e.g. the engine part's suites a change touches).
check() {  # check NAME CMD...: runs, logs to $out/NAME.txt, records the exit status
  local name=$1; shift
  if [ -n "${GLA_CHECKS:-}" ] && [[ " $GLA_CHECKS " != *" $name "* ]]; then
    note "$name: skipped (not in GLA_CHECKS)"
    return 0
  fi
  checks_run+=" $name "
  "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  tail -n 30 "$out/$name.txt"
  note "$name: exit $rc"
  [ $rc -eq 0 ] || failures=$((failures + 1))
}
# use_bundle: the bundle's binaries, libraries and reference data for what follows (the engine parts).
use_bundle() {
  export GLA_REFERENCE_DIR=$PWD/gpu-bundle/reference PATH=$PWD/gpu-bundle/bin:$PATH
  export LD_LIBRARY_PATH=$PWD/gpu-bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}
# engine_rows NAME LABEL CMD...: check NAME CMD..., then its table rows (prefill, TTFT, decode)
# into the summary, each prefixed with LABEL (the A/B parts' runs).
engine_rows() {
  local name=$1 label=$2; shift 2
  check "$name" "$@"
  grep -E "^(prefill|TTFT|decode)" "$out/$name.txt" | sed "s/^/$label: /" | tee -a "$out/summary.txt"
}
# random_model PRESET: /tmp/gla-PRESET (random bf16 weights of that shape) unless it is there;
# says so and counts a failure when it cannot be made.
random_model() {
  [ -d "/tmp/gla-$1" ] && return 0
  gpu-bundle/run gla-random-model --preset "$1" --out "/tmp/gla-$1" --dtype bf16 > /dev/null && return 0
  note "random $1 model: FAILED"; failures=$((failures + 1)); return 1
}
# engine_ab PART FLAG "VALUES" "PRESETS" "WEIGHTS" ROUNDS BATCHES: gla-engine-bench on each random
# PRESET model with each of WEIGHTS, ROUNDS rounds of --FLAG at each of VALUES in turn
# (alternating, so drift shows between rounds), at BATCHES (prefill and TTFT too); each run's file
# is PART_ab_PRESET_WEIGHTS_VALUE_ROUND, its rows go to the summary (the A/B parts' shared loop).
# GLA_AB_EXTRA_ARGS: more gla-engine-bench flags for every run of an A/B (e.g. "--persistent_batch 1"
# so that batch 2-3 steps take the per-operation graph whose kernels the A/B is about).
engine_ab() {
  local part=$1 flag=$2 values=$3 presets=$4 weights_list=$5 rounds=$6 batches=$7 preset weights round v
  for preset in $presets; do
    random_model "$preset" || continue
    for weights in $weights_list; do
      for round in $(seq "$rounds"); do
        for v in $values; do
          # shellcheck disable=SC2086  # GLA_AB_EXTRA_ARGS splits into flags
          engine_rows "${part}_ab_${preset}_${weights}_${v}_$round" "$preset $weights $flag=$v round $round" \
            timeout 150 gpu-bundle/run gla-engine-bench --model "/tmp/gla-$preset" --name "gla-$preset" \
            --weights "$weights" "--$flag" "$v" --batches "$batches" ${GLA_AB_EXTRA_ARGS-}
        done
      done
    done
  done
}


# Issue 8's measurements (docs/performance.md) on a random-initialised gla-340M: the fifth turn of a
# conversation with and without a session (prefix cache off, so resending gets no help from it),
# and a shared 1,000-token system prompt with and without the prefix cache.
session_measurements() {
  [ -d /tmp/gla-340M ] || gpu-bundle/run gla-random-model --preset 340M --out /tmp/gla-340M --dtype bf16 ||
    { note "random 340M model: FAILED"; failures=$((failures + 1)); return; }
  for cache in 0 1024; do
    gpu-bundle/run glad --model /tmp/gla-340M --backend cuda --listen 127.0.0.1:50092 --prefix_cache_mb $cache \
      --max_prompt_tokens 16384 > "$out/glad_340M_cache$cache.txt" 2>&1 &
    local glad_pid=$!
    for _ in $(seq 1 120); do grep -q "listening" "$out/glad_340M_cache$cache.txt" && break; sleep 0.5; done
    [ $cache = 0 ] && check conversation_340M gpu-bundle/run gla-loadgen conversation --addr 127.0.0.1:50092 \
      --conversations 1,16 --turns 5 --turn-len 256 --max-new-tokens 64
    check "system_prompt_340M_cache$cache" gpu-bundle/run gla-loadgen --addr 127.0.0.1:50092 --concurrency 1,16 \
      --requests 128 --system-prompt-len 1000 --prompt-len 32 --max-new-tokens 32
    gpu-bundle/run gla-cli info --addr 127.0.0.1:50092 | grep -A7 -E "^(prefix_cache|sessions) " | tee -a "$out/summary.txt"
    kill "$glad_pid"; wait "$glad_pid" 2> /dev/null
  done
}

# fla's chunk_gla on this same GPU (docs/performance.md), from an fla checkout carried as gpu-fla/
# (not part of this repository). A part of its own, run alone: on a fresh machine its first call
# autotunes Triton kernels for about ten minutes (a whole device call; 2026-11-28 the warm-up ran
# past the call's limit inside `kernels`), so the warm-up is cut at 540 s and the timed run only
# follows a warm-up that finished.
if [ "$parts" = fla ]; then
  [ -d gpu-fla/fla ] || { note "fla_anchor: no gpu-fla/ carried"; exit 1; }
  if PYTHONPATH=gpu-fla timeout 540 python3 -u tests/cuda/fla_gla_anchor.py > "$out/fla_warmup.txt" 2>&1; then
    check fla_anchor env PYTHONPATH=gpu-fla python3 -u tests/cuda/fla_gla_anchor.py
  else
    note "fla_anchor: the warm-up (Triton autotuning) did not finish in 540 s"; failures=$((failures + 1))
  fi
fi

# Issue 19's forward target (ours >= 3x fla's chunk_gla forward at the four anchor shapes and both
# head shapes, against the fastest of several fla runs, in the same call): fla timed GLA_FLA_RUNS
# times (default 2), each process autotuning afresh (~2 min; cut at GLA_FLA_RUN_TIMEOUT s, default 260),
# then our chunkwise kernel
# (gla_prefill_bench from the bundle), then one table (tests/cuda/fla_forward_anchor.py compare).
if [ "$parts" = fla_forward ]; then
  [ -d gpu-fla/fla ] || { note "fla_forward: no gpu-fla/ carried"; exit 1; }
  [ -x gpu-bundle/run ] || { note "fla_forward: no gpu-bundle/ (carry gpu-pack)"; exit 1; }
  use_bundle
  fla_files=()
  for run in $(seq "${GLA_FLA_RUNS:-2}"); do
    check "fla_forward_$run" env PYTHONPATH=gpu-fla timeout "${GLA_FLA_RUN_TIMEOUT:-260}" \
      python3 -u tests/cuda/fla_forward_anchor.py time "$out/fla_forward_$run.json"
    [ -s "$out/fla_forward_$run.json" ] && fla_files+=("$out/fla_forward_$run.json")
  done
  check fla_forward_ours timeout 120 gpu-bundle/run gla_prefill_bench chunk
  if [ "${#fla_files[@]}" -gt 0 ] && [ -s "$out/gla-prefill.json" ]; then
    check fla_forward_compare python3 tests/cuda/fla_forward_anchor.py compare "$out/gla-prefill.json" "${fla_files[@]}"
    cat "$out/fla_forward_compare.txt" >> "$out/summary.txt"  # the check printed it; the summary prints it at the end
  else
    note "fla_forward: nothing to compare (fla runs: ${#fla_files[@]}; ours: $([ -s "$out/gla-prefill.json" ] && echo yes || echo no))"
    failures=$((failures + 1))
  fi
fi

if [ "$parts" = all ] || [ "$parts" = kernels ]; then
  nvcc_flags=(-O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -I. -DGLA_HAVE_CUDA=1 -Xcompiler -Wall)
  kernels=(kernels/cuda/gla_decode.cu kernels/cuda/persistent_decode.cu kernels/cuda/persistent_decode_batched.cu kernels/cuda/gla_prefill_recurrent.cu kernels/cuda/gla_prefill_chunk.cu
           kernels/cuda/gla_backward_chunk.cu)
  layers=(kernels/cuda/norm.cu kernels/cuda/activations.cu kernels/cuda/conv.cu kernels/cuda/linear.cc kernels/cuda/linear_small_m.cu kernels/cuda/linear_small_m_mma.cu kernels/cuda/linear_medium_m.cu
          kernels/cuda/quantize_fp8.cu kernels/cuda/linear_fp8_gemm.cc kernels/cuda/linear_bf16_tuned.cc kernels/cuda/dequantize_int8.cu
          kernels/cuda/sampling.cu kernels/cuda/norm_backward.cu kernels/cuda/activations_backward.cu
          kernels/cuda/conv_backward.cu kernels/cuda/optimizer.cu kernels/cuda/dropout.cu kernels/cuda/cross_entropy.cu)
  for k in "${kernels[@]}" "${layers[@]}"; do
    case $k in *.cu) nvcc "${nvcc_flags[@]}" -Xptxas -v -c "$k" -o build-gpu/kernel.o 2>> "$out/ptxas.txt" ;; esac
  done
  grep -E "registers|spill" "$out/ptxas.txt" | sort | uniq -c | sort -rn | head -n 20 || true
  if nvcc "${nvcc_flags[@]}" -o build-gpu/gla_kernels_cuda_test tests/cuda/gla_decode_cuda_test.cc \
       tests/cuda/gla_forward_cuda_test.cc tests/cuda/layers_cuda_test.cc tests/cuda/sampling_cuda_test.cc \
       tests/cuda/gla_backward_chunk_cuda_test.cc tests/cuda/training_ops_cuda_test.cc tests/cuda/state_bf16_cuda_test.cc \
       tests/cuda/linear_fp8_cuda_test.cc tests/cuda/linear_bf16_tuned_cuda_test.cc "${kernels[@]}" "${layers[@]}" kernels/cpu/gla_recurrent.cc kernels/cpu/gla_backward.cc kernels/cpu/norm.cc kernels/cpu/activations.cc \
       kernels/cpu/conv.cc kernels/cpu/norm_backward.cc kernels/cpu/activations_backward.cc kernels/cpu/conv_backward.cc \
       kernels/cpu/optimizer.cc kernels/cpu/dropout.cc engine/sampler.cc models/dtype.cc -lcublas -lcublasLt -lgtest -lgtest_main -lpthread 2> "$out/build.txt"; then
    check kernel_tests build-gpu/gla_kernels_cuda_test
  else
    cat "$out/build.txt"; note "kernel tests: BUILD FAILED"; failures=$((failures + 1))
  fi
  ceilings=(tests/cuda/device_ceilings.cc -lcublas)  # each benchmark measures the device's ceilings itself
  nvcc "${nvcc_flags[@]}" -o build-gpu/gla_decode_bench tests/cuda/gla_decode_bench.cc "${kernels[@]}" "${ceilings[@]}" &&
    check decode_bench build-gpu/gla_decode_bench
  nvcc "${nvcc_flags[@]}" -o build-gpu/gla_prefill_bench tests/cuda/gla_prefill_bench.cc "${kernels[@]}" "${ceilings[@]}" &&
    check prefill_bench build-gpu/gla_prefill_bench
  nvcc "${nvcc_flags[@]}" -o build-gpu/gla_backward_bench tests/cuda/gla_backward_bench.cc "${kernels[@]}" "${ceilings[@]}" &&
    check backward_bench build-gpu/gla_backward_bench
  nvcc "${nvcc_flags[@]}" -o build-gpu/sampling_bench tests/cuda/sampling_bench.cc kernels/cuda/sampling.cu engine/sampler.cc \
    "${ceilings[@]}" &&
    check sampling_bench build-gpu/sampling_bench
fi

[ -f gpu-pack/gpu-bundle.tar.xz ] && tar -xJf gpu-pack/gpu-bundle.tar.xz
# Issue 17: what --session_durability costs a turn on the GPU (a device-to-host copy of the
# state, a file write, fsync, rename, directory fsync before the turn's last message), at the
# gla-340M and gla-1.3B state sizes: the client's wall time of a session turn (8 prompt ids, 16
# new tokens), median of 7 turns after the first, under each policy.
durability_measurements() {
  local ids=17,23,29,31,37,41,43,47
  note "| model | policy | turn wall ms (median of 7) | all turns ms |"
  note "| --- | --- | --- | --- |"
  for preset in 340M 1.3B; do
    random_model $preset || continue
    for policy in shutdown interval always; do
      rm -rf /tmp/gla-sd && mkdir -p /tmp/gla-sd
      gpu-bundle/run glad --model /tmp/gla-$preset --backend cuda --listen 127.0.0.1:50093 --session_dir /tmp/gla-sd \
        --session_durability $policy > "$out/glad_durability_${preset}_$policy.txt" 2>&1 &
      local glad_pid=$!
      for _ in $(seq 1 240); do grep -q "listening" "$out/glad_durability_${preset}_$policy.txt" && break; sleep 0.5; done
      gpu-bundle/run gla-cli session-create --addr 127.0.0.1:50093 --id d > /dev/null
      local times=()
      for turn in $(seq 1 8); do
        local t0=$(date +%s%N)
        gpu-bundle/run gla-cli generate --addr 127.0.0.1:50093 --session d --prompt-ids $ids --max-new-tokens 16 \
          > /dev/null || { note "durability turn $preset $policy: FAILED"; failures=$((failures + 1)); }
        times+=($(( ($(date +%s%N) - t0) / 1000000 )))
      done
      local median=$(printf '%s\n' "${times[@]:1}" | sort -n | sed -n 4p)
      note "| gla-$preset | $policy | $median | ${times[*]} |"
      ls -la /tmp/gla-sd >> "$out/glad_durability_${preset}_$policy.txt"
      kill "$glad_pid"; wait "$glad_pid" 2> /dev/null
    done
  done
}

# Issue 17: how long serving can wait for a GPU training step. A step yields between its layers (and
# lm_head blocks); the longest stretch between two yield points bounds a waiting serving step's
# wait. Measured at job sizes up to the largest the device holds (the next size up must be refused
# by name), then serving's inter-token latency while the largest gla-340M job trains beside it.
yield_measurements() {
  check train_tests gpu-bundle/run cuda_train_test
  note "| model | batch x seq | s/step | yield points per step | longest stretch ms |"
  note "| --- | --- | --- | --- | --- |"
  for preset in 340M 1.3B; do
    random_model $preset || continue
    local shapes="8x1024 24x2048 32x2048"
    [ $preset = 1.3B ] && shapes="4x2048 12x2048 16x2048"
    for shape in $shapes; do
      local b=${shape%x*} t=${shape#*x} f="$out/yields_${preset}_$shape.txt"
      gpu-bundle/run gla-finetune-bench --model /tmp/gla-$preset --device cuda --batch $b --seq-len $t --steps 3 > "$f" 2>&1
      if grep -q "GPU memory" "$f"; then
        note "| gla-$preset | $shape | refused: $(grep -o 'needs about [0-9]* MiB.*free' "$f") | | |"
      else
        local sps=$(grep '^| NVIDIA' "$f" | awk -F'|' '{print $5}')
        local y=$(grep -o '^yield points: [0-9.]*' "$f" | awk '{print $3}')
        local g=$(grep -o 'longest stretch without one [0-9.]* ms' "$f" | awk '{print $5}')
        note "| gla-$preset | $shape | $sps | $y | $g |"
        [ -n "$g" ] || { note "yields $preset $shape: FAILED"; cat "$f"; failures=$((failures + 1)); }
      fi
    done
  done
  rm -rf /tmp/gla-adapters && mkdir -p /tmp/gla-adapters
  gpu-bundle/run glad --model /tmp/gla-340M --backend cuda --listen 127.0.0.1:50094 \
    --adapter_dir /tmp/gla-adapters > "$out/glad_yields_340M.txt" 2>&1 &
  local glad_pid=$!
  for _ in $(seq 1 120); do grep -q "listening" "$out/glad_yields_340M.txt" && break; sleep 0.5; done
  check serving_with_largest_job_340M gpu-bundle/run gla-loadgen --addr 127.0.0.1:50094 --concurrency 4 \
    --requests 512 --prompt-len 128 --max-new-tokens 64 --finetune lora --finetune-batch 24 --finetune-seq-len 2048
  grep "^| 4 " "$out/serving_with_largest_job_340M.txt" | tee -a "$out/summary.txt"
  kill "$glad_pid"; wait "$glad_pid" 2> /dev/null
}

# A/B of the end-to-end benchmark: gla-engine-bench-before (an older build, carried through
# GLA_BUNDLE_EXTRA) and this build's, alternating, twice each, on both shapes; plus the kernel,
# engine and training tests. For changes that must not move the numbers (issue 18).
if [ "$parts" = ab ] && [ -x gpu-bundle/run ]; then
  use_bundle
  if [ "${GLA_AB_TESTS:-1}" = 1 ]; then  # GLA_AB_TESTS=0: the timings alone (the tests ran in this call already)
    check kernel_tests gpu-bundle/run gla_kernels_cuda_test
    check engine_tests gpu-bundle/run cuda_engine_test
    check train_tests gpu-bundle/run cuda_train_test
    check persistent_decode_bench gpu-bundle/run persistent_decode_bench
  fi
  for preset in ${GLA_AB_PRESETS:-340M 1.3B}; do
    random_model $preset || continue
    # GLA_AB_VARIANTS: "label=binary [args]" entries separated by ';' (default: the bundled
    # gla-engine-bench-before against this build), each run twice, alternating.
    IFS=';' read -ra variants <<< "${GLA_AB_VARIANTS:-before=gla-engine-bench-before;after=gla-engine-bench}"
    for round in 1 2; do
      for v in "${variants[@]}"; do
        which=${v%%=*}
        read -ra cmd <<< "${v#*=}"
        engine_rows "ab_${preset}_${which}_$round" "$preset $which $round" gpu-bundle/run "${cmd[@]}" \
          --model /tmp/gla-$preset --name gla-$preset --batches "${GLA_AB_BATCHES:-1,8,32,128}"
      done
    done
  done
fi
# Issue 19's measurements from the bundle alone (no nvcc build there): the kernel tests, the
# kernel benchmarks and the end-to-end benchmark at B = 1, 8, 16, 32, 128 on both shapes (and at
# B = 32, 128 with bf16 states, at B = 1, 8, 32, 128 with FP8 and INT8 weights), each measuring the device's
# ceilings in its own run and leaving a JSON file (results.tgz).
if [ "$parts" = bench ] && [ -x gpu-bundle/run ]; then
  use_bundle
  check kernel_tests gpu-bundle/run gla_kernels_cuda_test
  check engine_tests gpu-bundle/run cuda_engine_test
  # An older build's benchmark carried through GLA_BUNDLE_EXTRA runs first (A/B in one call).
  [ -x gpu-bundle/bin/linear_small_m_bench-before ] &&
    check linear_small_m_bench_before gpu-bundle/run linear_small_m_bench-before
  check linear_small_m_bench gpu-bundle/run linear_small_m_bench
  check linear_medium_m_bench gpu-bundle/run linear_medium_m_bench
  check persistent_decode_bench gpu-bundle/run persistent_decode_bench
  if [ "${GLA_BENCH_KERNELS:-1}" = 1 ]; then  # GLA_BENCH_KERNELS=0: without the GLA kernels' benchmarks
    check decode_bench gpu-bundle/run gla_decode_bench
    check prefill_bench gpu-bundle/run gla_prefill_bench chunk
    check backward_bench gpu-bundle/run gla_backward_bench
  fi
  for preset in 340M 1.3B; do
    gpu-bundle/run gla-random-model --preset $preset --out /tmp/gla-$preset --dtype bf16 > /dev/null ||
      { note "random $preset model: FAILED"; failures=$((failures + 1)); continue; }
    check "engine_bench_$preset" gpu-bundle/run gla-engine-bench --model /tmp/gla-$preset --name gla-$preset \
      --batches "${GLA_BENCH_BATCHES:-1,8,16,32,128}"
    grep -E "^(#|prefill|TTFT|decode)" "$out/engine_bench_$preset.txt" | tee -a "$out/summary.txt"
    # Issue 23: the same with bf16 states (half the state bytes: the floors move), where they matter.
    check "engine_bench_${preset}_bf16_states" gpu-bundle/run gla-engine-bench --model /tmp/gla-$preset \
      --name gla-$preset --state_dtype bf16 --batches "${GLA_BENCH_BF16_BATCHES:-32,128}" --prefill_tokens 512
    grep -E "^decode" "$out/engine_bench_${preset}_bf16_states.txt" | sed "s/^/$preset bf16 states: /" |
      tee -a "$out/summary.txt"
    # Issue 23: FP8 and INT8 weights (a byte per projection weight: the decode floors move).
    for weights in fp8 int8; do
      check "engine_bench_${preset}_${weights}_weights" gpu-bundle/run gla-engine-bench --model /tmp/gla-$preset \
        --name gla-$preset --weights $weights --batches "${GLA_BENCH_BYTE_WEIGHTS_BATCHES:-1,8,32,128}"
      grep -E "^(prefill|TTFT|decode)" "$out/engine_bench_${preset}_${weights}_weights.txt" |
        sed "s/^/$preset $weights weights: /" | tee -a "$out/summary.txt"
    done
    # Issue 20: n = 8 from one prefill and state copies, against n = 1 and against 8 prefills.
    [ "${GLA_BENCH_N:-1}" = 1 ] && check "n_bench_$preset" gpu-bundle/run gla-n-bench --model /tmp/gla-$preset \
      --name gla-$preset && grep -E "^[0-9]" "$out/n_bench_$preset.txt" | sed "s/^/$preset n: /" | tee -a "$out/summary.txt"
  done
fi
# Issue 19's "served through glad": batch-1 decode through glad and gRPC (gla-loadgen, concurrency 1,
# greedy, 512-token prompts, 256 new tokens each) against the engine's own batch-1 step
# (gla-engine-bench --batches 1) on the same random model, alternating twice in one call; the
# inter-token latency's median against the engine's ms per step.
if [ "$parts" = served ] && [ -x gpu-bundle/run ]; then
  use_bundle
  for preset in ${GLA_SERVED_PRESETS:-340M 1.3B}; do
    random_model $preset || continue
    for round in 1 2; do
      check "served_engine_${preset}_$round" gpu-bundle/run gla-engine-bench --model /tmp/gla-$preset --name gla-$preset \
        --batches 1 --prefill_tokens 0 --decode_steps 256
      grep -E "^decode B=1 greedy" "$out/served_engine_${preset}_$round.txt" | sed "s/^/$preset engine $round: /" |
        tee -a "$out/summary.txt"
      gpu-bundle/run glad --model /tmp/gla-$preset --backend cuda --listen 127.0.0.1:50095 \
        > "$out/glad_served_${preset}_$round.txt" 2>&1 &
      glad_pid=$!
      for _ in $(seq 1 240); do grep -q "listening" "$out/glad_served_${preset}_$round.txt" && break; sleep 0.5; done
      check "served_glad_${preset}_$round" gpu-bundle/run gla-loadgen --addr 127.0.0.1:50095 --concurrency 1 \
        --requests 8 --prompt-len 512 --max-new-tokens 256
      grep -E "^\| 1 \|" "$out/served_glad_${preset}_$round.txt" | sed "s/^/$preset glad $round: /" | tee -a "$out/summary.txt"
      kill "$glad_pid"; wait "$glad_pid" 2> /dev/null
    done
  done
fi
# glad's startup with the GEMM tuning of every step size at load (--gemm_tuning), against without
# (--gemm_tuning=false), and with --gemm_tuning_cache: a first start that tunes and fills the file,
# then a second that restores from it; on GLA_STARTUP_PRESETS (1.3B 340M), --slots GLA_STARTUP_SLOTS
# (64). Each start: seconds to glad's "listening" line, then 32 greedy tokens of one prompt
# (gla-cli), whose ids the two cached starts must give alike (the same algorithms).
startup_run() {  # startup_run NAME GLAD_ARGS...: times one glad start, then one greedy request
  local name=$1; shift
  local log="$out/glad_startup_$name.txt" t0 t1
  t0=$(date +%s%N)
  gpu-bundle/run glad --backend cuda --listen 127.0.0.1:50096 --slots "${GLA_STARTUP_SLOTS:-64}" "$@" > "$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do grep -q "listening" "$log" && break; kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  t1=$(date +%s%N)
  if grep -q "listening" "$log"; then
    note "startup $name: $(( (t1 - t0) / 1000000 )) ms to listening"
    gpu-bundle/run gla-cli generate --addr 127.0.0.1:50096 --prompt-ids 17,23,29,31,37,41,43,47 --max-new-tokens 32 \
      > "$out/startup_tokens_$name.txt" 2> "$out/startup_request_$name.txt" ||
      { note "startup $name: request FAILED"; failures=$((failures + 1)); }
  else
    note "startup $name: FAILED (no listening line)"; failures=$((failures + 1))
  fi
  kill "$pid" 2> /dev/null; wait "$pid" 2> /dev/null
}
if [ "$parts" = startup ] && [ -x gpu-bundle/run ]; then
  use_bundle
  for preset in ${GLA_STARTUP_PRESETS:-1.3B 340M}; do
    random_model "$preset" || continue
    rm -f "/tmp/gemms-$preset.cache"
    startup_run "${preset}_untuned" --model "/tmp/gla-$preset" --gemm_tuning=false
    startup_run "${preset}_tuned" --model "/tmp/gla-$preset"
    startup_run "${preset}_cache_first" --model "/tmp/gla-$preset" --gemm_tuning_cache "/tmp/gemms-$preset.cache"
    startup_run "${preset}_cache_second" --model "/tmp/gla-$preset" --gemm_tuning_cache "/tmp/gemms-$preset.cache"
    note "startup $preset: cache records $(($(wc -l < "/tmp/gemms-$preset.cache" 2> /dev/null || echo 1) - 1))"
    cp "/tmp/gemms-$preset.cache" "$out/gemms-$preset.cache" 2> /dev/null
    if cmp -s "$out/startup_tokens_${preset}_cache_first.txt" "$out/startup_tokens_${preset}_cache_second.txt"; then
      note "startup $preset: the cached starts' tokens are alike"
    else
      note "startup $preset: the cached starts' tokens DIFFER"; failures=$((failures + 1))
    fi
  done
fi
# Issue 19's one-run table: gla-engine-bench on the defaults (bf16 weights) on each random model of
# GLA_TABLE_PRESETS (default both), GLA_TABLE_ROUNDS rounds (default 2, alternating the models), then
# tests/cuda/engine_table.py: per model the floor, ours, the ratio and the target of every row from
# the first round, the later rounds' times beside them (table.txt, and the summary; docs/performance.md
# "Where the engine stands" adds what bounds each miss).
if [ "$parts" = table ] && [ -x gpu-bundle/run ]; then
  use_bundle
  table_files=()
  for round in $(seq "${GLA_TABLE_ROUNDS:-2}"); do
    for preset in ${GLA_TABLE_PRESETS-340M 1.3B}; do
      random_model "$preset" || continue
      check "table_${preset}_$round" timeout 180 gpu-bundle/run gla-engine-bench --model "/tmp/gla-$preset" \
        --name "gla-$preset" --batches 1,8,32,128
      if [ -s "$out/engine-gla-$preset.json" ]; then
        mv "$out/engine-gla-$preset.json" "$out/table_engine-gla-${preset}_run$round.json"
        table_files+=("$out/table_engine-gla-${preset}_run$round.json")
      fi
    done
  done
  if [ "${#table_files[@]}" -gt 0 ]; then
    check table python3 tests/cuda/engine_table.py "${table_files[@]}"
    tee -a "$out/summary.txt" < "$out/table.txt"
  fi
fi
# Issue 21: decode throughput with a JSON Schema on every sequence against none, 32 at once, on a
# random gla-1.3B, with two tokenizers beside it: gla-brown's 8,000 pieces (the model's other ids
# masked off) and Mistral 7B's 32,000 (tests/data/vocabularies, made a SentencePiece model here by
# its script: the issue's vocabulary size); the schema's 40 required records outlast
# max-new-tokens, so every request makes 128 tokens.
# Issue 23's one-byte weights on the GPU (FP8, INT8), alone: their kernel and engine tests (the
# decode-sized kernels, the FP8 input quantizer and GEMM, INT8's dequantization, the engine against
# the CPU's same weights, the default model's perplexity), glad serving with each, then
# gla-engine-bench native, fp8 and int8 alternating on both shapes (A/B in one call: the floors
# move with the bytes).
if [ "$parts" = weights ] && [ -x gpu-bundle/run ]; then
  use_bundle
  export GLA_EXPECT_BACKEND=cuda GLA_GLAD_PATH=$PWD/gpu-bundle/bin/glad  # the serving test starts the bundle's glad
  # Time limits: these paths ran on no GPU before they were written into the tree, and a hang must
  # not eat the whole device call.
  # The whole kernel, engine and training suites (about a minute together): the one-byte paths
  # share kernels with bf16's (the persistent step, the decode-sized projections), so bf16's tests
  # must pass on the same build.
  # GLA_WEIGHTS_TESTS=0: the speed table alone (the suites passed on this build in an earlier call).
  if [ "${GLA_WEIGHTS_TESTS:-1}" = 1 ]; then
    check weights_kernel_tests timeout 240 gpu-bundle/run gla_kernels_cuda_test
    check weights_engine_tests timeout 240 gpu-bundle/run cuda_engine_test
    check weights_train_tests timeout 120 gpu-bundle/run cuda_train_test
    grep -h "\[ measure \]" "$out/weights_engine_tests.txt" | tee -a "$out/summary.txt"
    check weights_serving_e2e timeout 120 gpu-bundle/run server_e2e_test --gtest_filter='*ByteWeights*'
  fi
  # GLA_WEIGHTS_PRESETS / GLA_WEIGHTS_ROUNDS: which shapes, how many alternations (a round of both
  # shapes is about four minutes of the call's ten).
  for preset in ${GLA_WEIGHTS_PRESETS-340M 1.3B}; do  # set but empty: the tests alone
    random_model $preset || continue
    for round in $(seq 1 "${GLA_WEIGHTS_ROUNDS:-1}"); do
      for weights in native fp8 int8; do
        check "weights_ab_${preset}_${weights}_$round" timeout 180 gpu-bundle/run gla-engine-bench --model /tmp/gla-$preset \
          --name gla-$preset --weights $weights --batches "${GLA_BENCH_WEIGHTS_BATCHES:-1,8,32,128}"
        grep -E "^(#|prefill|TTFT|decode)" "$out/weights_ab_${preset}_${weights}_$round.txt" |
          sed "s/^/$preset $weights $round: /" | tee -a "$out/summary.txt"
      done
    done
  done
fi
# The medium-M projection kernel (cuda::LinearMediumM*, 17-256 rows), alone: its kernel test, its
# benchmark against cuBLAS (and INT8's dequantize-then-cuBLAS) at the model shapes, the engine's
# decode-steps tests with it on (and the option refusals), then gla-engine-bench with each weight
# format, the kernel on (--medium_rows GLA_MEDIUM_ROWS) and off, alternating in this call.
if [ "$parts" = medium ] && [ -x gpu-bundle/run ]; then
  use_bundle
  # Time limits: a kernel that has never run on a GPU (a cluster that does not meet must not eat the call).
  check medium_kernel_tests timeout 150 gpu-bundle/run gla_kernels_cuda_test --gtest_filter='*LinearMediumM*'
  check medium_bench timeout 240 gpu-bundle/run linear_medium_m_bench  # the main table, then the forms table
  check medium_trace timeout 60 gpu-bundle/run linear_medium_m_bench --trace  # where a launch's time goes
  if [ "${GLA_MEDIUM_ENGINE_TESTS:-1}" = 1 ]; then  # 0: without the engine's tests (they ran in an earlier call)
    check medium_engine_tests timeout 200 gpu-bundle/run cuda_engine_test --gtest_filter='*DecodeStepsMatchCpu*:*Refusal*'
    grep -h "\[ measure \].*decode steps of" "$out/medium_engine_tests.txt" | tee -a "$out/summary.txt"
  fi
  engine_ab medium medium_rows "0 ${GLA_MEDIUM_ROWS:-256}" "${GLA_MEDIUM_PRESETS-1.3B}" \
    "${GLA_MEDIUM_WEIGHTS:-native fp8 int8}" 1 "${GLA_MEDIUM_BATCHES:-32,128}"
fi
# The bf16 GEMMs through cuBLASLt algorithms timed on the model's own matrices (cuda::TunedBf16Gemm,
# ProjectionPaths::tuned_bf16_gemms): its kernel and engine tests, the per-projection table against
# cublasGemmEx's default (gemm_tuning_bench), then gla-engine-bench with --gemm_tuning 0 and 1,
# alternating GLA_GEMMS_ROUNDS times (2), at GLA_GEMMS_BATCHES (prefill and TTFT too) on each of
# GLA_GEMMS_PRESETS.
if [ "$parts" = gemms ] && [ -x gpu-bundle/run ]; then
  use_bundle
  if [ "${GLA_GEMMS_TESTS:-1}" = 1 ]; then  # 0: without the tests (they ran in an earlier call)
    check gemms_kernel_tests timeout 120 gpu-bundle/run gla_kernels_cuda_test --gtest_filter='*TunedBf16Gemm*:*LinearBf16*'
    check gemms_engine_tests timeout 200 gpu-bundle/run cuda_engine_test --gtest_filter='*TunedGemms*:*NativeWeightsDecodeSteps*'
    grep -h "\[ measure \] tuned" "$out/gemms_kernel_tests.txt" "$out/gemms_engine_tests.txt" | tee -a "$out/summary.txt"
  fi
  check gemm_tuning_bench timeout 200 gpu-bundle/run gemm_tuning_bench
  grep -E "step|^#" "$out/gemm_tuning_bench.txt" | tee -a "$out/summary.txt"
  engine_ab gemms gemm_tuning "0 1" "${GLA_GEMMS_PRESETS-1.3B 340M}" native "${GLA_GEMMS_ROUNDS:-2}" \
    "${GLA_GEMMS_BATCHES:-32,64,128}"
fi
# The row kernels' warp form (kernels/row_form.h: a warp a row, the same bits as a block a row;
# ProjectionPaths::warp_rows_from): the forms' bit tests and the norm / quantizer tests, the engine's
# (WarpRowsChangeNoBit and the FP8 paths'), row_kernels_bench (both forms against the copy floor at
# decode and prompt row counts), then gla-engine-bench with --warp_rows 0 and GLA_ROWS_WARP_FROM
# (4096; at the default --warp_rows_width), with GLA_ROWS_WEIGHTS (native fp8) on GLA_ROWS_PRESETS,
# GLA_ROWS_ROUNDS (1) rounds, alternating, at GLA_ROWS_BATCHES (32; prefill and TTFT too). GLA_ROWS_ENGINE_TESTS=0: the kernel
# tests alone.
if [ "$parts" = rows ] && [ -x gpu-bundle/run ]; then
  use_bundle
  if [ "${GLA_ROWS_TESTS:-1}" = 1 ]; then  # 0: without the tests (they ran in an earlier call)
    check rows_kernel_tests timeout 200 gpu-bundle/run gla_kernels_cuda_test \
      --gtest_filter='*RowForms*:*Quantize*Fp8*:*Layers.*:*OneRow*'
    [ "${GLA_ROWS_ENGINE_TESTS:-1}" = 1 ] && check rows_engine_tests timeout 300 gpu-bundle/run cuda_engine_test \
      --gtest_filter='*WarpRowsChangeNoBit*:*Fp8MadeRowsChangeNoBit*:*Fp8WeightsMixedPackedSteps*'
  fi
  check row_kernels_bench timeout 200 gpu-bundle/run row_kernels_bench
  grep -E "^gla-|^#" "$out/row_kernels_bench.txt" | tee -a "$out/summary.txt"
  engine_ab rows warp_rows "0 ${GLA_ROWS_WARP_FROM:-4096}" "${GLA_ROWS_PRESETS-1.3B 340M}" \
    "${GLA_ROWS_WEIGHTS:-native fp8}" "${GLA_ROWS_ROUNDS:-1}" "${GLA_ROWS_BATCHES:-32}"
fi
# The decode-sized projection kernels, from the bundle: their kernel tests, linear_small_m_bench (the
# CUDA-core, tensor-core and cuBLAS kernels at 1-16 rows, both weight types) and
# linear_medium_m_bench (17-256 rows), each against the copy floor measured in its run (GLA_CHECKS
# picks parts of it).
if [ "$parts" = projections ] && [ -x gpu-bundle/run ]; then
  use_bundle
  check projection_tests timeout 200 gpu-bundle/run gla_kernels_cuda_test --gtest_filter='*LinearSmallM*:*LinearMediumM*'
  check linear_small_m_bench timeout 300 gpu-bundle/run linear_small_m_bench
  check linear_medium_m_bench timeout 300 gpu-bundle/run linear_medium_m_bench
fi
# Issue 19: decode steps of 2-8 sequences through the batched persistent kernel
# (kernels/cuda/persistent_decode_batched.cu): its engine tests (against the per-operation path and
# the CPU), the kernel alone at each batch (with a traced step; GLA_BATCHED_IN_FLIGHT=0,1,2: each
# with the producer's tiles in flight capped so, 0 the whole ring; default 1, the engine's;
# GLA_BATCHED_TILE_BYTES=0,16384,8192: and with tiles capped at those bytes, 0 the kernels' own;
# GLA_BATCHED_GRIDS=0,66: and with grids of those blocks, 0 one per SM, the engine's), and
# gla-engine-bench with --persistent_batch 1 (a captured graph of per-operation kernels) against 8.
if [ "$parts" = batched ] && [ -x gpu-bundle/run ]; then
  use_bundle
  failures_before=$failures
  check batched_engine_tests timeout 240 gpu-bundle/run cuda_engine_test --gtest_filter='*PersistentDecode*'
  grep -h "\[ measure \]" "$out/batched_engine_tests.txt" 2> /dev/null | tee -a "$out/summary.txt"
  if [ "$failures" -gt "$failures_before" ]; then  # wrong or hung: timing it would spend the call for nothing
    note "batched: the kernel's tests failed: not timed"
  else
    check batched_kernel_bench timeout 240 gpu-bundle/run persistent_decode_bench --batches "1,${GLA_BATCHED_BATCHES:-2,4,8}" \
      --in_flight "${GLA_BATCHED_IN_FLIGHT:-1}" --tile_bytes "${GLA_BATCHED_TILE_BYTES:-0}" --blocks "${GLA_BATCHED_GRIDS:-0}"
    engine_ab batched persistent_batch "1 8" "${GLA_BATCHED_PRESETS-1.3B 340M}" "${GLA_BATCHED_WEIGHTS:-native}" \
      "${GLA_BATCHED_ROUNDS:-1}" "${GLA_BATCHED_BATCHES:-2,4,8}"
  fi
fi
# Issue 19: what a grid barrier costs the persistent kernels, built five ways, and what a vector
# exchange costs (each block writes its share of GLA_BARRIER_EXCHANGE floats, every block reads them
# all): a barrier then the reads, against tagged 64-bit words that carry the synchronisation with
# the data (tests/cuda/grid_barrier_bench.cu). Idle and under an HBM stream, with the L2 round trip.
if [ "$parts" = barriers ] && [ -x gpu-bundle/run ]; then
  use_bundle
  check grid_barrier_bench timeout 300 gpu-bundle/run grid_barrier_bench --exchange "${GLA_BARRIER_EXCHANGE:-2048}"
fi
# Issue 19: the persistent kernels' tagged exchanges (PersistentDecodeParams::tagged): the
# persistent kernels' tests (the tagged ones among them), the barrier and exchange costs
# (grid_barrier_bench), the kernel alone at the levels GLA_EXCHANGE_LEVELS (default 0,2,3: barriers;
# x, act and in_proj's values as tagged words, the engine's; in_proj's alone; 1 is x and act; two
# rounds; at GLA_EXCHANGE_BATCHES, default 1,2,4), and gla-engine-bench --tagged at those levels at
# batch 1 (the engine's tagged words are batch 1's), alternating (GLA_EXCHANGE_ROUNDS, default 2).
if [ "$parts" = exchanges ] && [ -x gpu-bundle/run ]; then
  use_bundle
  failures_before=$failures
  check exchange_tests timeout 300 gpu-bundle/run cuda_engine_test --gtest_filter='*PersistentDecode*'
  grep -h "\[ measure \].*tagged [123]" "$out/exchange_tests.txt" 2> /dev/null | tee -a "$out/summary.txt"
  if [ "$failures" -gt "$failures_before" ]; then
    note "exchanges: the kernel's tests failed: not timed"
  else
    check grid_barrier_bench timeout 120 gpu-bundle/run grid_barrier_bench --exchange "${GLA_BARRIER_EXCHANGE:-2048}"
    check exchange_kernel_bench timeout 240 gpu-bundle/run persistent_decode_bench --batches "${GLA_EXCHANGE_BATCHES:-1,2,4}" \
      --tagged "${GLA_EXCHANGE_LEVELS:-0,2,3},${GLA_EXCHANGE_LEVELS:-0,2,3}"
    levels=${GLA_EXCHANGE_LEVELS:-0,2,3}
    engine_ab exchanges tagged "${levels//,/ }" "${GLA_EXCHANGE_PRESETS-1.3B 340M}" native "${GLA_EXCHANGE_ROUNDS:-2}" 1
  fi
fi
# Issue 19: the prefill rows' forget gates made in the chunkwise prep kernel
# (CudaModelOptions::prefill_gate_in_prep): the forward kernel's tests (the made gate equal to the
# bit to LowRankGate's rows read back, the refusals) and the engine's (the option changes no bit;
# the mixed steps against the CPU), then gla-engine-bench --gate_in_prep 0 / 1 alternating
# (GLA_PREP_GATE_ROUNDS, default 2) on GLA_PREP_GATE_PRESETS (default both) at batch 1 (prefill
# T=4096 and TTFT(512) are what it moves).
if [ "$parts" = prep_gate ] && [ -x gpu-bundle/run ]; then
  use_bundle
  failures_before=$failures
  if [ "${GLA_AB_TESTS:-1}" = 1 ]; then  # GLA_AB_TESTS=0: the A/B alone (the tests ran in an earlier call)
    check prep_gate_kernel_tests timeout 200 gpu-bundle/run gla_kernels_cuda_test \
      --gtest_filter='*GlaForwardCuda*:*GlaDecodeCuda*:*GlaBackwardChunk*'
    check prep_gate_engine_tests timeout 300 gpu-bundle/run cuda_engine_test \
      --gtest_filter='*PrefillGateInPrep*:*MixedPackedStepsMatchCpu*:*AdaptersInMixedSteps*:TinyReference*:*GreedyTextEqualsCpu*:ChunkPlanOptions*'
  fi
  if [ "$failures" -gt "$failures_before" ]; then
    note "prep_gate: the tests failed: not timed"
  else
    engine_ab prep_gate gate_in_prep "0 1" "${GLA_PREP_GATE_PRESETS-1.3B 340M}" native "${GLA_PREP_GATE_ROUNDS:-2}" 1
  fi
fi
# The chunkwise GLA kernel's plan (segments per sequence, the prep kernel in clusters) swept at the
# engine's prompt shapes and the anchors' (gla_prefill_bench plans), after the forward tests that
# hold every plan to the definition.
if [ "$parts" = plans ] && [ -x gpu-bundle/run ]; then
  use_bundle
  failures_before=$failures
  check plans_kernel_tests timeout 200 gpu-bundle/run gla_kernels_cuda_test --gtest_filter='*GlaForwardCuda*'
  if [ "$failures" -gt "$failures_before" ]; then
    note "plans: the forward tests failed: not timed"
  else
    check plans_sweep timeout 300 gpu-bundle/run gla_prefill_bench plans
    sed -n '/^chunkwise plans/,$p' "$out/plans_sweep.txt" | tee -a "$out/summary.txt"
  fi
fi
if [ "$parts" = structured ] && [ -x gpu-bundle/run ]; then
  use_bundle
  [ -d /tmp/gla-1.3B ] || gpu-bundle/run gla-random-model --preset 1.3B --out /tmp/gla-1.3B --dtype bf16 > /dev/null
  python3 tests/data/vocabularies/sentencepiece_bpe_model.py tests/data/vocabularies/mistral-7b-v0.1.txt \
    /tmp/mistral-32k.model || { note "mistral-32k.model: FAILED"; failures=$((failures + 1)); }
  for vocab in ${GLA_STRUCTURED_VOCABS:-brown8k mistral32k}; do
    if [ $vocab = brown8k ]; then cp models/gla-brown/tokenizer.model /tmp/gla-1.3B/
    else cp /tmp/mistral-32k.model /tmp/gla-1.3B/tokenizer.model; fi
    gpu-bundle/run glad --model /tmp/gla-1.3B --backend cuda --listen 127.0.0.1:50094 --slots 40 \
      > "$out/glad_structured_$vocab.txt" 2>&1 &
    glad_pid=$!
    for _ in $(seq 1 120); do grep -q "listening" "$out/glad_structured_$vocab.txt" && break; sleep 0.5; done
    # Which tokenizer glad serves with (Mistral's: "Hello world!" is 1,22557,1526,28808).
    note "$vocab tokenizer: \"Hello world!\" -> $(gpu-bundle/run gla-cli tokenize --addr 127.0.0.1:50094 --text 'Hello world!')"
    for round in 1 2; do
      for shape in none schema; do
        extra=(); [ $shape = schema ] && extra=(--json-schema tests/e2e/data/loadgen_people_schema.json)
        check "structured_${vocab}_${shape}_$round" gpu-bundle/run gla-loadgen --addr 127.0.0.1:50094 \
          --concurrency 32 --requests 96 --prompt-len 32 --max-new-tokens 128 "${extra[@]}"
        grep -E "^\| 32 " "$out/structured_${vocab}_${shape}_$round.txt" | sed "s/^/$vocab $shape $round: /" \
          | tee -a "$out/summary.txt"
      done
    done
    kill "$glad_pid"; wait "$glad_pid" 2> /dev/null
  done
fi
# Issue 22: a session's turn resumed from the shared store against one whose state is local and
# against resending the whole conversation, on the GPU at gla-340M and gla-1.3B state sizes
# (deploy/state-store-bench.sh; redis-server travels in the bundle).
if [ "$parts" = store ] && [ -x gpu-bundle/run ]; then
  use_bundle
  for preset in 340M 1.3B; do
    [ -d /tmp/gla-$preset ] || gpu-bundle/run gla-random-model --preset $preset --out /tmp/gla-$preset --dtype bf16 > /dev/null
    cp models/gla-brown/tokenizer.model /tmp/gla-$preset/
    GLAD=gpu-bundle/bin/glad GLA_CLI=gpu-bundle/bin/gla-cli GLAD_EXTRA="--backend cuda" \
      check "store_bench_$preset" bash deploy/state-store-bench.sh /tmp/gla-$preset 8 6
    grep -E "^(glad: listening|TTFT|store (memory|read|write)|tokens)" "$out/store_bench_$preset.txt" | sed "s/^/$preset: /" \
      | tee -a "$out/summary.txt"
  done
  # The loopback suite on the CUDA backend (a turn's write from the store thread waits on a CUDA
  # copy there): round-robin turns exact, concurrent turns, kill -9, prefix hit, Redis stopped.
  GLAD_EXTRA="--backend cuda" GLA_TEST_NO_PROXY=1 check shared_sessions_cuda bash tests/e2e/shared_sessions_test.sh \
    gpu-bundle/bin/glad gpu-bundle/bin/gla-cli models/gla-brown 0
  grep -E "^(ok|FAIL|skipped|all)" "$out/shared_sessions_cuda.txt" | sed "s/^/cuda: /" | tee -a "$out/summary.txt"
fi
# Issue 22: glad --devices over every GPU of the machine (a multi-GPU kind: nvidia-h100-x2 ...):
# the several-engines e2e on the CUDA backend (all GPUs, then one after a restart), then gla-loadgen
# against one GPU and against all of them at gla-340M (deploy/devices-bench.sh).
if [ "$parts" = devices ] && [ -x gpu-bundle/run ]; then
  use_bundle
  export GLA_GLAD_PATH=$PWD/gpu-bundle/bin/glad
  gpus=$(nvidia-smi -L | wc -l)
  all=$(seq -s, 0 $((gpus - 1)))
  echo "devices: $gpus GPU(s): $all" | tee -a "$out/summary.txt"
  GLA_E2E_BACKEND=cuda GLA_E2E_DEVICE_LISTS="$all 0" check devices_e2e gpu-bundle/run session_e2e_test \
    --gtest_filter='*SeveralEngines*'
  grep -E "^engines:|PASSED|FAILED" "$out/devices_e2e.txt" | tee -a "$out/summary.txt"
  if [ "$gpus" -gt 1 ]; then  # one GPU against all of them (with one, there is nothing to compare)
    [ -d /tmp/gla-340M ] || gpu-bundle/run gla-random-model --preset 340M --out /tmp/gla-340M --dtype bf16 > /dev/null
    cp models/gla-brown/tokenizer.model /tmp/gla-340M/
    GLAD=gpu-bundle/bin/glad GLA_LOADGEN=gpu-bundle/bin/gla-loadgen \
      LOADGEN_ARGS="--concurrency 32,128 --requests 512 --prompt-len 128 --max-new-tokens 128" \
      check devices_bench bash deploy/devices-bench.sh /tmp/gla-340M "0 $all" cuda
    grep -E "^==|^\| [0-9]" "$out/devices_bench.txt" | tee -a "$out/summary.txt"
  fi
fi
# Issue 20: the official openai SDK suite against glad on the GPU (default model, cuda backend);
# needs a bundle made with GLA_BUNDLE_SDK=1 (Node and the SDK travel in it).
if [ "$parts" = sdk ] && [ -x gpu-bundle/run ]; then
  use_bundle
  check openai_sdk bash tests/e2e/openai_sdk_test.sh "$PWD/gpu-bundle/bin/glad" "$PWD/models/gla-brown" \
    "$PWD/gpu-bundle/openai-sdk"
  grep -E "^(ok|FAIL|[0-9]+ checks)|glad: listening" "$out/openai_sdk.txt" | tee -a "$out/summary.txt"
fi
# Issue 20's n > 1 alone: the engine tests that cover groups and prompt scores, then gla-n-bench.
if [ "$parts" = n ] && [ -x gpu-bundle/run ]; then
  use_bundle
  check engine_tests gpu-bundle/run cuda_engine_test --gtest_filter='*CudaBackend*'
  for preset in 340M 1.3B; do
    gpu-bundle/run gla-random-model --preset $preset --out /tmp/gla-$preset --dtype bf16 > /dev/null ||
      { note "random $preset model: FAILED"; failures=$((failures + 1)); continue; }
    check "n_bench_$preset" gpu-bundle/run gla-n-bench --model /tmp/gla-$preset --name gla-$preset &&
      grep -E "^[0-9]" "$out/n_bench_$preset.txt" | sed "s/^/$preset n: /" | tee -a "$out/summary.txt"
  done
fi
# Issue 20: served tokens/s over the OpenAI HTTP API beside gRPC, same glad, same load
# (gla-loadgen, random 128-token prompts, 64 new tokens, greedy), alternating twice per protocol.
if [ "$parts" = http ] && [ -x gpu-bundle/run ]; then
  use_bundle
  for preset in ${GLA_HTTP_PRESETS:-340M 1.3B}; do
    gpu-bundle/run gla-random-model --preset $preset --out /tmp/gla-$preset --dtype bf16 > /dev/null ||
      { note "random $preset model: FAILED"; failures=$((failures + 1)); continue; }
    gpu-bundle/run glad --model /tmp/gla-$preset --backend cuda --listen 127.0.0.1:50093 --http_listen 127.0.0.1:8093 \
      --slots 64 > "$out/glad_http_$preset.txt" 2>&1 &
    glad_pid=$!
    for _ in $(seq 1 240); do grep -q "OpenAI HTTP API" "$out/glad_http_$preset.txt" && break; sleep 0.5; done
    for round in 1 2; do
      for proto in grpc http; do
        extra=""; [ $proto = http ] && extra="--http 127.0.0.1:8093"
        check "loadgen_${preset}_${proto}_$round" gpu-bundle/run gla-loadgen --addr 127.0.0.1:50093 $extra \
          --concurrency 1,64 --requests 128 --prompt-len 128 --max-new-tokens 64
        grep -E "^\| (1|64) \|" "$out/loadgen_${preset}_${proto}_$round.txt" | sed "s/^/$preset $proto $round: /" |
          tee -a "$out/summary.txt"
      done
    done
    kill "$glad_pid"; wait "$glad_pid" 2> /dev/null
  done
fi
if [ "$parts" = yields ] && [ -x gpu-bundle/run ]; then
  use_bundle
  yield_measurements
fi
if [ "$parts" = durability ] && [ -x gpu-bundle/run ]; then
  use_bundle
  durability_measurements
fi
if [ "$parts" = sessions ] && [ -x gpu-bundle/run ]; then
  use_bundle
  check session_tests gpu-bundle/run session_test
  check engine_tests gpu-bundle/run cuda_engine_test --gtest_filter='*GpuStatePool*:*CudaBackend*'
  session_measurements
fi
if { [ "$parts" = all ] || [ "$parts" = engine ]; } && [ -x gpu-bundle/run ]; then
  use_bundle
  export GLA_GLAD_PATH=$PWD/gpu-bundle/bin/glad GLA_CLI_PATH=$PWD/gpu-bundle/bin/gla-cli GLA_EXPECT_BACKEND=cuda
  export GLA_LOADGEN_PATH=$PWD/gpu-bundle/bin/gla-loadgen GLA_EVAL_PATH=$PWD/gpu-bundle/bin/gla-eval
  # The kernels against their CPU references (built here, with the engine: the kernels part builds
  # the same tests there with nvcc).
  check kernel_tests gpu-bundle/run gla_kernels_cuda_test
  # GLA_ENGINE_TEST_FILTER: a gtest filter for this suite (e.g. '-*PersistentDecodeBatched*' while a
  # new kernel's tests run apart, in a shorter timeout); a hung kernel ends at the timeout, not the call's.
  check engine_tests timeout "${GLA_ENGINE_TESTS_TIMEOUT:-480}" gpu-bundle/run cuda_engine_test \
    ${GLA_ENGINE_TEST_FILTER:+--gtest_filter="$GLA_ENGINE_TEST_FILTER"}
  # The GPU training path against the CPU one (losses, gradients, whole Trainer runs).
  check train_tests gpu-bundle/run cuda_train_test
  # Sessions, the prefix-state cache and preemption on the CUDA backend (swaps on the copy stream).
  check session_tests gpu-bundle/run session_test
  # The serving suites against glad, whose default backend is cuda when a GPU is present.
  check serving_e2e gpu-bundle/run server_e2e_test
  check serving_text_e2e gpu-bundle/run server_text_e2e_test
  # glad's default model (models/gla-brown) served on the GPU.
  check default_model_e2e gpu-bundle/run default_model_e2e_test
  # Fine-tune jobs while glad serves on the GPU (the e2e model's heads are too small for the GPU
  # training kernels: its jobs train on the CPU), and adapters applied there.
  check finetune_e2e gpu-bundle/run fine_tune_e2e_test
  grep -h "glad: listening" /tmp/*/glad*/glad.log 2> /dev/null | head -n 1 | tee -a "$out/summary.txt"
  for preset in $([ "${GLA_GPU_BENCH:-1}" = 1 ] && echo 340M 1.3B); do  # GLA_GPU_BENCH=0: tests only
    gpu-bundle/run gla-random-model --preset $preset --out /tmp/gla-$preset --dtype bf16 ||
      { note "random $preset model: FAILED"; failures=$((failures + 1)); continue; }
    check "engine_bench_$preset" gpu-bundle/run gla-engine-bench --model /tmp/gla-$preset --name gla-$preset
    check "engine_bench_${preset}_recurrent_eager" gpu-bundle/run gla-engine-bench --model /tmp/gla-$preset \
      --name gla-$preset --cuda_graphs 0 --chunked_prefill 0 --batches 1,32 --decode_steps 32
  done
  if [ "${GLA_GPU_BENCH:-1}" = 1 ] && [ -d /tmp/gla-340M ]; then
    # LoRA training throughput on the GPU path (docs/performance.md), then serving on the GPU while a
    # LoRA job trains there (docs/fine-tuning.md).
    check finetune_bench_340M gpu-bundle/run gla-finetune-bench --model /tmp/gla-340M --device cuda --batch 8 \
      --seq-len 1024 --steps 5
    rm -rf /tmp/gla-adapters && mkdir -p /tmp/gla-adapters
    gpu-bundle/run glad --model /tmp/gla-340M --backend cuda --listen 127.0.0.1:50091 \
      --adapter_dir /tmp/gla-adapters --metrics_listen 127.0.0.1:9401 > "$out/glad_340M.txt" 2>&1 &
    glad_pid=$!
    for _ in $(seq 1 120); do grep -q "listening" "$out/glad_340M.txt" && break; sleep 0.5; done
    check serving_with_job_340M gpu-bundle/run gla-loadgen --addr 127.0.0.1:50091 --concurrency 1,4,16 \
      --requests 128 --prompt-len 128 --max-new-tokens 64 --finetune lora --finetune-batch 4 --finetune-seq-len 512
    # The metrics after that traffic (GPU memory included), through bash's /dev/tcp (no curl there).
    { exec 3<> /dev/tcp/127.0.0.1/9401 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3; } \
      > "$out/metrics_340M.txt" 2>&1
    grep -E "^gla_(device_memory_bytes|requests_total|generated_tokens_total|finetune_jobs)" "$out/metrics_340M.txt" |
      tee -a "$out/summary.txt"
    kill "$glad_pid"; wait "$glad_pid" 2> /dev/null
  fi
  # GLA_GPU_SESSION_BENCH=0: without the (long) session measurements.
  [ "${GLA_GPU_BENCH:-1}" = 1 ] && [ "${GLA_GPU_SESSION_BENCH:-1}" = 1 ] && session_measurements
elif [ ! -x gpu-bundle/run ] && [ "$parts" != kernels ] && [ "$parts" != fla ]; then
  note "engine part skipped: no gpu-pack/ (run deploy/gpu-bundle.sh here and carry gpu-pack)"
fi
# A GLA_CHECKS name that matched no check (a typo, or another part's) counts as a failure: the call
# ran nothing of what was asked.
for name in ${GLA_CHECKS:-}; do
  [[ $checks_run == *" $name "* ]] || { note "GLA_CHECKS: '$name' matched no check of this part"; failures=$((failures + 1)); }
done
cat "$out/summary.txt"
echo "failures: $failures"
# The device tool brings back at most 8 files from $OUT: everything travels as one archive beside
# the summary (tar -xzf results.tgz here). A run cut short keeps its loose files instead. A part run
# after another in the same call finds that one's archive: it travels inside this one, renamed.
[ -f "$out/results.tgz" ] && mv "$out/results.tgz" "$out/earlier-part-results.tgz"
if tar -C "$out" -czf /tmp/gla-results.tgz . 2> /dev/null; then
  find "$out" -mindepth 1 -maxdepth 1 ! -name summary.txt -exec rm -rf {} +
  mv /tmp/gla-results.tgz "$out/results.tgz"
fi
exit $((failures != 0))
