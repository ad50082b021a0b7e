#!/bin/sh
# Runs deploy/nginx/gla.conf in front of every address a name resolves to (a headless Service's:
# one per ready glad pod), and follows the name: when the set of addresses changes (pods added by
# the autoscaler, removed, replaced) it rewrites the replica lists and reloads nginx. A reload
# starts new workers with the new lists; the old ones finish their streams first. Consistent
# hashing keeps each session on its replica unless that replica is the one that came or went.
#
#   gla-proxy-run.sh CONF WORK_DIR
#     CONF       gla.conf (may be read-only: a ConfigMap); WORK_DIR: writable (the lists, nginx's files)
#   GLA_REPLICAS_NAME  the name to follow (e.g. glad-headless.default.svc.cluster.local)
#   GLA_GRPC_PORT / GLA_HTTP_PORT   the replicas' gRPC and HTTP ports (50051 / 8000)
#   GLA_PROXY_GRPC_LISTEN / GLA_PROXY_HTTP_LISTEN   where nginx listens (50051 / 8000, or HOST:PORT)
#   GLA_RESOLVE_EVERY_S  seconds between lookups (5)
#   GLA_RESOLVE          a command printing the addresses, one per line (default: getent ahostsv4
#                        of the name; tests give their own)
# Runs in the foreground (nginx as its child); SIGTERM stops nginx gracefully, then the loop.
set -eu
conf=$1 work=$2
name=${GLA_REPLICAS_NAME:?GLA_REPLICAS_NAME: the name to follow}
grpc_port=${GLA_GRPC_PORT:-50051} http_port=${GLA_HTTP_PORT:-8000}
every=${GLA_RESOLVE_EVERY_S:-5}
# Numbers only: a port nginx cannot take would stop it at start, and an interval `sleep` refuses
# would turn the loop below into a busy one.
for v in "$grpc_port" "$http_port"; do
  case $v in ''|*[!0-9]*) echo "gla-proxy: port '$v' is not a number" >&2; exit 2 ;; esac
  [ "$v" -ge 1 ] && [ "$v" -le 65535 ] || { echo "gla-proxy: port $v is out of range" >&2; exit 2; }
done
case $every in ''|*[!0-9.]*|*.*.*|.) echo "gla-proxy: GLA_RESOLVE_EVERY_S '$every' is not a number of seconds" >&2; exit 2 ;; esac
awk -v v="$every" 'BEGIN { exit !(v > 0) }' || { echo "gla-proxy: GLA_RESOLVE_EVERY_S must be more than 0" >&2; exit 2; }
mkdir -p "$work/tmp"
sed -e "s|listen 8000;|listen ${GLA_PROXY_HTTP_LISTEN:-8000};|" \
    -e "s|listen 50051 http2;|listen ${GLA_PROXY_GRPC_LISTEN:-50051} http2;|" "$conf" > "$work/gla.conf"

resolve() {
  if [ -n "${GLA_RESOLVE:-}" ]; then sh -c "$GLA_RESOLVE"; else getent ahostsv4 "$name" | awk '{print $1}'; fi
}
# Writes the lists for the addresses (sorted, unique); with none, a server that is down, so nginx
# starts and answers 502 until a replica is ready. Prints the address set (what is compared).
render() {
  addrs=$(resolve 2> /dev/null | sort -u | grep -E '^[0-9a-fA-F:.]+$' || true)
  : > "$work/gla-grpc-replicas.conf.new"
  : > "$work/gla-http-replicas.conf.new"
  if [ -z "$addrs" ]; then
    echo "server 127.0.0.1:$grpc_port down;" >> "$work/gla-grpc-replicas.conf.new"
    echo "server 127.0.0.1:$http_port down;" >> "$work/gla-http-replicas.conf.new"
  fi
  for a in $addrs; do
    case $a in *:*) a="[$a]" ;; esac
    echo "server $a:$grpc_port;" >> "$work/gla-grpc-replicas.conf.new"
    echo "server $a:$http_port;" >> "$work/gla-http-replicas.conf.new"
  done
  mv "$work/gla-grpc-replicas.conf.new" "$work/gla-grpc-replicas.conf"
  mv "$work/gla-http-replicas.conf.new" "$work/gla-http-replicas.conf"
  echo $addrs
}

current=$(render)
echo "gla-proxy: $name -> ${current:-no address yet}" >&2
nginx -e stderr -p "$work/" -c "$work/gla.conf" -g "daemon off;" &
nginx_pid=$!
trap 'kill -QUIT $nginx_pid 2> /dev/null; wait $nginx_pid; exit 0' TERM INT
while kill -0 "$nginx_pid" 2> /dev/null; do
  sleep "$every" &
  wait $! || true
  next=$(render)
  if [ "$next" != "$current" ]; then
    echo "gla-proxy: $name -> ${next:-no address}; reloading" >&2
    kill -HUP "$nginx_pid"
    current=$next
  fi
done
wait "$nginx_pid"
