#!/usr/bin/env python3
"""Checks the shipping files against glad itself (no cluster here; deploy/container-test.sh runs the CPU image):
the Kubernetes manifests and the compose file parse; every flag and GLAD_* variable they use is a
flag `glad --help` lists; ports, probes, Services and the Prometheus target agree with the flags;
the grace periods outlast glad's drain; the Dockerfile builds through deploy/install-deps.sh (the
script CI runs) in a build stage, runs as a non-root user, exposes and health-checks the ports it
configures; the Grafana dashboard's queries name only metrics glad registers and are valid PromQL
(promtool); the autoscaler scales the Deployment on a metric glad has and the adapter rule serves.

    check_deploy.py --glad build/server/glad --root .      (exit 0, or one line per problem and 1)
"""
import argparse
import os
import re
import subprocess
import sys

import yaml

problems = []


def check(cond, what):
    if not cond:
        problems.append(what)


def glad_flags(glad):
    out = subprocess.run([glad, "--help"], capture_output=True, text=True, timeout=60)
    flags = set(re.findall(r"--([a-z_0-9]+)", out.stdout + out.stderr))
    check("listen" in flags and "metrics_listen" in flags, f"`{glad} --help` lists no --listen/--metrics_listen")
    return flags


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def args_map(args):
    """['--a', 'x', '--b=y'] -> {'a': 'x', 'b': 'y'}"""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            else:
                k, v = a[2:], args[i + 1] if i + 1 < len(args) else ""
                i += 1
            out[k] = v
        i += 1
    return out


def env_flag(name):
    return name[len("GLAD_"):].lower() if name.startswith("GLAD_") else None


