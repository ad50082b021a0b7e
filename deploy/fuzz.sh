#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz; docs/fuzzing.md) with clang, ASan and UBSan in
# build-fuzz/, and runs each over a copy of its seed corpus (tests/fuzz/corpus/<name>, never
# written). Exits 1 on any finding (crash, sanitizer report, leak, timeout, out of memory, a
# harness check), printing the reproducer's path and the command that replays it.
#   deploy/fuzz.sh                 CI: each harness for GLA_FUZZ_SECONDS (default 25) seconds
#   deploy/fuzz.sh --runs 1000000  the long run: that many inputs per harness
#   deploy/fuzz.sh [--runs N] NAME...   only these harnesses (safetensors, config, ...)
# GLA_FUZZ_OUT (default build-fuzz/fuzz-out) keeps each harness's grown corpus, log and findings.
set -euo pipefail
cd "$(dirname "$0")/.."

harnesses=(safetensors config shard_index session_file adapter_config tokenizer tokenizer_model generate_request openai_request chat_template regex grammar json_schema quantized_checkpoint gemm_tuning_cache)
# Largest input per harness: a few times the largest valid seed (headers, JSON files, requests).
declare -A max_len=([safetensors]=4096 [config]=4096 [shard_index]=2048 [session_file]=1024
                    [adapter_config]=4096 [tokenizer]=1024 [tokenizer_model]=8192 [generate_request]=2048
                    [openai_request]=4096
                    [chat_template]=4096 [regex]=512 [grammar]=2048 [json_schema]=4096
                    [quantized_checkpoint]=16384 [gemm_tuning_cache]=2048)
# JSON dictionary (field names, dtypes, PEFT options) for the harnesses whose input is JSON.
declare -A dict=([safetensors]=json [config]=json [shard_index]=json [adapter_config]=json [openai_request]=json [json_schema]=json
                 [quantized_checkpoint]=json)

runs=""
selected=()
while (($#)); do
  case "$1" in
    --runs) runs="${2:?--runs needs a count}"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option '$1' (known: --runs N)" >&2; exit 2 ;;
    *) [[ " ${harnesses[*]} " == *" $1 "* ]] || { echo "fuzz.sh: no harness '$1' (${harnesses[*]})" >&2; exit 2; }
       selected+=("$1"); shift ;;
  esac
done
((${#selected[@]})) || selected=("${harnesses[@]}")
seconds="${GLA_FUZZ_SECONDS:-25}"

deploy/install-deps.sh --fuzz
dir=build-fuzz
start=$(date +%s)
CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGLA_ENABLE_CUDA=OFF \
  -DGLA_BUILD_TESTS=OFF -DGLA_FUZZ=ON >/dev/null
cmake --build "$dir" --target $(printf '%s_fuzz ' "${selected[@]}")
echo "fuzz.sh: build took $(( $(date +%s) - start )) s"

out="${GLA_FUZZ_OUT:-$dir/fuzz-out}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
for name in "${selected[@]}"; do
  work="$out/$name"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts" "$work/tmp"
  cp tests/fuzz/corpus/"$name"/* "$work/corpus/"
  args=(-max_len="${max_len[$name]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$work/artifacts/")
  [ -n "${dict[$name]:-}" ] && args+=(-dict="tests/fuzz/${dict[$name]}.dict")
  if [ -n "$runs" ]; then args+=(-runs="$runs"); else args+=(-max_total_time="$seconds"); fi
  t0=$(date +%s)
  rc=0
  # The harnesses make their temporary files under TMPDIR; a crashed run cannot remove its own.
  TMPDIR="$work/tmp" "$dir/tests/fuzz/${name}_fuzz" "${args[@]}" "$work/corpus" >"$work/log" 2>&1 || rc=$?
  rm -rf "$work/tmp"
  stats=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$work/log" | tail -n 1 | sed -E 's/[[:space:]]+(lim|exec\/s):.*//' || true)
  printf 'fuzz.sh: %-16s %4d s  rc %d  %s  (%s inputs in the corpus)\n' "$name" $(( $(date +%s) - t0 )) "$rc" \
    "$stats" "$(ls "$work/corpus" | wc -l)"
  findings=$(find "$work/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \))
  if [ "$rc" -ne 0 ] || [ -n "$findings" ]; then
    failed+=("$name")
    echo "---- $name: finding (log: $work/log) ----"
    # What the harness printed before it died (an uncaught exception's "terminate called ..." line,
    # a check's message) and the stack: CI keeps no files, so its log must carry the whole finding.
    grep -E -B 12 -A 40 'ERROR: |runtime error|gla fuzz check failed' "$work/log" | grep -v -E '^(#[0-9]+|INFO:)' |
      head -n 80 || true
    for f in $findings; do
      echo "reproducer: $f"
      echo "  replay:   $dir/tests/fuzz/${name}_fuzz $f"
      # The input itself, so a finding in CI can be replayed anywhere: base64 -d > crash-file.
      echo "  base64:   $(head -c 8192 "$f" | base64 -w 0)"
    done
    [ -n "$findings" ] || tail -n 30 "$work/log"
  fi
done
echo "fuzz.sh: total $(( $(date +%s) - start )) s"
if ((${#failed[@]})); then
  echo "fuzz.sh: FINDINGS in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: no findings (${selected[*]})"
