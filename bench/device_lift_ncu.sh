#!/usr/bin/env bash
# One call on a lent GPU machine: Nsight Compute on the decode step's three lifts (bench/gpu_lift_ncu.py), with
# warp-state sampling at the shortest interval. Writes $OUT/ncu_CASE.txt (details page) and $OUT/ncu_CASE_sass.csv
# (source page: SASS with its samples per stall reason); bench/lift_stalls.py summarizes them per phase (--blocks: the launch's blocks, 39 for the 4096-wide lifts, 104 for glu).
set -uo pipefail
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
STEP=none bash bench/device_gpu_steps.sh
export LIFTEXPORT_CUDA_LIB=${LIFTEXPORT_CUDA_LIB:-/tmp/bc/libliftquant_cuda.so} PYTHONPATH=/tmp/site:/tmp/b
# CASE: rms, plain, glu (the lift) or gemv_glu (the gate/up GEMV before the glu case's lift)
for c in ${CASES:-rms plain glu gemv_glu}; do
  k=lift_tiled; [[ $c == gemv_* ]] && k=gemv_tma
  ncu --clock-control none --cache-control none -k regex:$k --launch-skip 3 --launch-count 1 \
    --warp-sampling-interval 0 --section SpeedOfLight --section WarpStateStats --section SourceCounters \
    --section SchedulerStats --section InstructionStats --section LaunchStats --section Occupancy \
    -f -o /tmp/ncu_$c python /tmp/b/gpu_lift_ncu.py ${c#gemv_} > /tmp/ncu_$c.log 2>&1 || tail -5 /tmp/ncu_$c.log
  ncu -i /tmp/ncu_$c.ncu-rep --page details > "$OUT/ncu_$c.txt" 2>&1
  ncu -i /tmp/ncu_$c.ncu-rep --page source --csv --print-source sass > "$OUT/ncu_${c}_sass.csv" 2>&1
  head -c 300 "$OUT/ncu_${c}_sass.csv"; echo
done
