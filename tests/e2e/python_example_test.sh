#!/usr/bin/env bash
# Runs clients/python/example.py, example_finetune.py and example_session.py with Debian's /usr/bin/python3 against a
# real glad on loopback (with an adapter directory, so that it can fine-tune).
#   python_example_test.sh GLAD MODEL_DIR STUBS_DIR
set -euo pipefail
glad=$1 model=$2 stubs=$3
here=$(cd "$(dirname "$0")/../.." && pwd)
log=$(mktemp)
adapters=$(mktemp -d)
"$glad" --model "$model" --listen 127.0.0.1:0 --threads 1 --adapter_dir "$adapters" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$log" "$adapters"' EXIT
for _ in $(seq 300); do grep -q "listening on" "$log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
[ -n "$port" ] || { echo "glad did not start:"; cat "$log"; exit 1; }
GLA_PY_STUBS=$stubs /usr/bin/python3 "$here/clients/python/example.py" --addr "127.0.0.1:$port" --max-new-tokens 12
GLA_PY_STUBS=$stubs /usr/bin/python3 "$here/clients/python/example_finetune.py" --addr "127.0.0.1:$port"
GLA_PY_STUBS=$stubs /usr/bin/python3 "$here/clients/python/example_session.py" --addr "127.0.0.1:$port"
kill -TERM $pid
wait $pid
echo "glad exited with status $?"
