#!/usr/bin/env python3
"""Issue 19's forward target, timed in one device call: fla's chunk_gla forward against ours.

    PYTHONPATH=DIR_WITH_FLA python3 tests/cuda/fla_forward_anchor.py time OUT.json
    python3 tests/cuda/fla_forward_anchor.py compare gla-prefill.json FLA.json [FLA.json ...]

`time` runs fla's chunk_gla forward (bf16 in and out, no autograd) at the four anchor shapes (16,384
tokens per call as B8 x T2048 ... B1 x T16384) and both head shapes (gla-1.3B: H=4, dk=256, dv=512;
gla-340M: H=4, dk=128, dv=256), without and with an initial state and the final state (ours always
reads and writes states in pool slots), three rounds of the median of 20 calls after 5 warm-ups,
and writes the fastest of each to OUT.json. Each process autotunes fla's Triton kernels afresh (about
two minutes; its picks move its time by up to ±15%), so gpu-check.sh runs it more than once.

`compare` reads our chunkwise kernel's times from gla_prefill_bench's result file (GLA_BENCH_OUT,
same device call) and the fastest fla time of every shape over all the FLA.json files, and prints
one table: ours, fla, the ratio, the issue's target (3x) and whether it is met. Ours reads and writes
fp32 rows (twice fla's bytes); the ratio is taken against fla's faster form (without states).

Needs torch, triton and an fla checkout on PYTHONPATH for `time` (not a dependency of this project:
gpu-check.sh runs it only when an fla copy was carried); a failed import exits 1.
"""
import json
import re
import sys

from result_files import read_json  # tests/cuda/result_files.py, beside this script

ANCHORS = ((8, 2048), (4, 4096), (2, 8192), (1, 16384))
HEADS = ((4, 256, 512), (4, 128, 256))  # gla-1.3B, gla-340M
TARGET = 3.0


def time_fla(out_path):
    import torch

    from torch_timing import median_ms  # tests/cuda/torch_timing.py, beside this script

    try:
        from fla.ops.gla import chunk_gla
    except Exception as e:  # noqa: BLE001 - any import failure means "no fla here"
        print(f"fla not importable ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    rows = []
    for H, DK, DV in HEADS:
        for B, T in ANCHORS:
            torch.manual_seed(0)
            q = torch.randn(B, T, H, DK, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(B, T, H, DK, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(B, T, H, DV, device="cuda", dtype=torch.bfloat16)
            g = (torch.nn.functional.logsigmoid(torch.randn(B, T, H, DK, device="cuda")) / 16).to(torch.bfloat16)
            h0 = torch.zeros(B, H, DK, DV, device="cuda", dtype=torch.float32)
            best = []
            for with_state in (False, True):
                def step():
                    with torch.no_grad():
                        if with_state:
                            chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
                        else:
                            chunk_gla(q, k, v, g)
                for _ in range(5):
                    step()
                best.append(min(median_ms(step) for _ in range(3)))
            row = {"dk": DK, "dv": DV, "B": B, "T": T, "fla_ms": best[0], "fla_states_ms": best[1]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    with open(out_path, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    return 0


def compare(ours_path, fla_paths):
    ours = read_json(ours_path)
    if not isinstance(ours, dict) or not isinstance(ours.get("rows"), list):
        print(f"{ours_path}: not gla_prefill_bench's result file", file=sys.stderr)
        return 1
    fla = {}
    runs = 0
    for path in fla_paths:
        data = read_json(path)
        if data is None:
            continue
        try:
            times = {(r["dk"], r["dv"], r["B"], r["T"]): (float(r["fla_ms"]), float(r["fla_states_ms"]))
                     for r in data["rows"]}
        except (KeyError, TypeError, ValueError) as e:
            print(f"{path}: not an fla timing file ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        runs += 1
        for key, (plain, with_states) in times.items():
            old = fla.get(key, (float("inf"), float("inf")))
            fla[key] = (min(old[0], plain), min(old[1], with_states))
    if not fla:
        print("no fla times read: nothing to compare", file=sys.stderr)
        return 1
    print(f"device: {ours['device']}; date {ours['date']}; commit {ours['commit']}; "
          f"fla: the fastest of {runs} run(s), each autotuned afresh")
    print("| heads | B x T | ours ms (fp32 rows) | fla ms (bf16) | fla with states ms | ours vs fla | target | met |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    worst = float("inf")
    missing = 0
    for r in ours["rows"]:
        m = re.search(r"dk=(\d+), dv=(\d+)", str(r.get("shape", "")))
        if m is None or not {"B", "T", "chunk_ms"} <= r.keys():
            print(f"{ours_path}: a row without its heads, B, T or chunk_ms: {r}", file=sys.stderr)
            missing += 1
            continue
        key = (int(m.group(1)), int(m.group(2)), r["B"], r["T"])
        if key not in fla:
            print(f"| {r['shape']} | {r['B']} x {r['T']} | {r['chunk_ms']:.3f} | (not timed) | | | | |")
            missing += 1
            continue
        plain, with_states = fla[key]
        ratio = plain / r["chunk_ms"]
        worst = min(worst, ratio)
        print(f"| {r['shape']} | {r['B']} x {r['T']} | {r['chunk_ms']:.3f} | {plain:.3f} | {with_states:.3f} | "
              f"{ratio:.2f}x | {TARGET:.0f}x | {'yes' if ratio >= TARGET else 'no'} |")
    lowest = f"lowest ratio {worst:.2f}x" if worst != float("inf") else "no shape compared"
    print(f"{lowest} against the target {TARGET:.0f}x" + (f"; {missing} shape(s) not compared" if missing else ""))
    return 0 if missing == 0 else 1


def main(argv):
    if len(argv) == 3 and argv[1] == "time":
        return time_fla(argv[2])
    if len(argv) >= 4 and argv[1] == "compare":
        return compare(argv[2], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
