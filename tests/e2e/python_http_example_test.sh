#!/usr/bin/env bash
# Runs clients/python/example_http.py (plain `requests`) against glad's OpenAI HTTP API on the
# default model (it has a tokenizer: text prompts and chat). Exit 77 (ctest: skipped, saying why)
# under the sanitizers, where glad cannot load SentencePiece.
#   python_http_example_test.sh GLAD MODEL_DIR SANITIZED(0|1)
set -uo pipefail
glad=$1 model=$2 sanitized=${3:-0}
here=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$sanitized" = 1 ]; then
  echo "python HTTP example skipped under AddressSanitizer: glad loads SentencePiece with RTLD_DEEPBIND, which the"
  echo "sanitizer runtime refuses; the release build runs this test"
  exit 77
fi
log=$(mktemp)
"$glad" --model "$model" --listen 127.0.0.1:0 --http_listen 127.0.0.1:0 --threads 1 2> "$log" &
pid=$!
trap 'kill $pid 2> /dev/null || true; rm -f "$log"' EXIT
port=""
for _ in $(seq 300); do
  port=$(sed -n 's|.*OpenAI HTTP API on http://127.0.0.1:\([0-9]*\)/v1.*|\1|p' "$log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "glad did not start:"; cat "$log"; exit 1; }
/usr/bin/python3 "$here/clients/python/example_http.py" --url "http://127.0.0.1:$port/v1" --max-tokens 12 || exit 1
kill -TERM $pid
wait $pid
echo "glad exited with status $?"
