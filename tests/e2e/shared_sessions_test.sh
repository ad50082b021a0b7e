#!/usr/bin/env bash
# Three glad replicas sharing their sessions through one redis-server (--state_store), on loopback,
# and nginx in front of them (issue 22): a conversation whose turns go round-robin over the replicas gives exactly the tokens of
# the same conversation on one replica; two turns on one session at once on two replicas: the second
# is refused, never interleaved; kill -9 of the replica running a turn: once its lease runs out,
# the next turn continues on another replica from the last completed turn, exactly; Redis stopped:
# session calls say UNAVAILABLE and plain generation goes on; a prompt prefix prefilled on one replica
# is a hit on another. Exit 77 (ctest: skipped, saying why)
# under the sanitizers, where glad cannot load SentencePiece.
#   shared_sessions_test.sh GLAD GLA_CLI MODEL_DIR SANITIZED(0|1)
# GLAD_EXTRA: more glad flags (gpu-check.sh: --backend cuda); GLA_TEST_NO_PROXY=1 skips the nginx part.
set -uo pipefail
glad=$1 cli=$2 model=$3 sanitized=${4:-0}
. "$(dirname "$0")/sanitized_skip.sh"
skip_if_sanitized "$sanitized" "shared sessions test"
command -v redis-server > /dev/null || { echo "redis-server is not installed (deploy/install-deps.sh installs it)"; exit 1; }
work=$(mktemp -d)
declare -A pid
# nginx gets SIGTERM (its master stops its workers; after SIGKILL they would outlive the test).
trap '[ -n "${pid[nginx]:-}" ] && kill "${pid[nginx]}" 2> /dev/null; unset "pid[nginx]"
      for p in "${pid[@]}"; do kill -9 $p 2> /dev/null; done; wait 2> /dev/null; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -5 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" > "$work/redis.log" 2>&1 &
  pid[redis]=$!
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping 2> /dev/null | grep -q PONG && return; sleep 0.05; done
  fail "redis-server did not start"
}
start_redis

# Replicas: a two-second lease, so a dead replica's sessions are free again soon.
declare -A port
start_replica() {
  local r=$1
  "$glad" --model "$model" --listen 127.0.0.1:0 --threads 1 --state_store "redis://127.0.0.1:$redis_port" \
    --state_lease_s 2 --max_new_tokens 1000000 ${GLAD_EXTRA:-} 2> "$work/glad$r.log" &
  pid[$r]=$!
}
wait_replica() {
  local r=$1 p=""
  for _ in $(seq 300); do
    p=$(sed -n 's|.*glad: listening on 127.0.0.1:\([0-9]*\).*|\1|p' "$work/glad$r.log")
    [ -n "$p" ] && break
    sleep 0.1
  done
  [ -n "$p" ] || fail "replica $r did not start"
  port[$r]=$p
}
for r in 0 1 2; do start_replica $r; done
for r in 0 1 2; do wait_replica $r; done

# turn REPLICA SESSION TEXT [TOKENS]: one greedy turn; prints its token ids.
turn() {
  "$cli" generate --addr "127.0.0.1:${port[$1]}" --session "$2" --prompt "$3" --max-new-tokens "${4:-6}" \
    > "$work/turn.out" 2> "$work/turn.err" || return 1
  sed -n 's/^ids: //p' "$work/turn.out"
}
create() { "$cli" session-create --addr "127.0.0.1:${port[$1]}" --id "$2" > /dev/null 2> "$work/cli.err" || fail "session-create $2: $(cat "$work/cli.err")"; }
prompts=("The jury said" " that the city" " of Atlanta" " had been" " in the election" " and the mayor")

# 1. One conversation on replica 0 alone, the same one round-robin over 0, 1, 2.
create 0 solo
create 1 spread
for i in "${!prompts[@]}"; do
  a=$(turn 0 solo "${prompts[$i]}") || fail "turn $i on one replica: $(cat "$work/turn.err")"
  b=$(turn $((i % 3)) spread "${prompts[$i]}") || fail "turn $i on replica $((i % 3)): $(cat "$work/turn.err")"
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "turn $i: one replica gave '$a', round-robin gave '$b'"
done
echo "ok: six turns round-robin over three replicas equal the same six on one replica"

