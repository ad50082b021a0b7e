"""Reading the benchmarks' JSON result files (GLA_BENCH_OUT=DIR), shared by the table scripts
(engine_table.py, fla_forward_anchor.py compare)."""
import json
import sys


def read_json(path):
    """The file's JSON value, or None after saying on stderr why it could not be read."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"{path}: not read ({e})", file=sys.stderr)
        return None
