#!/usr/bin/env bash
# The deploy_files checker must fail on broken shipping files, not only pass on good ones: each
# case copies deploy/ to a scratch root, breaks one thing, and expects exit 1 naming the problem.
#   check_deploy_negative.sh GLAD SOURCE_ROOT
set -uo pipefail
glad=$1 src=$2
checker="$src/tests/deploy/check_deploy.py"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failures=0
expect_refused() {  # NAME SED_EXPR FILE PATTERN: apply SED_EXPR to FILE, expect PATTERN in the output
  local name=$1 expr=$2 file=$3 pattern=$4
  rm -rf "$scratch/root" && mkdir -p "$scratch/root/server" && cp -r "$src/deploy" "$scratch/root/"
  cp "$src/server/metrics.cc" "$scratch/root/server/"  # the metrics the dashboard and the autoscaler may name
  sed -i "$expr" "$scratch/root/deploy/$file"
  cmp -s "$src/deploy/$file" "$scratch/root/deploy/$file" && { echo "FAIL $name: the edit changed nothing"; failures=$((failures + 1)); return; }
  local out rc
  out=$(/usr/bin/python3 "$checker" --glad "$glad" --root "$scratch/root" 2>&1)
  rc=$?
  if [ $rc -ne 1 ] || ! grep -q -- "$pattern" <<< "$out"; then
    echo "FAIL $name: exit $rc, output: $out"
    failures=$((failures + 1))
  else
    echo "ok   $name: $(grep -- "$pattern" <<< "$out" | head -n 1)"
  fi
}
expect_refused "unknown flag in the Deployment" 's/"--slots", "64"/"--slotz", "64"/' k8s/deployment.yaml "slotz"
expect_refused "metrics port the Prometheus config does not scrape" 's/:9400/:9499/g' prometheus.yml "does not scrape"
expect_refused "Dockerfile running as root" 's/^USER .*/USER root/' Dockerfile "non-root"
expect_refused "a dashboard query on a metric glad does not have" 's/gla_queue_depth{/gla_queue_length{/' \
  grafana/gla-dashboard.json "gla_queue_length is no metric"
expect_refused "a dashboard query that is not PromQL" 's/sum(gla_running_sequences{/sum(gla_running_sequences{{/' \
  grafana/gla-dashboard.json "promtool refuses"
expect_refused "an autoscaler scaling another Deployment" 's/^    name: glad$/    name: gladx/' k8s/hpa.yaml \
  "scales no Deployment"
expect_refused "a state store that is not redis.yaml's Service" 's|redis://glad-redis:6379|redis://other-redis:6379|' \
  k8s/deployment.yaml "is not redis.yaml's Service"
expect_refused "a store that may evict part of a session" 's/"noeviction"/"allkeys-lru"/' k8s/redis.yaml "noeviction"
expect_refused "a proxy following glad on the wrong port" 's/value: "50051"/value: "50052"/' k8s/proxy.yaml \
  "GLA_GRPC_PORT 50052 is not glad's grpc port"
expect_refused "a proxy following another Service" 's/value: glad-headless\./value: glad./' k8s/proxy.yaml \
  "is not the headless Service"
expect_refused "the proxy's script missing from its ConfigMap" 's|      - nginx/gla-proxy-run.sh||' kustomization.yaml \
  "no ConfigMap glad-proxy"
exit $((failures != 0))