# 2. Two turns at once on one session, on two replicas: the second is refused.
create 2 busy
"$cli" generate --addr "127.0.0.1:${port[0]}" --session busy --prompt "The jury said" --max-new-tokens 100000 \
  --ignore-eos 1 > /dev/null 2>&1 &
long=$!
sleep 1
turn 1 busy " and then" 2 > /dev/null && fail "a second turn ran beside a running one"
grep -q "FAILED_PRECONDITION.*another replica" "$work/turn.err" || fail "the second turn's refusal: $(cat "$work/turn.err")"
kill $long; wait $long 2> /dev/null
ok=""
for _ in $(seq 50); do turn 1 busy " and then" 2 > /dev/null && ok=1 && break; sleep 0.1; done  # the cancel reaches the replica
[ -n "$ok" ] || fail "the session did not continue after the first turn was cancelled: $(cat "$work/turn.err")"
echo "ok: a second turn at once on another replica is refused (FAILED_PRECONDITION); after the first, turns go on"

# 3. kill -9 of the replica running a turn: the next turn continues from the last completed one.
create 1 crash
create 0 witness
for i in 0 1; do
  turn 1 crash "${prompts[$i]}" > /dev/null || fail "crash turn $i: $(cat "$work/turn.err")"
  turn 0 witness "${prompts[$i]}" > /dev/null || fail "witness turn $i: $(cat "$work/turn.err")"
done
"$cli" generate --addr "127.0.0.1:${port[1]}" --session crash --prompt " and so" --max-new-tokens 100000 \
  --ignore-eos 1 > /dev/null 2>&1 &
long=$!
sleep 1
kill -9 "${pid[1]}"
wait "${pid[1]}" 2> /dev/null
unset 'pid[1]'
wait $long 2> /dev/null
t0=$(date +%s.%N)
after=""
for _ in $(seq 60); do  # refused while the dead replica's lease lasts (2 s)
  after=$(turn 2 crash "${prompts[2]}") && break
  grep -q "another replica" "$work/turn.err" || fail "after kill -9: $(cat "$work/turn.err")"
  after=""
  sleep 0.1
done
[ -n "$after" ] || fail "the session did not continue on another replica after kill -9"
waited=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
expected=$(turn 0 witness "${prompts[2]}") || fail "witness turn 2: $(cat "$work/turn.err")"
[ "$after" = "$expected" ] || fail "after kill -9 the turn gave '$after', the last completed turn's continuation is '$expected'"
echo "ok: kill -9 mid-turn: ${waited} s later another replica continued from the last completed turn, exactly"

# 4. Behind nginx (deploy/nginx/gla.conf), a session the server names: the creating call and the
# turns may land on different replicas (the id is not the client's, so not what the proxy hashed):
# with the store it makes no difference, the turns equal the same on one replica.
here=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${GLA_TEST_NO_PROXY:-0}" = 1 ]; then  # the GPU machine has no nginx (deploy/gpu-check.sh store)
  echo "skipped: the session behind nginx (GLA_TEST_NO_PROXY=1)"
else
command -v nginx > /dev/null || fail "nginx is not installed (deploy/install-deps.sh installs it)"
for r in 0 1 2; do echo "server 127.0.0.1:${port[$r]};" >> "$work/gla-grpc-replicas.conf"; done
cp "$work/gla-grpc-replicas.conf" "$work/gla-http-replicas.conf"  # (the HTTP side is not used here)
proxy_http=$(free_port) proxy_grpc=$(free_port)
sed -e "s|listen 8000;|listen 127.0.0.1:$proxy_http;|" -e "s|listen 50051 http2;|listen 127.0.0.1:$proxy_grpc http2;|" \
  "$here/deploy/nginx/gla.conf" > "$work/gla.conf"
