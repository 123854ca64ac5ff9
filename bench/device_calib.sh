#!/usr/bin/env bash
# Quality runs of the example model on a lent GPU machine, in two or three consecutive `run` calls
# (the model travels in two parts; the machine is released after 30 s idle, so the calls follow at once):
#   1. carry .carry/a (modelpart_aa, modelpart_ac, austen/*.txt):   bash bench/device_calib.sh stage
#   2. carry .carry/b (modelpart_ab, gguf + transformers wheels):    VARIANTS="..." bash bench/device_calib.sh start
#   3. (only if 2 ran out of time)                                   bash bench/device_calib.sh wait
# VARIANTS: space-separated CONFIG:NAME=JSON (JSON as bench/calib_ablation.py takes it; the string TEXT
# inside it expands to the five calibration novels, never persuasion.txt). Each variant runs as its own
# process in parallel; results go to $OUT/NAME.json and $OUT/NAME.log.
set -uo pipefail
M=/tmp/m
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
TEXT='"/tmp/m/austen/emma.txt", "/tmp/m/austen/mansfieldpark.txt", "/tmp/m/austen/northangerabbey.txt", "/tmp/m/austen/prideprejudice.txt", "/tmp/m/austen/sensesensibility.txt"'
case "${1:-}" in
  stage)
    mkdir -p $M && cp -r .carry/a/. $M/ && ls $M ;;
  start)
    cat $M/modelpart_aa .carry/b/modelpart_ab $M/modelpart_ac > $M/SmolLM2-135M-Instruct.Q4_1.gguf
    pip install -q --no-deps --target /tmp/site .carry/b/*.whl 2>&1 | grep -i error
    pip install -q --no-deps --no-build-isolation --upgrade --target /tmp/site . 2>&1 | grep -i error
    rm -rf /tmp/b && cp -r bench /tmp/b
    for v in ${VARIANTS}; do
      cfg=${v%%:*}; rest=${v#*:}; name=${rest%%=*}; js=${rest#*=}; js=${js//TEXT/$TEXT}
      (cd /tmp && PYTHONPATH=/tmp/site setsid nohup python /tmp/b/calib_ablation.py --src $M/SmolLM2-135M-Instruct.Q4_1.gguf \
        --eval-text $M/austen/persuasion.txt --config "$cfg" --variant "$name=$js" --out /tmp/res_$name.json \
        > /tmp/res_$name.log 2>&1 &)
    done
    "$0" wait ;;
  wait)
    for _ in $(seq 1 ${WAIT_STEPS:-110}); do pgrep -f calib_ablation.py >/dev/null || break; sleep 5; done
    cp /tmp/res_* "$OUT"/ 2>/dev/null
    pgrep -f calib_ablation.py >/dev/null && echo "still running" || echo "all done"
    for f in /tmp/res_*.json; do python -c "import json,sys; [print(r['variant'], r['ppl'], r['seconds']) for r in json.load(open('$f'))['rows']]"; done
    tail -n 3 /tmp/res_*.log | cut -c1-300 ;;
  *) echo "usage: $0 stage|start|wait"; exit 2 ;;
esac
