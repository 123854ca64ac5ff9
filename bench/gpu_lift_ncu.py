"""Profiling target for ncu: the decode step's three lifts of a Llama-2-7B-shaped layer at 24/10, each launched
as the step launches it (static weights, one token, fp16) after the GEMV that precedes it there.

    ncu --clock-control none -k regex:lift_tiled --launch-skip 3 --launch-count 1 --section WarpStateStats \\
        --section SourceCounters python bench/gpu_lift_ncu.py rms|plain|glu

bench/device_lift_ncu.sh runs it for each case (and for the GEMV before the SiLU*up lift); bench/lift_stalls.py
summarizes the source pages per phase.
"""

import sys

import torch

from gpu_lift_phases import CASES, lift_step

KEYS = {"rms": 0, "plain": 1, "glu": 2}


def main(case):
    _, (N, Kin), (Np, Kp), pro = CASES[KEYS[case]]
    _, step = lift_step(N, Kin, Np, Kp, pro)
    for _ in range(5):  # the profiler takes the 4th lift (ncu --launch-skip 3 --launch-count 1)
        step()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main(sys.argv[1])
