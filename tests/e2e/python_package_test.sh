#!/usr/bin/env bash
# clients/python as a package: installs it into a throwaway venv as a user would (pip, offline,
# with Debian's setuptools), checks that gla_client and the gla.v1 stubs generated at package
# build time import from the venv, then talks to a real glad through the installed package.
#   python_package_test.sh GLAD MODEL_DIR
set -euo pipefail
glad=$1 model=$2
here=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT

# The package next to proto/, as in the repository, but in $tmp: pip builds in the source tree
# (build/, *.egg-info), and the checkout stays as it is.
mkdir -p "$tmp/src/clients"
cp -r "$here/clients/python" "$tmp/src/clients/python"
rm -rf "$tmp/src/clients/python/build" "$tmp/src/clients/python"/*.egg-info
ln -s "$here/proto" "$tmp/src/proto"

/usr/bin/python3 -m venv --system-site-packages "$tmp/venv"
py=$tmp/venv/bin/python
# --no-index: no network; --no-build-isolation: the system's setuptools and wheel build it.
"$py" -m pip install --quiet --no-index --no-build-isolation "$tmp/src/clients/python"
rm -rf "$tmp/src"  # from here on only the installed copy exists

cd "$tmp"  # nothing of the checkout on sys.path
env -u GLA_PY_STUBS "$py" - "$tmp/venv" <<'EOF'
import os, sys
import gla_client
from gla.v1 import gla_pb2, gla_pb2_grpc
venv = os.path.realpath(sys.argv[1]) + os.sep
for module in (gla_client, gla_pb2, gla_pb2_grpc):
    assert os.path.realpath(module.__file__).startswith(venv), f"{module.__name__} from {module.__file__}"
assert hasattr(gla_pb2_grpc, "GlaStub") and hasattr(gla_pb2_grpc, "FineTuneStub")
print("installed:", gla_client.__file__, gla_pb2.__file__)
EOF

log=$tmp/glad.log
"$glad" --model "$model" --listen 127.0.0.1:0 --threads 1 2>"$log" &
pid=$!
for _ in $(seq 300); do grep -q "listening on" "$log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
[ -n "$port" ] || { echo "glad did not start:"; cat "$log"; exit 1; }

# The installed client against glad: greedy, so the unary and streamed ids must agree.
env -u GLA_PY_STUBS "$py" - "127.0.0.1:$port" <<'EOF'
import sys
from gla_client import GlaClient
client = GlaClient(sys.argv[1])
print("model:", client.info().model_dir)
unary = client.generate(token_ids=[1, 17, 42], max_new_tokens=6, ignore_eos=True)
streamed = [i for chunk in client.stream(token_ids=[1, 17, 42], max_new_tokens=6, ignore_eos=True)
            for i in chunk.token_ids]
assert len(unary.token_ids) == 6, unary
assert list(unary.token_ids) == streamed, (list(unary.token_ids), streamed)
print("generate and stream agree:", streamed)
EOF
# The example, with the stubs of the installed package (no GLA_PY_STUBS, no build tree).
env -u GLA_PY_STUBS "$py" "$here/clients/python/example.py" --addr "127.0.0.1:$port" --max-new-tokens 4
kill -TERM "$pid"
wait "$pid"
pid=""
