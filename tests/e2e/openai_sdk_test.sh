#!/usr/bin/env bash
# The official `openai` npm SDK against glad (issue 20): fetches the pinned SDK (sha512-checked)
# into the build folder, starts two glads on the default model (one with a bearer token), and runs
# tests/e2e/openai_sdk/sdk_test.mjs. Exit 77 (ctest: skipped, with the reason printed) when Node
# or the npm registry is not available here; any other failure fails.
set -uo pipefail
glad=$1 model=$2 work=$3 sanitized=${4:-0}
here=$(cd "$(dirname "$0")" && pwd)
. "$(dirname "$0")/sanitized_skip.sh"
skip_if_sanitized "$sanitized" "openai SDK test"
command -v node > /dev/null || { echo "openai SDK test skipped: no node (deploy/install-deps.sh installs nodejs)"; exit 77; }
mkdir -p "$work"
node "$here/openai_sdk/fetch_sdk.mjs" "$work" || exit $?
cp "$here/openai_sdk/sdk_test.mjs" "$work/"
logs=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2> /dev/null; wait 2> /dev/null; rm -rf "$logs"' EXIT
# start NAME ARGS...: glad on free ports; sets $port to its HTTP port. Not in a $(...) subshell:
# the pid must reach the parent's list, or the trap cannot stop it.
start() {
  local name=$1; shift
  "$glad" --model "$model" --listen 127.0.0.1:0 --http_listen 127.0.0.1:0 --served_model_name brown --threads 1 "$@" \
    > "$logs/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    port=$(sed -n 's|.*OpenAI HTTP API on http://127.0.0.1:\([0-9]*\)/v1.*|\1|p' "$logs/$name.log")
    [ -n "$port" ] && return 0
    sleep 0.05
  done
  cat "$logs/$name.log" >&2
  return 1
}
start open || exit 1
open_port=$port
start token --auth_token s3cret || exit 1
token_port=$port
grep -m 1 "glad: listening" "$logs/open.log"  # which backend answered (the GPU check reads it)
# A failing run's output and both glads' logs are kept in $work (a rerun overwrites ctest's log).
cd "$work" && node sdk_test.mjs "http://127.0.0.1:$open_port/v1" "http://127.0.0.1:$token_port/v1" 2>&1 |
  tee sdk_test.last.log
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  kept="failed-$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$kept" && cp sdk_test.last.log "$logs"/*.log "$kept/" && echo "kept in $work/$kept"
fi
exit "$rc"
