#!/usr/bin/env bash
# The container, for real (CI's last step): builds deploy/Dockerfile's CPU image and serves from it.
#
#   deploy/container-test.sh     (root, or a user of the docker group with a daemon running)
#
# 1. installs the host tools (deploy/install-deps.sh --container: Debian's docker.io, debootstrap);
# 2. starts dockerd (log in $GLA_DOCKERD_LOG) when no daemon answers, and stops it at the end;
# 3. makes the Debian 12 base image gla-debian:12 with debootstrap from Debian's mirror (no Docker
#    Hub here), unless the local engine already has it;
# 4. builds the image: docker build --build-arg GLA_VARIANT=cpu --build-arg BASE_IMAGE=gla-debian:12;
# 5. runs it with the gRPC and metrics ports published on free 127.0.0.1 ports, waits for the
#    image's HEALTHCHECK to say healthy;
# 6. from the host: gla-cli health, a Generate of 8 tokens, a scrape of /metrics that counts it;
# 7. docker stop (SIGTERM; timeout past the image's drain grace): exit code 0 and glad's
#    "draining" and "stopped" lines in the container's log.
# Each step prints its time; any failure stops the script with the reason (and the container's
# log / health log where there is one), exit 1.
#
# Environment: GLA_BASE_IMAGE (gla-debian:12), GLA_IMAGE (gla-glad:cpu-test), GLA_DEBIAN_MIRROR
# (http://deb.debian.org/debian), GLA_DOCKERD_ARGS (extra dockerd flags, e.g. --storage-driver=vfs),
# GLA_DOCKERD_LOG, GLA_CLI (the host's gla-cli; default build/clients/gla-cli, else the image's).
set -euo pipefail
cd "$(dirname "$0")/.."

