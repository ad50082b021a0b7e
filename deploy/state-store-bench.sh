#!/usr/bin/env bash
# Issue 22's measurement of a resumed turn (docs/scale-out.md): two glad replicas sharing sessions
# through a redis-server on loopback; for each of N conversations, turn after turn, the time to
# first token of a turn that
#   local:  runs where the previous turn ran (the state is in that replica's slot),
#   store:  runs on the other replica (its copy is a turn old: the state is read from the store),
#   resend: carries the whole conversation again, without a session (what a client without
#           sessions does), on the replica that is idle;
# and the store's memory per session (Redis MEMORY USAGE of a session's keys).
#   deploy/state-store-bench.sh [MODEL_DIR] [CONVERSATIONS] [TURNS]      (build/ must hold glad and gla-cli)
# Extra glad flags (a backend, say) in GLAD_EXTRA.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/glad-port.sh
model=${1:-models/gla-brown} conversations=${2:-8} turns=${3:-6}
glad=${GLAD:-build/server/glad} cli=${GLA_CLI:-build/clients/gla-cli}
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2> /dev/null; done; wait 2> /dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" > /dev/null &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$port" ping 2> /dev/null | grep -q PONG && break; sleep 0.05; done
addr=()
for r in 0 1; do
  # shellcheck disable=SC2086
  "$glad" --model "$model" --listen 127.0.0.1:0 --state_store "redis://127.0.0.1:$port" --prefix_cache_mb 0 \
    --max_prompt_tokens 65536 ${GLAD_EXTRA:-} 2> "$work/glad$r.log" &
  pids+=($!)
done
for r in 0 1; do
  p=$(glad_port "$work/glad$r.log") || exit 1
  addr+=("127.0.0.1:$p")
done
grep -m1 "listening" "$work/glad0.log"
ttft() { sed -n 's/.* ttft=\([0-9.]*\)s.*/\1/p' <<< "$1"; }
ids() { sed -n 's/^ids: //p' <<< "$1"; }
turn_text=" and the jury said that the city of Atlanta had been"
declare -a local_t store_t resend_t
for c in $(seq "$conversations"); do
  id="bench-$c"
  "$cli" session-create --addr "${addr[0]}" --id "$id" > /dev/null
  at=0
  for t in $(seq "$turns"); do
    # Alternate: odd turns where the last one ran (local), even turns on the other replica (store).
    if [ $((t % 2)) = 0 ]; then at=$((1 - at)); kind=store; else kind=local; fi
    [ "$t" = 1 ] && kind=first
    out=$("$cli" generate --addr "${addr[$at]}" --session "$id" --prompt "$turn_text" --max-new-tokens 8 2>&1)
    case $kind in local) local_t+=("$(ttft "$out")") ;; store) store_t+=("$(ttft "$out")") ;; esac
    # The same conversation resent whole, on the other replica (its prompt: every turn's text and
    # output so far, as ids); only the TTFT is kept.
    prompt_ids=$("$cli" tokenize --addr "${addr[$((1 - at))]}" --text "$turn_text" 2> /dev/null)
    [ -n "${conversation:-}" ] && prompt_ids=${prompt_ids#1,}  # the BOS only at the start
    conversation="${conversation:+$conversation,}$prompt_ids,$(ids "$out")"
    full=$("$cli" generate --addr "${addr[$((1 - at))]}" --prompt-ids "$conversation" --max-new-tokens 8 2>&1)
    [ "$t" -gt 1 ] && resend_t+=("$(ttft "$full")")
  done
  last_tokens=$(tr ',' '\n' <<< "$conversation" | wc -l)
  conversation=""
done
mean() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:] if x]; print(f"{1000*sum(v)/len(v):.2f} ms over {len(v)}")' "$@"; }
echo "TTFT local (state in the replica's slot): $(mean "${local_t[@]}")"
echo "TTFT store (state read from Redis):       $(mean "${store_t[@]}")"
echo "TTFT resend (whole conversation again):   $(mean "${resend_t[@]}")"
# The replicas' own timing of the store's reads and writes (ModelInfo's session stats).
for r in 0 1; do
  "$cli" info --addr "${addr[$r]}" | sed -n '/^sessions {/,/^}/p' > "$work/info$r.txt"
done
python3 - "$work/info0.txt" "$work/info1.txt" <<'PY'
import re, sys
def get(name):
    total = 0.0
    for path in sys.argv[1:]:
        m = re.search(rf"^\s*{name}: ([0-9.e+-]+)", open(path).read(), re.M)
        total += float(m.group(1)) if m else 0.0
    return total
reads, writes = get("store_reads"), get("store_writes")
if reads:
    print(f"store read of a state (replicas' own timing): {1000 * get('store_read_seconds') / reads:.2f} ms mean over {int(reads)}")
if writes:
    print(f"store write of a state (replicas' own timing; the turns' and the creations', whose state is empty): "
          f"{1000 * get('store_write_seconds') / writes:.2f} ms mean over {int(writes)}")
PY
fp_key=$(redis-cli -p "$port" --scan --pattern 'gla:*:s:bench-1' | head -1)
m_key=${fp_key/:s:/:m:}
echo "store memory per session: state entry $(redis-cli -p "$port" memory usage "$fp_key") B, record $(redis-cli -p "$port" memory usage "$m_key") B (Redis MEMORY USAGE); the state entry's value is $(redis-cli -p "$port" strlen "$fp_key") B"
echo "tokens of a whole conversation (its last resend's prompt): $last_tokens"
