#!/usr/bin/env python3
"""Issue 19's one-run table from gla-engine-bench result files (GLA_BENCH_OUT=DIR: engine-<name>.json).

    python3 tests/cuda/engine_table.py [--all] engine-gla-340M.json engine-gla-1.3B.json ...

Prints, per model, the device, date, commit and the ceilings measured in the run, then one markdown
row per measure: the floor (from those ceilings), ours, the ratio, the issue's target and whether it
is met (greedy decode, prefill and TTFT; --all: the sampled decode rows too). What bounds each miss
is not in the file: docs/performance.md "Where the engine stands" adds it by hand. More files of one
model (several runs) add a column of their times, so the runs' spread is seen beside the table.
Exits 1 when a file cannot be read or holds no rows.
"""
import sys

from result_files import read_json  # tests/cuda/result_files.py, beside this script


def floor_ms(row):
    # of_floor = floor / ours for every row gla-engine-bench writes (times and rates alike).
    return row["time_ms"] * row["of_floor"]


def main(argv):
    args = argv[1:]
    show_all = "--all" in args
    paths = [a for a in args if a != "--all"]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    runs = {}  # model -> list of result files, in the order given
    for path in paths:
        data = read_json(path)
        if data is None:
            return 1
        rows = data.get("rows") if isinstance(data, dict) else None
        if not rows or not all(isinstance(r, dict) and {"measure", "time_ms", "of_floor"} <= r.keys() for r in rows) \
                or not {"device", "date", "commit", "ceilings"} <= data.keys():
            print(f"{path}: not a gla-engine-bench result (no rows, or a row without measure, time_ms, of_floor)",
                  file=sys.stderr)
            return 1
        runs.setdefault(data.get("model", data["bench"]), []).append(data)
    for model, files in runs.items():
        first = files[0]
        c = first["ceilings"]
        print(f"{model}: {first['device']}, {first['date']}, commit {first['commit']}; copy "
              f"{c['copy_bytes_per_s'] / 1e12:.2f} TB/s, bf16 GEMM {c['bf16_gemm_flops'] / 1e12:.0f} TFLOP/s "
              f"(measured in the run); batch-1 exchanges level {first.get('persistent_tagged_exchange', '?')}")
        print()
        extra = "".join(f" | run {i + 2}" for i in range(len(files) - 1))
        print(f"| measure | floor | ours | of floor | target{extra} |")
        print("| --- | --- | --- | --- | ---" + " | ---" * (len(files) - 1) + " |")
        for row in first["rows"]:
            if not show_all and "top-p" in row["measure"]:
                continue
            others = ""
            for other in files[1:]:
                match = [r for r in other["rows"] if r["measure"] == row["measure"]]
                others += f" | {match[0]['time_ms']:.3f} ms" if match else " | -"
            print(f"| {row['measure']} | {floor_ms(row):.3f} ms | {row['time_ms']:.3f} ms | {100 * row['of_floor']:.1f}% | "
                  f"{row.get('target', '-')}{others} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
