#!/usr/bin/env bash
# glad --devices (issue 22, "every GPU of a host"; docs/scale-out.md): gla-loadgen against one glad
# for each --devices list given, straight to its gRPC port (no proxy: the engines are behind one
# front door). On the GPU: "0" then "0,1,..." compares one GPU with several. On the CPU backend
# each engine takes an equal part of --threads, so "0" vs "0,1" compares one engine on all the
# cores with several engines sharing them.
#   deploy/devices-bench.sh [MODEL_DIR] [DEVICE_LISTS] [BACKEND] [THREADS]
#     (default: models/gla-brown "0 0,1" auto 0)
# GLAD_EXTRA: more glad flags; LOADGEN_ARGS: gla-loadgen's (default below).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/glad-port.sh
model=${1:-models/gla-brown} lists=${2:-0 0,1} backend=${3:-auto} threads=${4:-0}
glad=${GLAD:-build/server/glad} loadgen=${GLA_LOADGEN:-build/clients/gla-loadgen}
args=${LOADGEN_ARGS:---concurrency 8,32 --requests 96 --prompt-len 32 --max-new-tokens 32}
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2> /dev/null; wait 2> /dev/null; rm -rf "$work"' EXIT
echo "$(nproc) CPUs here ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); --backend $backend --threads $threads"
for list in $lists; do
  # shellcheck disable=SC2086
  "$glad" --model "$model" --listen 127.0.0.1:0 --backend "$backend" --threads "$threads" --devices "$list" \
    ${GLAD_EXTRA:-} 2> "$work/glad.log" &
  pid=$!
  p=$(glad_port "$work/glad.log") || exit 1
  echo "== --devices $list: $(sed -n 's|.*listening on [^ ]* (\(.*, [0-9]* slots\),.*|\1|p' "$work/glad.log" | head -1)"
  # shellcheck disable=SC2086
  "$loadgen" --addr "127.0.0.1:$p" $args | grep -E "^\|"
  kill "$pid"
  wait "$pid" 2> /dev/null || true
  pid=""
done
