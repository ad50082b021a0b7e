#!/usr/bin/env python3
"""Per-operation breakdown of engine steps from an Nsight Compute CSV (deploy/engine-profile.sh).

  engine_profile_report.py NCU.csv PRESET LABEL[:ROWS]=STEP [LABEL[:ROWS]=STEP ...]

The CSV is `ncu --csv --metrics gpu__time_duration.sum,launch__grid_size` over gla-engine-bench on
a random PRESET model (1.3B or 340M). Every engine step starts with one EmbeddingGather kernel, so
the kernels are cut into steps there; LABEL=STEP names a step (0-based, negative counts from the
end) to break down, and ROWS its token rows (for the GEMMs' TFLOP/s; the lm_head of a prefill or
TTFT step has one row, of a decode step ROWS). A step's projection kernels (cuBLAS's and our own
projection kernels: the decode-sized, one-row and medium-M ones) are named by their place in a layer
(in_proj, o_proj, gate_up, down; lm_head last when it is one more), which holds while each product
is one kernel (the report says when it is not).
"""
import collections
import csv
import sys

# N x K of each projection (tests/support/random_model.h presets).
SHAPES = {
    "1.3B": {"in_proj": (6160, 2048), "o_proj": (2048, 2048), "gate_up": (11264, 2048), "down": (2048, 5632),
             "lm_head": (32000, 2048), "layers": 24},
    "340M": {"in_proj": (3088, 1024), "o_proj": (1024, 1024), "gate_up": (5632, 1024), "down": (1024, 2816),
             "lm_head": (32000, 1024), "layers": 24},
}
OURS = ("Kernel", "kernel")  # our kernels' names end in Kernel (kernels/cuda/*.cu)
# Our kernels that compute a whole projection (kernels/cuda/linear*.cu): named by place as cuBLAS's are.
OUR_PROJECTIONS = ("SmallMKernel", "SmallMMmaKernel", "OneRowStagedKernel", "MediumMKernel")
PROJ = ["in_proj", "o_proj", "gate_up", "down"]


def read(path):
    rows = collections.OrderedDict()
    unit_scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        k = r["ID"]
        e = rows.setdefault(k, {"name": r["Kernel Name"], "us": 0.0, "grid": ""})
        v = r["Metric Value"].replace(",", "")
        if r["Metric Name"] == "gpu__time_duration.sum":
            e["us"] = float(v) * unit_scale.get(r["Metric Unit"], 1e-3)
        elif r["Metric Name"] == "launch__grid_size":
            e["grid"] = v
    return list(rows.values())


def short(name):
    base = name.replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    base = base[5:] if base.startswith("void ") else base
    base = base.split("(")[0].split("<")[0].strip()
    return base.split("::")[-1][:48]


def is_ours(name):
    return any(short(name).endswith(s) for s in OURS) and "gemm" not in name.lower()


def is_projection(name):
    return not is_ours(name) or short(name) in OUR_PROJECTIONS


def steps_of(kernels):
    steps, cur = [], None
    for k in kernels:
        if "EmbeddingGather" in k["name"]:
            cur = []
            steps.append(cur)
        if cur is not None:
            cur.append(k)
    return steps


def main():
    if len(sys.argv) < 4 or sys.argv[2] not in SHAPES:
        sys.exit(__doc__ + f"\nPRESET must be one of {', '.join(SHAPES)}")
    path, preset, spec = sys.argv[1], sys.argv[2], sys.argv[3:]
    shapes = SHAPES[preset]
    steps = steps_of(read(path))
    if not steps:
        sys.exit(f"{path}: no EmbeddingGather kernel, so no engine step (did the benchmark run under ncu?)")
    print(f"# {len(steps)} steps; per step: kernels, total us")
    print("  " + " ".join(f"{i}:{len(s)}/{sum(k['us'] for k in s):.0f}" for i, s in enumerate(steps)))
    for item in spec:
        label, idx = item.split("=")
        tokens = int(label.split(":")[1]) if ":" in label else 0
        if not -len(steps) <= int(idx) < len(steps):
            sys.exit(f"{item}: step {idx} of {len(steps)}")
        step = steps[int(idx)]
        total = sum(k["us"] for k in step)
        n = sum(1 for k in step if is_projection(k["name"]))
        names = []
        layers = shapes["layers"]
        if n == 4 * layers:
            names = PROJ * layers
        elif n == 4 * layers + 1:
            names = PROJ * layers + ["lm_head"]
        by = collections.OrderedDict()
        gi = 0
        for k in step:
            if not is_projection(k["name"]):
                key = short(k["name"])
            else:
                who = short(k["name"]) if is_ours(k["name"]) else "cuBLAS"
                key = f"{who} {names[gi]}" if names else f"{who} {short(k['name'])}"
                gi += 1
            e = by.setdefault(key, [0, 0.0])
            e[0] += 1
            e[1] += k["us"]
        print(f"\n## {label} (step {idx}): {len(step)} kernels, {total:.1f} us summed"
              + ("" if names or n == 0 else f"; {n} projection kernels do not map one per projection"))
        print(f"{'operation':<50} {'calls':>6} {'us':>10} {'% step':>7} {'TFLOP/s':>8}")
        for key, (calls, us) in sorted(by.items(), key=lambda kv: -kv[1][1]):
            tf = ""
            proj = key.split(" ")[-1]
            if tokens and proj in shapes:
                N, K = shapes[proj]
                rows = 1 if proj == "lm_head" and not label.startswith("decode") else tokens
                tf = f"{2.0 * rows * N * K * calls / (us * 1e-6) / 1e12:8.1f}"
            print(f"{key:<50} {calls:>6} {us:>10.1f} {100 * us / total:>6.1f}% {tf:>8}")


if __name__ == "__main__":
    main()
