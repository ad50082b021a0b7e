#!/usr/bin/env bash
# Soak test (tests/soak/soak.py): mixed traffic against a glad on the CPU backend with the default
# model for N minutes (default 60), sampling glad's RSS, fds and threads, then a SIGTERM drain.
#   deploy/soak.sh [--minutes N] [--build-dir DIR]
# Builds nothing: it expects a build (default build/: build/server/glad with its SentencePiece shim
# and build/proto/python, as deploy/run.sh or deploy/test.sh leave them). It leaves glad.log,
# samples.tsv, summary.txt and summary.json in a fresh folder it prints; exit status 0 = PASS.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
minutes=60 build="$here/build"
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --build-dir) build=$(cd "$2" && pwd); shift 2 ;;
    *) echo "usage: deploy/soak.sh [--minutes N] [--build-dir DIR]" >&2; exit 2 ;;
  esac
done
for f in "$build/server/glad" "$build/proto/python/gla/v1/gla_pb2.py"; do
  [ -e "$f" ] || { echo "soak: $f is missing: build first (deploy/run.sh or deploy/test.sh); this script builds nothing" >&2; exit 2; }
done
out=$(mktemp -d "${TMPDIR:-/tmp}/glad-soak.XXXXXX")
echo "soak: output folder $out"
status=0
/usr/bin/python3 "$here/tests/soak/soak.py" --build-dir "$build" --minutes "$minutes" --out "$out" || status=$?
echo "soak: glad.log, samples.tsv, summary.txt and summary.json are in $out"
exit $status
