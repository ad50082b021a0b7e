"""CUDA-event timing shared by the fla anchor scripts (fla_gla_anchor.py, fla_forward_anchor.py).

They run on the GPU machine, where torch is installed; this module imports it.
"""
import statistics

import torch


def median_ms(step, calls=20):
    """The median of `calls` calls of step(), each timed between two CUDA events, in ms."""
    times = []
    for _ in range(calls):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        step()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)
