# Sourced by the deploy/ benchmarks that start glad with --listen 127.0.0.1:0:
#   port=$(glad_port LOG) || exit 1
# prints the gRPC port glad logged ("glad: listening on 127.0.0.1:PORT") within a minute, or says
# it did not start (with the log's tail) and fails.
glad_port() {
  local log=$1 p=""
  for _ in $(seq 600); do
    p=$(sed -n 's|.*glad: listening on 127.0.0.1:\([0-9]*\).*|\1|p' "$log")
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.1
  done
  { echo "glad did not start ($log):"; tail "$log"; } >&2
  return 1
}
