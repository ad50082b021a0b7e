#!/usr/bin/env bash
# Runs clients/python/example_http.py (plain `requests`) against glad's OpenAI HTTP API on the
# default model (it has a tokenizer: text prompts and chat). Exit 77 (ctest: skipped, saying why)
# under the sanitizers, where glad cannot load SentencePiece.
#   python_http_example_test.sh GLAD MODEL_DIR SANITIZED(0|1)
set -uo pipefail
glad=$1 model=$2 sanitized=${3:-0}
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/sanitized_skip.sh"
skip_if_sanitized "$sanitized" "python HTTP example"
log=$(mktemp)
tls=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill $pid 2> /dev/null; rm -rf "$log" "$tls"' EXIT
# run SCHEME [GLAD FLAGS...] -- [EXAMPLE FLAGS...]: glad on free ports, the example against it, then
# a clean SIGTERM.
run() {
  local scheme=$1 glad_flags=() example_flags=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do glad_flags+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  example_flags=("$@")
  "$glad" --model "$model" --listen 127.0.0.1:0 --http_listen 127.0.0.1:0 --threads 1 "${glad_flags[@]}" 2> "$log" &
  pid=$!
  local port=""
  for _ in $(seq 300); do
    port=$(sed -n "s|.*OpenAI HTTP API on $scheme://127.0.0.1:\([0-9]*\)/v1.*|\1|p" "$log")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "glad ($scheme) did not start:"; cat "$log"; exit 1; }
  /usr/bin/python3 "$here/clients/python/example_http.py" --url "$scheme://127.0.0.1:$port/v1" --max-tokens 12 \
    "${example_flags[@]}" || exit 1
  kill -TERM $pid
  wait $pid
  echo "glad ($scheme) exited with status $?"
  pid=""
}
run http

# The same over HTTPS: a throwaway CA and a server certificate for 127.0.0.1 signed by it (a
# leaf, as urllib3 2's strict verification wants), the CA trusted through --cacert.
{
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 1 -subj /CN=gla-test-ca &&
    openssl req -newkey rsa:2048 -nodes -keyout "$tls/key.pem" -out "$tls/server.csr" -subj /CN=127.0.0.1 &&
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$tls/ext" &&
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
      -CAserial "$tls/ca.srl" -out "$tls/cert.pem" -days 1 -extfile "$tls/ext"
} > /dev/null 2>&1 || { echo "openssl could not make the certificates"; exit 1; }
run https --tls_cert "$tls/cert.pem" --tls_key "$tls/key.pem" -- --cacert "$tls/ca.pem"