base=${GLA_BASE_IMAGE:-gla-debian:12}
image=${GLA_IMAGE:-gla-glad:cpu-test}
mirror=${GLA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
name=gla-container-test-$$
work=$(mktemp -d /tmp/gla-container-test.XXXXXX)
dockerd_log=${GLA_DOCKERD_LOG:-$work/dockerd.log}
dockerd_pid=""
container=""
export DOCKER_BUILDKIT=0  # the classic builder: the same with Debian's 20.10 CLI and a newer one without buildx

start=$SECONDS step_name="" step_start=$SECONDS
times=()
step() {  # ends the running step (its time), starts NAME
  if [ -n "$step_name" ]; then
    times+=("$(printf '%5d s  %s' $((SECONDS - step_start)) "$step_name")")
    echo "== $step_name: done in $((SECONDS - step_start)) s"
  fi
  step_name=$1 step_start=$SECONDS
  [ -n "$step_name" ] && echo "== $(date -u +%H:%M:%S) $step_name ..."
  return 0
}
fail() {
  echo "container-test: FAILED in '$step_name': $*" >&2
  exit 1
}
cleanup() {
  local rc=$?
  set +e
  if [ -n "$container" ]; then
    if [ $rc -ne 0 ]; then
      echo "--- container log ($container):" >&2
      docker logs "$container" 2>&1 | tail -n 50 >&2
    fi
    docker rm -f "$container" >/dev/null 2>&1
  fi
  if [ -n "$dockerd_pid" ]; then
    echo "stopping the dockerd this script started (pid $dockerd_pid)"
    kill -TERM "$dockerd_pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$dockerd_pid" 2>/dev/null && { echo "dockerd did not stop; killing it" >&2; kill -KILL "$dockerd_pid"; }
    if [ $rc -ne 0 ]; then
      echo "--- dockerd log tail ($dockerd_log):" >&2
      tail -n 20 "$dockerd_log" >&2
      if [ "$dockerd_log" = "$work/dockerd.log" ]; then
        cp "$dockerd_log" /tmp/gla-container-test-dockerd.log && echo "(whole log: /tmp/gla-container-test-dockerd.log)" >&2
      fi
    fi
  fi
  # a debootstrap that failed half-way may leave its /proc and /sys mounted in the root it made
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$work"
  if [ $rc -eq 0 ]; then
    echo "container-test: passed in $((SECONDS - start)) s"
    printf '%s\n' "${times[@]}"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "host tools (install-deps.sh --container)"
deploy/install-deps.sh --container

step "docker daemon"
if docker info >/dev/null 2>&1; then
  echo "a daemon answers: $(docker info -f '{{.ServerVersion}} {{.Driver}}')"
else
  [ "$(id -u)" -eq 0 ] || fail "no docker daemon answers, and starting one needs root"
  command -v dockerd >/dev/null || fail "no dockerd (Debian's docker.io provides it)"
  # shellcheck disable=SC2086  # GLA_DOCKERD_ARGS is a list of flags
  dockerd ${GLA_DOCKERD_ARGS:-} >"$dockerd_log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || fail "dockerd exited"
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || fail "dockerd did not answer within 60 s"
  echo "started dockerd (pid $dockerd_pid, log $dockerd_log): $(docker info -f '{{.ServerVersion}} {{.Driver}}')"
fi

step "base image $base"
if docker image inspect "$base" >/dev/null 2>&1; then
  echo "present ($(docker image inspect -f '{{.Created}}' "$base")); not rebuilt"
else
  command -v debootstrap >/dev/null || fail "no debootstrap"
  root=$work/rootfs
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; fail "debootstrap"; }
  # The sources of Docker Hub's debian:12: the release, its updates and security updates.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror}-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/*
  tar --numeric-owner -C "$root" -c . \
    | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$root"
  echo "imported $base: $(docker image inspect -f '{{.Size}}' "$base" | awk '{printf "%.0f MB", $1 / 1e6}')"
fi

step "docker build (GLA_VARIANT=cpu) -> $image"
docker build --force-rm -f deploy/Dockerfile --build-arg BASE_IMAGE="$base" --build-arg GLA_VARIANT=cpu -t "$image" . \
  || fail "docker build"
echo "image $image: $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"

step "docker run, until healthy"
container=$(docker run -d --name "$name" -p 127.0.0.1::50051 -p 127.0.0.1::9400 "$image") || fail "docker run"
grpc=$(docker port "$name" 50051/tcp) && grpc=$(grep -m1 '^127\.0\.0\.1:' <<<"$grpc") || fail "no published gRPC port"
metrics=$(docker port "$name" 9400/tcp) && metrics=$(grep -m1 '^127\.0\.0\.1:' <<<"$metrics") \
  || fail "no published metrics port"
echo "container $name: gRPC on $grpc, metrics on $metrics"
for _ in $(seq 180); do  # the HEALTHCHECK's start period is 60 s; its first check comes after 10 s
  health=$(docker inspect -f '{{.State.Health.Status}}' "$name")
  [ "$health" = healthy ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] \
    || fail "the container exited (code $(docker inspect -f '{{.State.ExitCode}}' "$name"))"
  [ "$health" = unhealthy ] && break
  sleep 1
done
if [ "$health" != healthy ]; then
  docker inspect -f '{{json .State.Health}}' "$name" | python3 -m json.tool >&2
  fail "health status '$health' (after 180 s)"
fi
echo "healthy: $(docker inspect -f '{{(index .State.Health.Log 0).Output}}' "$name" | tr -d '\n')"
grep -q "glad: listening on 0.0.0.0:50051 .*backend cpu" <<<"$(docker logs "$name" 2>&1)" \
  || fail "no 'listening on 0.0.0.0:50051 (backend cpu' line in the log"
uid=$(docker exec "$name" id -u)
[ "$uid" = 10001 ] || fail "glad runs as uid $uid, not 10001"

step "generate and scrape from the host"
cli=${GLA_CLI:-build/clients/gla-cli}
if [ ! -x "$cli" ]; then  # the image's own gla-cli, run on the host (same Debian 12 libraries)
  cp_from=$(docker create "$image")
  docker cp "$cp_from:/usr/local/bin/gla-cli" "$work/gla-cli" && docker rm "$cp_from" >/dev/null
  cli=$work/gla-cli
  ! ldd "$cli" | grep "not found" || fail "the image's gla-cli lacks libraries here (deploy/install-deps.sh --runtime)"
fi
echo "client: $cli"
"$cli" health --addr "$grpc" --timeout-s 10 || fail "gla-cli health from the host"
gen=$("$cli" generate --addr "$grpc" --prompt "Once upon a time" --max-new-tokens 8 --ignore-eos 1 --seed 1 \
      --timeout-s 120 2>&1) || { echo "$gen" >&2; fail "gla-cli generate from the host"; }
echo "$gen"
generated=$(sed -n 's/.* completion_tokens=\([0-9]*\).*/\1/p' <<<"$gen")
[ "$generated" = 8 ] || fail "generated '$generated' tokens, not 8"
python3 - "http://$metrics/metrics" <<'EOF' || fail "metrics scrape"
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
def value(name, **labels):
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")) == labels:
            return float(m.group(3))
    return None
found = {
    'gla_requests_total{method="Generate",code="OK"}': value("gla_requests_total", method="Generate", code="OK"),
    "gla_generated_tokens_total": value("gla_generated_tokens_total"),
}
print("scraped %d lines: %s" % (len(text.splitlines()), ", ".join("%s %s" % kv for kv in found.items())))
if list(found.values()) != [1, 8]:
    sys.exit("expected 1 Generate request ended OK and 8 generated tokens")
EOF

step "docker stop (SIGTERM), drain"
grace=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$name" | sed -n 's/^GLAD_SHUTDOWN_GRACE_S=//p')
timeout=$(( ${grace%.*} + 15 ))
docker stop -t "$timeout" "$name" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
echo "stopped (timeout $timeout s over a drain grace of ${grace} s): exit code $code, OOM-killed $(docker inspect -f '{{.State.OOMKilled}}' "$name")"
[ "$code" = 0 ] || fail "glad exited with $code after SIGTERM, not 0"
log=$(docker logs "$name" 2>&1)
tail -n 3 <<<"$log"
grep -q "glad: SIGTERM: draining (grace " <<<"$log" || fail "no 'glad: SIGTERM: draining' line in the log"
grep -q "glad: stopped" <<<"$log" || fail "no 'glad: stopped' line in the log"
docker rm "$name" >/dev/null
container=""

step ""
