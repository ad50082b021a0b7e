#!/usr/bin/env bash
# Installs what is missing, builds, and runs a GLA model end to end on the CPU: greedy
# generation from the reference checkpoint (a random-weight fla model; it has no tokenizer,
# so prompt and output are token ids). The gRPC server replaces this with `glad` (issue 3).
#   deploy/run.sh [MODEL_DIR] [PROMPT_IDS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-../shared/reference/gla-tiny/model}
prompt=${2:-1,17,42,99,7}
deploy/install-deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target gla-eval
build/clients/gla-eval generate --model "$model" --prompt-ids "$prompt" --max-new-tokens 24
