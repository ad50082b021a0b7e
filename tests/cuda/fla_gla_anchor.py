#!/usr/bin/env python3
"""Times fla's chunk_gla forward + backward on this GPU at the fine-tuning issue's anchor shapes
(gla-1.3B heads: H=4, dk=256, dv=512; 16,384 tokens per call; bf16), so our kernel can be compared
with fla on the same device when the issue's H100 is not at hand.

    PYTHONPATH=DIR_WITH_FLA python3 tests/cuda/fla_gla_anchor.py

Needs torch, triton and an fla checkout on PYTHONPATH (not a dependency of this project: the GPU
machine has torch and triton; gpu-check.sh runs it only when an fla copy was carried, so a failed
import exits 1). Prints one
markdown row per shape: the median of 20 timed calls after 5 warm-up calls, CUDA events.
"""
import sys

import torch
from torch_timing import median_ms  # tests/cuda/torch_timing.py, beside this script


def main():
    try:
        from fla.ops.gla import chunk_gla
    except Exception as e:  # noqa: BLE001 - any import failure means "no fla here"
        # Only called where an fla checkout was carried: not finding it is a failure, not a pass.
        print(f"fla not importable ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; fla chunk_gla fwd+bwd, bf16, H=4 dk=256 dv=512, 16384 tokens per call")
    print("| shape | fla fwd+bwd ms (median of 20) | with h0 + final state ms |")
    print("| --- | --- | --- |")
    H, DK, DV = 4, 256, 512
    for B, T in ((8, 2048), (4, 4096), (2, 8192), (1, 16384)):
        torch.manual_seed(0)
        q = torch.randn(B, T, H, DK, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(B, T, H, DK, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, T, H, DV, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, DK, device="cuda", dtype=torch.float32)) / 16
        g = g.to(torch.bfloat16).requires_grad_(True)
        h0 = torch.zeros(B, H, DK, DV, device="cuda", dtype=torch.float32, requires_grad=True)
        do = torch.randn(B, T, H, DV, device="cuda", dtype=torch.bfloat16)
        dht = torch.randn(B, H, DK, DV, device="cuda", dtype=torch.float32)
        results = []
        for with_state in (False, True):
            def step():
                if with_state:
                    o, ht = chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
                    torch.autograd.backward((o, ht), (do, dht))
                else:
                    o, _ = chunk_gla(q, k, v, g)
                    o.backward(do)
            for _ in range(5):
                step()
            results.append(median_ms(step))
        print(f"| B{B} T{T} | {results[0]:.3f} | {results[1]:.3f} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
