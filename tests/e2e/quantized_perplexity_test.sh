#!/usr/bin/env bash
# Issue 23's accuracy bound for --weights int8 on the default model (a trained one): the held-out
# sample's perplexity (gla-eval perplexity, models/gla-brown/heldout_sample.txt, 6,370 scored tokens)
# may move by at most 1% against the model's own fp32 weights; measured 2026-12-05: 153.9014 ->
# 153.8935 (-0.005%). The same written as a pre-quantized checkpoint (gla-eval quantize) scores
# exactly the same, and FP8 E4M3 weights (gla-eval quantize --scheme fp8) stay within 1% too (measured:
# 154.0423, +0.09%; --weights fp8, rounding at load, exactly the same), and bf16 states drift by less
# than a 1% perplexity's worth (below). Then glad --weights int8 serves text and says so, and glad
# --weights fp8 and --state_dtype bf16 too. Exit 77 under the sanitizers (the default model's SentencePiece tokenizer
# cannot load there).
#   quantized_perplexity_test.sh GLA_EVAL GLAD GLA_CLI MODEL_DIR SANITIZED(0|1)
set -uo pipefail
eval_bin=$1 glad=$2 cli=$3 model=$4 sanitized=${5:-0}
. "$(dirname "$0")/sanitized_skip.sh"
skip_if_sanitized "$sanitized" "INT8 perplexity test"
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill $pid 2> /dev/null; wait 2> /dev/null; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

ppl() { "$eval_bin" perplexity --model "$model" --text "$model/heldout_sample.txt" --threads 2 --weights "$1" \
          | sed -n 's/^perplexity: //p'; }
native=$(ppl native) int8=$(ppl int8)
[ -n "$native" ] && [ -n "$int8" ] || fail "gla-eval perplexity gave no number (native '$native', int8 '$int8')"
echo "held-out perplexity: native $native, int8 $int8"
python3 -c "import sys; a, b = float('$native'), float('$int8'); sys.exit(0 if abs(b - a) / a <= 0.01 else 1)" \
  || fail "int8 moved the perplexity by more than 1% ($native -> $int8)"
echo "ok: int8 within 1% of fp32 ($(python3 -c "print(f'{(float(\"$int8\") / float(\"$native\") - 1) * 100:+.3f}%')"))"
"$eval_bin" perplexity --model "$model" --text "$model/heldout_sample.txt" --weights fp4 > "$work/bad.txt" 2>&1 \
  && fail "--weights fp4 was taken"
grep -q "must be native, int8 or fp8" "$work/bad.txt" || fail "--weights fp4 refused without saying why: $(cat "$work/bad.txt")"
echo "ok: an unknown --weights is refused by name"

# The same quantization written as a compressed-tensors checkpoint (gla-eval quantize) and loaded as
# it is: its native form is INT8, and it scores exactly as quantizing at load does.
"$eval_bin" quantize --model "$model" --out "$work/int8" > /dev/null || fail "gla-eval quantize"
prequantized=$("$eval_bin" perplexity --model "$work/int8" --text "$model/heldout_sample.txt" --threads 2 \
                 | sed -n 's/^perplexity: //p')
[ "$prequantized" = "$int8" ] || fail "the pre-quantized checkpoint scores $prequantized, quantizing at load $int8"
echo "ok: the pre-quantized checkpoint scores $prequantized, as --weights int8 does ($(du -k "$work/int8/model.safetensors" | cut -f1) KiB against $(du -k "$model/model.safetensors" | cut -f1))"
# FP8 E4M3 weights (float-quantized), run as fp32 of their values: the issue's bound, 1%.
"$eval_bin" quantize --model "$model" --out "$work/fp8" --scheme fp8 > /dev/null || fail "gla-eval quantize --scheme fp8"
fp8=$("$eval_bin" perplexity --model "$work/fp8" --text "$model/heldout_sample.txt" --threads 2 | sed -n 's/^perplexity: //p')
[ -n "$fp8" ] || fail "the FP8 checkpoint gave no perplexity"
python3 -c "import sys; a, b = float('$native'), float('$fp8'); sys.exit(0 if abs(b - a) / a <= 0.01 else 1)" \
  || fail "FP8 weights moved the perplexity by more than 1% ($native -> $fp8)"
