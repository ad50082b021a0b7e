# Sourced by the e2e scripts that run glad on the default model (it has a tokenizer):
#   skip_if_sanitized SANITIZED(0|1) "WHAT"
# exits 77 (ctest: skipped, saying why) under the sanitizers, where glad cannot load SentencePiece.
skip_if_sanitized() {
  if [ "$1" = 1 ]; then
    echo "$2 skipped under AddressSanitizer: glad loads SentencePiece with RTLD_DEEPBIND, which the"
    echo "sanitizer runtime refuses (the default model has a tokenizer); the release build runs this test"
    exit 77
  fi
}
