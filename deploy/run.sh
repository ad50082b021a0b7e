#!/usr/bin/env bash
# Installs what is missing, builds, starts glad on a model, shows one request through gla-cli,
# then keeps serving in the foreground (Ctrl-C or SIGTERM drains and stops it).
#   deploy/run.sh [MODEL_DIR] [LISTEN_ADDRESS]
# The default model is glad's own: models/gla-brown (7.2M parameters trained on the Brown Corpus by
# our training path; models/gla-brown/README.md). A model with tokenizer.model gets a text prompt,
# one without (the random-weight reference checkpoint, say) token ids.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/gla-brown}
listen=${2:-127.0.0.1:50051}
deploy/install-deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target glad gla-cli
log=$(mktemp)
build/server/glad --model "$model" --listen "$listen" 2> >(tee "$log" >&2) &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
for _ in $(seq 300); do grep -q "listening on" "$log" && break; kill -0 $pid 2>/dev/null || exit 1; sleep 0.1; done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log")
if build/clients/gla-cli info --addr "$addr" | grep -q "has_tokenizer: true"; then
  build/clients/gla-cli generate --addr "$addr" --prompt "The jury said" --max-new-tokens 40 --temperature 0.8 \
    --top-p 0.95 --seed 1
else
  build/clients/gla-cli generate --addr "$addr" --prompt-ids 1,17,42,99,7 --max-new-tokens 24 --ignore-eos 1
fi
echo "glad is serving on $addr (Ctrl-C to stop)"
wait $pid