echo "ok: FP8 weights within 1% of fp32 ($native -> $fp8)"
# --weights fp8 rounds the same weights at load: exactly the checkpoint's score.
fp8_at_load=$(ppl fp8)
[ "$fp8_at_load" = "$fp8" ] || fail "--weights fp8 scores $fp8_at_load, the FP8 checkpoint $fp8"
echo "ok: --weights fp8 scores $fp8_at_load, as the FP8 checkpoint does"

# bf16 states (alone and with INT8 weights): perplexity scoring rounds the state once per window, so
# the bound is on decode, where it is rounded at every step: the mean KL per token against fp32 over
# 1,024 greedy and 1,024 sampled tokens must stay below 0.01 nats (a 1% perplexity change; measured
# 2026-12-05 at 4,096 tokens: 1.5e-3 at most).
for flags in "--state-dtype bf16" "--weights int8 --state-dtype bf16"; do
  for temperature in 0 1; do
    # shellcheck disable=SC2086
    kl=$("$eval_bin" drift --model "$model" $flags --prompt "The jury said" --tokens 1024 --temperature $temperature \
           --threads 2 2> /dev/null | awk -F'|' '$2 ~ /bf16 states/ {gsub(/ /, "", $6); print $6}')
    [ -n "$kl" ] || fail "gla-eval drift $flags gave no KL"
    python3 -c "import sys; sys.exit(0 if float('$kl') < 0.01 else 1)" \
      || fail "$flags drifts by $kl nats per token (T=$temperature), over 0.01"
    echo "ok: $flags drifts $kl nats per token over 1,024 tokens (T=$temperature)"
  done
done

# start_glad LOG FLAGS...: glad on the default model (CPU) with FLAGS; sets pid and port.
start_glad() {
  local log=$1; shift
  "$glad" --model "$model" --listen 127.0.0.1:0 --backend cpu --threads 2 "$@" 2> "$log" &
  pid=$!
  port=""
  for _ in $(seq 300); do
    port=$(sed -n 's|.*glad: listening on 127.0.0.1:\([0-9]*\).*|\1|p' "$log")
    [ -n "$port" ] && return 0
    sleep 0.1
  done
  fail "glad $* did not start: $(cat "$log")"
}

start_glad "$work/glad.log" --weights int8
grep -q "int8 weights" "$work/glad.log" || fail "glad's start-up line does not say int8 weights"
"$cli" info --addr "127.0.0.1:$port" > "$work/info.txt" || fail "gla-cli info"
grep -q "int8 weights" "$work/info.txt" || fail "ModelInfo's device does not say int8 weights"
out=$("$cli" generate --addr "127.0.0.1:$port" --prompt "The jury said" --max-new-tokens 8) || fail "generate with int8 weights"
echo "ok: glad --weights int8 serves (\"The jury said\" -> $(grep -m1 . <<< "$out"))"
kill $pid; wait $pid 2> /dev/null; pid=""

# glad --weights fp8 (FP8 values, fp32 arithmetic on the CPU) serves and says so.
start_glad "$work/glad8.log" --weights fp8
grep -q "fp8 weights (fp32 arithmetic)" "$work/glad8.log" || fail "glad's start-up line does not say fp8 weights"
out=$("$cli" generate --addr "127.0.0.1:$port" --prompt "The jury said" --max-new-tokens 8) || fail "generate with fp8 weights"
echo "ok: glad --weights fp8 serves (\"The jury said\" -> $(grep -m1 . <<< "$out"))"
kill $pid; wait $pid 2> /dev/null; pid=""

# glad --state_dtype bf16 serves the trained model and says so.
start_glad "$work/glad16.log" --state_dtype bf16
"$cli" info --addr "127.0.0.1:$port" > "$work/info16.txt" || fail "gla-cli info (bf16 states)"
grep -q 'state_dtype: "bf16"' "$work/info16.txt" || fail "ModelInfo does not say bf16 states: $(cat "$work/info16.txt")"
out=$("$cli" generate --addr "127.0.0.1:$port" --prompt "The jury said" --max-new-tokens 8) || fail "generate with bf16 states"
echo "ok: glad --state_dtype bf16 serves (\"The jury said\" -> $(grep -m1 . <<< "$out"))"