def check_k8s(root, flags):
    deployment = list(yaml.safe_load_all(open(f"{root}/deploy/k8s/deployment.yaml")))
    services = [d for d in yaml.safe_load_all(open(f"{root}/deploy/k8s/service.yaml")) if d]
    dep = [d for d in deployment if d and d.get("kind") == "Deployment"]
    check(len(dep) == 1, "deployment.yaml: one Deployment")
    if not dep:
        return
    spec = dep[0]["spec"]["template"]["spec"]
    c = spec["containers"][0]
    args = args_map(c.get("args", []))
    for k in args:
        check(k in flags, f"deployment.yaml: --{k} is not a glad flag")
    for e in c.get("env", []):
        f = env_flag(e["name"])
        check(f is None or f in flags, f"deployment.yaml: {e['name']} names no glad flag")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports.get("grpc") == port_of(args.get("listen", "x:50051")), "deployment.yaml: grpc port != --listen")
    check(ports.get("metrics") == port_of(args.get("metrics_listen", "x:-1")),
          "deployment.yaml: metrics port != --metrics_listen")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(probe, {})
        check(p.get("grpc", {}).get("port") == ports.get("grpc"), f"deployment.yaml: {probe} is not a gRPC probe of the grpc port")
    grace = float(args.get("shutdown_grace_s", "10"))
    check(spec.get("terminationGracePeriodSeconds", 30) > grace,
          "deployment.yaml: terminationGracePeriodSeconds must outlast --shutdown_grace_s")
    check(spec.get("securityContext", {}).get("runAsNonRoot") is True, "deployment.yaml: runAsNonRoot")
    check("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}), "deployment.yaml: no GPU resource")
    ann = dep[0]["spec"]["template"]["metadata"].get("annotations", {})
    check(int(ann.get("prometheus.io/port", -1)) == ports.get("metrics"), "deployment.yaml: prometheus.io/port")
    check_state_store(root, args)
    check_proxy(root, ports, {s["metadata"]["name"]: s for s in services})
    names = {s["metadata"]["name"]: s for s in services}
    check("glad" in names and "glad-headless" in names, "service.yaml: Services glad and glad-headless")
    check(names.get("glad-headless", {}).get("spec", {}).get("clusterIP") == "None", "service.yaml: headless Service")
    labels = dep[0]["spec"]["template"]["metadata"]["labels"]
    for s in services:
        check(all(labels.get(k) == v for k, v in s["spec"]["selector"].items()),
              f"service.yaml: {s['metadata']['name']} selects no pod of the Deployment")
        for p in s["spec"]["ports"]:
            check(p["targetPort"] in ports, f"service.yaml: targetPort {p['targetPort']} is no container port")
            check(p["port"] == ports.get(p["targetPort"]), f"service.yaml: port {p['port']} != container port")


def check_state_store(root, args):
    """--state_store names the Service of redis.yaml, on its port; Redis there persists and never
    evicts part of a session (noeviction)."""
    url = args.get("state_store")
    check(url is not None, "deployment.yaml: no --state_store (replicas would not share sessions)")
    if url is None:
        return
    m = re.fullmatch(r"redis://([a-z0-9.-]+):(\d+)", url)
    check(m is not None, f"deployment.yaml: --state_store {url} is not redis://HOST:PORT")
    docs = [d for d in yaml.safe_load_all(open(f"{root}/deploy/k8s/redis.yaml")) if d]
    svc = [d for d in docs if d["kind"] == "Service"]
    sts = [d for d in docs if d["kind"] == "StatefulSet"]
    check(len(svc) == 1 and len(sts) == 1, "redis.yaml: one Service and one StatefulSet")
    if not m or not svc or not sts:
        return
    check(svc[0]["metadata"]["name"] == m.group(1).split(".")[0],
          f"deployment.yaml: --state_store host {m.group(1)} is not redis.yaml's Service {svc[0]['metadata']['name']}")
    check(any(p["port"] == int(m.group(2)) for p in svc[0]["spec"]["ports"]), "redis.yaml: the Service has not --state_store's port")
    labels = sts[0]["spec"]["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in svc[0]["spec"]["selector"].items()), "redis.yaml: the Service selects no Redis pod")
    rargs = sts[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    opt = {rargs[i][2:]: rargs[i + 1] for i in range(len(rargs) - 1) if rargs[i].startswith("--")}
    check(opt.get("appendonly") == "yes", "redis.yaml: appendonly yes (a restarted store keeps the sessions)")
    check(opt.get("maxmemory-policy") == "noeviction", "redis.yaml: maxmemory-policy noeviction (never half a session)")


def check_proxy(root, glad_ports, services):
    """proxy.yaml: nginx running deploy/nginx/gla-proxy-run.sh from the ConfigMap glad-proxy, which
    deploy/kustomization.yaml makes from the files in deploy/nginx/; it follows the headless Service's
    name on glad's gRPC and HTTP ports, and its Service exposes the ports nginx listens on."""
    docs = [d for d in yaml.safe_load_all(open(f"{root}/deploy/k8s/proxy.yaml")) if d]
    dep = [d for d in docs if d["kind"] == "Deployment"]
    svc = [d for d in docs if d["kind"] == "Service"]
    check(len(dep) == 1 and len(svc) == 1, "proxy.yaml: one Deployment and one Service")
    if not dep or not svc:
        return
    spec = dep[0]["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    config = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "glad-proxy"]
    check(len(config) == 1 and config[0] in mounts, "proxy.yaml: the ConfigMap glad-proxy is not mounted")
    where = mounts.get(config[0], "?") if config else "?"
    cmd = c.get("command", []) + c.get("args", [])
    check(f"{where}/gla-proxy-run.sh" in cmd and f"{where}/gla.conf" in cmd,
          "proxy.yaml: the container does not run gla-proxy-run.sh with gla.conf from the ConfigMap")
    name = env.get("GLA_REPLICAS_NAME") or ""
    headless = services.get("glad-headless", {})
    check(name.split(".")[0] == "glad-headless" and headless.get("spec", {}).get("clusterIP") == "None",
          f"proxy.yaml: GLA_REPLICAS_NAME {name!r} is not the headless Service glad-headless")
    for var, port in (("GLA_GRPC_PORT", "grpc"), ("GLA_HTTP_PORT", "http")):
        want = glad_ports.get(port)
        check(want is not None and str(env.get(var)) == str(want),
              f"proxy.yaml: {var} {env.get(var)} is not glad's {port} port {want}")
        check(any(p["targetPort"] == port for p in headless.get("spec", {}).get("ports", [])),
              f"service.yaml: the headless Service has no {port} port (the proxy reaches the pods on it)")
    listens = {"http": 8000, "grpc": 50051}  # gla.conf's (the script keeps them unless told otherwise)
    conf = open(f"{root}/deploy/nginx/gla.conf").read()
    check("listen 8000;" in conf and "listen 50051 http2;" in conf, "gla.conf: listens on 8000 and 50051 (http2)")
    cports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(cports == listens, f"proxy.yaml: container ports {cports} are not nginx's {listens}")
    for p in svc[0]["spec"]["ports"]:
        check(p["targetPort"] in cports and p["port"] == cports[p["targetPort"]],
              f"proxy.yaml: Service port {p['name']} is not a port nginx listens on")
    labels = dep[0]["spec"]["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in svc[0]["spec"]["selector"].items()), "proxy.yaml: the Service selects no proxy pod")
    check(spec.get("securityContext", {}).get("runAsNonRoot") is True, "proxy.yaml: runAsNonRoot")
    kust = yaml.safe_load(open(f"{root}/deploy/kustomization.yaml"))
    for r in kust.get("resources", []):
        check(os.path.exists(f"{root}/deploy/{r}"), f"kustomization.yaml: resource {r} does not exist")
    for f in ("k8s/deployment.yaml", "k8s/service.yaml", "k8s/redis.yaml", "k8s/proxy.yaml"):
        check(f in kust.get("resources", []), f"kustomization.yaml: {f} is not applied")
    gen = [g for g in kust.get("configMapGenerator", []) if g.get("name") == "glad-proxy"]
    check(len(gen) == 1 and sorted(gen[0].get("files", [])) == ["nginx/gla-proxy-run.sh", "nginx/gla.conf"],
          "kustomization.yaml: no ConfigMap glad-proxy from nginx/gla.conf and nginx/gla-proxy-run.sh")
    check(kust.get("generatorOptions", {}).get("disableNameSuffixHash") is True,
          "kustomization.yaml: the generated ConfigMap's name must stay glad-proxy (disableNameSuffixHash)")


def check_compose(root, flags):
    compose = yaml.safe_load(open(f"{root}/deploy/compose.yaml"))
    prom = yaml.safe_load(open(f"{root}/deploy/prometheus.yml"))
    glad = compose["services"]["glad"]
    env = glad.get("environment", {})
    for k in env:
        check(env_flag(k) in flags, f"compose.yaml: {k} names no glad flag")
    grpc_port, metrics_port = port_of(env["GLAD_LISTEN"]), port_of(env["GLAD_METRICS_LISTEN"])
    check(any(str(p).endswith(f":{grpc_port}") for p in glad.get("ports", [])), "compose.yaml: gRPC port not published")
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    check(f"glad:{metrics_port}" in targets, "prometheus.yml: does not scrape glad's metrics port")
    check("prometheus" in compose["services"], "compose.yaml: no prometheus service")
    grace = float(env.get("GLAD_SHUTDOWN_GRACE_S", "10"))
    check(float(str(glad.get("stop_grace_period", "10s")).rstrip("s")) > grace,
          "compose.yaml: stop_grace_period must outlast GLAD_SHUTDOWN_GRACE_S")


def check_dockerfile(root, flags):
    text = open(f"{root}/deploy/Dockerfile").read()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    check(len(stages) == 2 and stages[0][1] == "build" and stages[1][1] == "runtime",
          "Dockerfile: a build stage and a runtime stage")
    build, runtime = re.split(r"^FROM .* AS runtime", text, flags=re.M)
    check("deploy/install-deps.sh &&" in build or "deploy/install-deps.sh \\" in build,
          "Dockerfile: the build stage must install through deploy/install-deps.sh")
    check("install-deps.sh --runtime" in runtime, "Dockerfile: the runtime stage must use install-deps.sh --runtime")
    test_sh = open(f"{root}/deploy/test.sh").read()
    check("-G Ninja" in test_sh and "-G Ninja" in build, "Dockerfile: configures the build as deploy/test.sh does")
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    check(user and user[-1] not in ("root", "0"), "Dockerfile: runs as a non-root user")
    env = dict(re.findall(r"(GLAD_[A-Z_]+)=(\S+)", runtime))
    for k in env:
        check(env_flag(k) in flags, f"Dockerfile: {k} names no glad flag")
    exposed = set(int(p) for line in re.findall(r"^EXPOSE\s+(.*)$", runtime, re.M) for p in line.split())
    check(port_of(env.get("GLAD_LISTEN", "x:-1")) in exposed, "Dockerfile: GLAD_LISTEN's port not exposed")
    check(port_of(env.get("GLAD_METRICS_LISTEN", "x:-1")) in exposed, "Dockerfile: GLAD_METRICS_LISTEN's port not exposed")
    hc = re.search(r"HEALTHCHECK[^\n]*\n?[^\n]*CMD \[\"gla-cli\", \"health\", \"--addr\", \"127\.0\.0\.1:(\d+)\"", text)
    check(hc is not None and int(hc.group(1)) == port_of(env.get("GLAD_LISTEN", "x:-1")),
          "Dockerfile: HEALTHCHECK through gla-cli health on the gRPC port")
    check("models/gla-brown" in runtime and "GLA_DEFAULT_MODEL_DIR=/opt/gla/models/gla-brown" in build,
          "Dockerfile: the bundled model is the default")
    check(re.search(r"^VOLUME\s+/models", runtime, re.M) is not None, "Dockerfile: a model volume")
    check('ENTRYPOINT ["glad"]' in runtime, "Dockerfile: glad is the entrypoint")


def glad_metrics(root):
    """The metric families glad registers (server/metrics.cc), each with the series names a query can use."""
    source = open(f"{root}/server/metrics.cc").read()
    names = set(re.findall(r'"(gla_[a-z_0-9]+)"', source))
    series = set(names)
    for n in names:
        series |= {n + "_bucket", n + "_sum", n + "_count"}
    check("gla_queue_depth" in names, "server/metrics.cc: no gla_queue_depth (what the autoscaler follows)")
    return series


def check_dashboard(root, series, promtool):
    """deploy/grafana/gla-dashboard.json: every query names metrics glad has and is valid PromQL (promtool, with
    Grafana's variables given values)."""
    import json
    import os
    import tempfile
    dash = json.load(open(f"{root}/deploy/grafana/gla-dashboard.json"))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    check(len(exprs) >= 10, "gla-dashboard.json: fewer than ten queries")
    covered = set()
    for e in exprs:
        for m in re.findall(r"\b(gla_[a-z_0-9]+)", e):
            check(m in series, f"gla-dashboard.json: {m} is no metric of glad's (server/metrics.cc)")
            covered.add(re.sub(r"_(bucket|sum|count)$", "", m))
    for wanted in ("gla_generated_tokens_total", "gla_time_to_first_token_seconds", "gla_inter_token_latency_seconds",
                   "gla_queue_depth", "gla_state_slots", "gla_sessions", "gla_prefix_cache_lookups_total",
                   "gla_finetune_jobs", "gla_device_memory_bytes"):
        check(wanted in covered, f"gla-dashboard.json: no panel shows {wanted}")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"gla:dashboard_query_{i}",
         "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")} for i, e in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(rules, f)
    out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True, timeout=60)
    os.unlink(f.name)
    check(out.returncode == 0, f"gla-dashboard.json: promtool refuses a query: {out.stdout}{out.stderr}")


def check_autoscaler(root, series):
    hpa = yaml.safe_load(open(f"{root}/deploy/k8s/hpa.yaml"))
    dep = [d for d in yaml.safe_load_all(open(f"{root}/deploy/k8s/deployment.yaml")) if d and d.get("kind") == "Deployment"]
    target = hpa["spec"]["scaleTargetRef"]
    check(target["kind"] == "Deployment" and dep and target["name"] == dep[0]["metadata"]["name"],
          "hpa.yaml: scales no Deployment of deployment.yaml")
    metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    check(metrics == ["gla_queue_depth"], "hpa.yaml: scales on something else than gla_queue_depth")
    for m in metrics:
        check(m in series, f"hpa.yaml: {m} is no metric of glad's")
    adapter = yaml.safe_load(open(f"{root}/deploy/k8s/prometheus-adapter-rules.yaml"))
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    served = {r["name"]["as"] for r in rules}
    check(set(metrics) <= served, "prometheus-adapter-rules.yaml: serves no rule for the HPA's metric")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--glad", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--promtool", default="promtool")
    a = ap.parse_args()
    flags = glad_flags(a.glad)
    check_k8s(a.root, flags)
    check_compose(a.root, flags)
    check_dockerfile(a.root, flags)
    series = glad_metrics(a.root)
    check_dashboard(a.root, series, a.promtool)
    check_autoscaler(a.root, series)
    for p in problems:
        print(p)
    if not problems:
        print("deploy files agree with glad's flags and each other")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
