#!/usr/bin/env bash
# deploy/nginx/gla-proxy-run.sh (the Kubernetes proxy's entry point, deploy/k8s/proxy.yaml) follows
# the replicas a name resolves to: two glad replicas on loopback addresses 127.0.0.2 and 127.0.0.3
# (same ports, as pods behind a headless Service), the name's answers played by a file the test
# rewrites. One address: every request on it; both: spread over both; one gone: none to it; none:
# 502 from a proxy that stays up; SIGTERM: the proxy stops. Which replica served is read from its
# own /metrics. Exit 77 under the sanitizers (glad cannot load SentencePiece there).
#   nginx_follow_test.sh GLAD MODEL_DIR SANITIZED(0|1)
set -uo pipefail
glad=$1 model=$2 sanitized=${3:-0}
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/sanitized_skip.sh"
skip_if_sanitized "$sanitized" "nginx follow test"
command -v nginx > /dev/null || { echo "nginx is not installed (deploy/install-deps.sh installs it)"; exit 1; }
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2> /dev/null; done; wait 2> /dev/null; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -8 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Values it cannot use are refused before nginx starts (exit 2, saying which).
for bad in "GLA_RESOLVE_EVERY_S=0" "GLA_RESOLVE_EVERY_S=soon" "GLA_GRPC_PORT=70000" "GLA_HTTP_PORT=-1"; do
  out=$(env GLA_REPLICAS_NAME=x "$bad" "$here/deploy/nginx/gla-proxy-run.sh" "$here/deploy/nginx/gla.conf" "$work/bad" 2>&1)
  rc=$?
  [ $rc = 2 ] && grep -q "gla-proxy: " <<< "$out" || fail "$bad: exit $rc, '$out'"
done
echo "ok: an interval or port it cannot use is refused by name"

grpc_port=$(free_port) http_port=$(free_port)
for a in 127.0.0.2 127.0.0.3; do
  "$glad" --model "$model" --listen "$a:$grpc_port" --http_listen "$a:$http_port" --threads 1 2> "$work/glad-$a.log" &
  pids+=($!)
done
for a in 127.0.0.2 127.0.0.3; do
  for _ in $(seq 300); do grep -q "OpenAI HTTP API on" "$work/glad-$a.log" && break; sleep 0.1; done
  grep -q "OpenAI HTTP API on" "$work/glad-$a.log" || fail "replica $a did not start"
done
proxy_http=$(free_port) proxy_grpc=$(free_port)
echo 127.0.0.2 > "$work/addrs"
GLA_REPLICAS_NAME=glad-headless GLA_GRPC_PORT=$grpc_port GLA_HTTP_PORT=$http_port \
  GLA_PROXY_HTTP_LISTEN=127.0.0.1:$proxy_http GLA_PROXY_GRPC_LISTEN=127.0.0.1:$proxy_grpc \
  GLA_RESOLVE_EVERY_S=0.2 GLA_RESOLVE="cat $work/addrs" \
  "$here/deploy/nginx/gla-proxy-run.sh" "$here/deploy/nginx/gla.conf" "$work/proxy" 2> "$work/proxy.log" &
proxy=$!
pids+=($proxy)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$proxy_http/health" && break; sleep 0.1; done

served() {  # requests each replica has served (its own /metrics)
  for a in 127.0.0.2 127.0.0.3; do
    curl -s "http://$a:$http_port/metrics" | awk '/^gla_requests_total/ {s += $2} END {printf "%d ", s}'
  done
}
complete() {  # one short completion through the proxy; prints its HTTP status
  curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$proxy_http/v1/completions" \
    -H 'content-type: application/json' -d '{"model": "gla-brown", "prompt": "The jury said", "max_tokens": 2}'
}
burst() {  # N requests; prints how many each replica served meanwhile
  local n=$1 before after code
  before=($(served))
  for _ in $(seq "$n"); do
    code=$(complete)
    [ "$code" = 200 ] || fail "a request through the proxy answered $code"
  done
  after=($(served))
  echo "$((after[0] - before[0])) $((after[1] - before[1]))"
}
reloads() { grep -c "reloading" "$work/proxy.log"; }
follow() {  # ADDRESSES...: the name now resolves to these; waits for the proxy's reload
  local n
  n=$(reloads)
  printf '%s\n' "$@" > "$work/addrs"
  for _ in $(seq 100); do [ "$(reloads)" -gt "$n" ] && break; sleep 0.1; done
  [ "$(reloads)" -gt "$n" ] || fail "the proxy did not follow the name to: $*"
  sleep 0.5  # the new workers take over
}

read -r a b <<< "$(burst 10)"
[ "$a" = 10 ] && [ "$b" = 0 ] || fail "one address: $a and $b requests on the replicas (want 10 and 0)"
echo "ok: the name resolves to one replica: all 10 requests on it"
follow 127.0.0.2 127.0.0.3
read -r a b <<< "$(burst 30)"
[ "$a" -gt 0 ] && [ "$b" -gt 0 ] && [ $((a + b)) = 30 ] || fail "two addresses: $a and $b requests"
echo "ok: a replica added: 30 requests spread $a / $b"
follow 127.0.0.3
read -r a b <<< "$(burst 10)"
[ "$a" = 0 ] && [ "$b" = 10 ] || fail "the first replica gone from the name: $a and $b requests (want 0 and 10)"
echo "ok: a replica removed: none of 10 requests to it"
follow
code=$(complete)
[ "$code" = 502 ] || fail "no address: the proxy answered $code (want 502)"
kill -0 $proxy 2> /dev/null || fail "the proxy exited when the name had no address"
echo "ok: no replica: 502, the proxy stays up"
follow 127.0.0.2
read -r a b <<< "$(burst 5)"
[ "$a" = 5 ] || fail "a replica back: $a of 5 requests on it"
echo "ok: a replica back: served again"
kill -TERM $proxy
for _ in $(seq 100); do kill -0 $proxy 2> /dev/null || break; sleep 0.1; done
kill -0 $proxy 2> /dev/null && fail "the proxy did not stop on SIGTERM"
curl -s -o /dev/null "http://127.0.0.1:$proxy_http/health" && fail "nginx still answers after the proxy stopped"
echo "ok: SIGTERM stops the proxy and nginx"
