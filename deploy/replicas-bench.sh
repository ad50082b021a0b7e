#!/usr/bin/env bash
# Issue 22's scale-out measurement (docs/scale-out.md): gla-loadgen through deploy/nginx/gla.conf
# (gRPC) against 1, then N glad replicas sharing a redis-server, on loopback, each replica on
# --threads T BLAS threads. Prints gla-loadgen's table for each replica count.
#   deploy/replicas-bench.sh [MODEL_DIR] [REPLICA_COUNTS] [THREADS]   (default models/gla-brown "1 3" 1)
# GLAD_EXTRA: more glad flags; LOADGEN_ARGS: gla-loadgen's (default below).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/glad-port.sh
model=${1:-models/gla-brown} counts=${2:-1 3} threads=${3:-1}
glad=${GLAD:-build/server/glad} loadgen=${GLA_LOADGEN:-build/clients/gla-loadgen}
args=${LOADGEN_ARGS:---concurrency 8,32 --requests 96 --prompt-len 32 --max-new-tokens 32}
work=$(mktemp -d)
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; pids=(); }
trap 'stop_all; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo "$(nproc) CPUs here ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); replicas on --threads $threads"
for n in $counts; do
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" > /dev/null &
  pids+=($!)
  : > "$work/gla-grpc-replicas.conf"
  : > "$work/gla-http-replicas.conf"
  for r in $(seq "$n"); do
    # shellcheck disable=SC2086
    "$glad" --model "$model" --listen 127.0.0.1:0 --threads "$threads" --state_store "redis://127.0.0.1:$redis_port" \
      ${GLAD_EXTRA:-} 2> "$work/glad$r.log" &
    pids+=($!)
  done
  for r in $(seq "$n"); do
    p=$(glad_port "$work/glad$r.log") || exit 1
    echo "server 127.0.0.1:$p;" >> "$work/gla-grpc-replicas.conf"
    echo "server 127.0.0.1:$p;" >> "$work/gla-http-replicas.conf"  # (unused here; the config includes it)
  done
  proxy_http=$(free_port) proxy_grpc=$(free_port)
  sed -e "s|listen 8000;|listen 127.0.0.1:$proxy_http;|" -e "s|listen 50051 http2;|listen 127.0.0.1:$proxy_grpc http2;|" \
    deploy/nginx/gla.conf > "$work/gla.conf"
  mkdir -p "$work/tmp"
  nginx -e stderr -p "$work/" -c "$work/gla.conf" -g "daemon off;" 2> "$work/nginx.log" &
  pids+=($!)
  sleep 0.5
  echo "== $n replica(s) behind nginx"
  # shellcheck disable=SC2086
  "$loadgen" --addr "127.0.0.1:$proxy_grpc" $args | grep -E "^\|"
  stop_all
done