mkdir -p "$work/tmp"
nginx -e stderr -p "$work/" -c "$work/gla.conf" -g "daemon off;" 2> "$work/nginx.log" &
pid[nginx]=$!
port[proxy]=$proxy_grpc
for _ in $(seq 50); do "$cli" health --addr "127.0.0.1:$proxy_grpc" > /dev/null 2>&1 && break; sleep 0.1; done
named=$("$cli" session-create --addr "127.0.0.1:$proxy_grpc" 2> "$work/cli.err") || fail "session-create through nginx: $(cat "$work/cli.err")"
create 0 alone
for i in 0 1 2 3; do
  a=$(turn proxy "$named" "${prompts[$i]}") || fail "turn $i through nginx: $(cat "$work/turn.err")"
  b=$(turn 0 alone "${prompts[$i]}") || fail "turn $i on replica 0: $(cat "$work/turn.err")"
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "turn $i: through nginx '$a', on one replica '$b'"
done
echo "ok: a server-named session ($named) created and continued through nginx equals the same turns on one replica"
fi

# 5. A system prompt prefilled on replica 0 (seen twice there: its prefix state is saved, and written
# to the store) is a hit on replica 2, which has never seen it.
system="You are a careful assistant for the city of Atlanta. The jury said that the election was conducted
fairly and that the mayor had been informed of every complaint the voters made about the primary.
The grand jury commented on a number of other topics, among them the purchasing departments of the
county, the welfare of children in the care of the state, and the salaries of the city's workers."
for q in " What did the jury say?" " Who was informed?"; do
  "$cli" generate --addr "127.0.0.1:${port[0]}" --prompt "$system$q" --max-new-tokens 2 > /dev/null 2>&1 \
    || fail "a long prompt on replica 0"
done
"$cli" generate --addr "127.0.0.1:${port[2]}" --prompt "$system What was conducted?" --max-new-tokens 2 \
  > "$work/prefix.out" 2>&1 || fail "a long prompt on replica 2: $(cat "$work/prefix.out")"
grep -q "cached_prompt_tokens=[1-9]" "$work/prefix.out" || grep -q "cached=[1-9]" "$work/prefix.out" \
  || fail "replica 2 prefilled the whole prompt: $(cat "$work/prefix.out")"
"$cli" info --addr "127.0.0.1:${port[2]}" | grep -q "store_hits: 1" || fail "replica 2 counts no prefix hit in the store"
echo "ok: a prefix prefilled on replica 0 is a hit on replica 2 ($(grep -o 'cached[a-z_]*=[0-9]*' "$work/prefix.out"))"

# 6. Redis gone: sessions UNAVAILABLE, plain generation goes on; back (empty): new sessions work.
kill -9 "${pid[redis]}"; wait "${pid[redis]}" 2> /dev/null; unset 'pid[redis]'
turn 0 solo " again" 2 > /dev/null && fail "a session turn ran without the store"
grep -q "UNAVAILABLE.*state store" "$work/turn.err" || fail "a session turn without the store: $(cat "$work/turn.err")"
"$cli" sessions --addr "127.0.0.1:${port[2]}" > /dev/null 2> "$work/cli.err" && fail "sessions listed without the store"
grep -q UNAVAILABLE "$work/cli.err" || fail "listing without the store: $(cat "$work/cli.err")"
"$cli" generate --addr "127.0.0.1:${port[0]}" --prompt "The jury said" --max-new-tokens 4 > "$work/plain.out" 2>&1 \
  || fail "plain generation without the store: $(cat "$work/plain.out")"
echo "ok: Redis stopped: session calls UNAVAILABLE naming the store, plain generation served"
start_redis
ok=""
for _ in $(seq 30); do
  "$cli" session-create --addr "127.0.0.1:${port[2]}" --id again > /dev/null 2>&1 && ok=1 && break
  sleep 0.1
done
[ -n "$ok" ] || fail "no session could be created once the store was back"
turn 0 again "The jury said" 2 > /dev/null || fail "a turn once the store was back: $(cat "$work/turn.err")"
echo "ok: Redis back: sessions work again"
echo "all checks passed"
