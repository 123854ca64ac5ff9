#!/usr/bin/env bash
# Quality runs of the example model on a lent GPU machine, in two or three consecutive `run` calls
# (the model travels in two parts; the machine is released after 30 s idle, so the calls follow at once):
#   1. carry .carry/a (modelpart_aa, modelpart_ac, austen/*.txt):   bash bench/device_calib.sh stage
#   2. carry .carry/b (modelpart_ab, gguf + transformers wheels):    VARIANTS="..." bash bench/device_calib.sh start
#   3. (only if 2 ran out of time)                                   bash bench/device_calib.sh wait
# or, as step 2, timed `liftexport model` runs one after another (bench/cli_runs.py, default arguments
# plus each run's; res_timed.json in $OUT/results.tgz):  RUNS="s24=--bits 2.4;s30=--bits 3.0" bash bench/device_calib.sh timed
# or, as step 2, the domain check (issue 3): the 2.4-bit model calibrated on its own samples and on the five
# novels, each evaluated on persuasion.txt and on fresh samples of the full-precision model (bench/selfgen_text.py,
# seed 4242), with the full-precision model itself on both:                      bash bench/device_calib.sh domain
# (ONLY=self or ONLY=text: one of the two quantizations)
# or, as step 2, the CUDA engine on the real model (issue 7): the CUDA library built, the example model quantized at
# 2.4 bits with defaults, then bench/engine_check.py on it ($OUT/engine_check.json):  bash bench/device_calib.sh engine
# VARIANTS: space-separated CONFIG:NAME=JSON (JSON as bench/calib_ablation.py takes it; the string TEXT
# inside it expands to the five calibration novels, never persuasion.txt). Each variant runs as its own
# process in parallel, writing /tmp/res_NAME.json and .log (timed runs: /tmp/res_timed.json); all of them
# come back as $OUT/results.tgz, refreshed while waiting.
set -uo pipefail
M=/tmp/m
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
TEXT='"/tmp/m/austen/emma.txt", "/tmp/m/austen/mansfieldpark.txt", "/tmp/m/austen/northangerabbey.txt", "/tmp/m/austen/prideprejudice.txt", "/tmp/m/austen/sensesensibility.txt"'
setup() {  # the model reassembled, the wheels and the package into /tmp/site, bench/ out of the tree
  cat $M/modelpart_aa .carry/b/modelpart_ab $M/modelpart_ac > $M/SmolLM2-135M-Instruct.Q4_1.gguf
  pip install -q --no-deps --target /tmp/site .carry/b/*.whl 2>&1 | grep -i error
  pip install -q --no-deps --no-build-isolation --upgrade --target /tmp/site . 2>&1 | grep -i error
  rm -rf /tmp/b && cp -r bench /tmp/b
}
case "${1:-}" in
  stage)
    mkdir -p $M && cp -r .carry/a/. $M/ && ls $M ;;
  domain)
    setup && cd /tmp
    S=$M/SmolLM2-135M-Instruct.Q4_1.gguf; novels=$(ls $M/austen/*.txt | grep -v persuasion | sed 's/^/--calib-text /')
    export PYTHONPATH=/tmp/site
    [ "${ONLY:-self}" = text ] || python -m liftexport.cli model $S --bits 2.4 -o /tmp/self24.lqt > /tmp/dom_self.log 2>&1 &
    [ "${ONLY:-text}" = self ] || python -m liftexport.cli model $S --bits 2.4 $novels -o /tmp/text24.lqt > /tmp/dom_text.log 2>&1 &
    python /tmp/b/selfgen_text.py --src $S --out /tmp/selfgen.txt 2>&1 | grep -v Warn | tail -1
    wait
    for m in $S /tmp/self24.lqt /tmp/text24.lqt; do [ -f $m ] || continue; for t in $M/austen/persuasion.txt /tmp/selfgen.txt; do
      echo "$(basename $m) $(basename $t) $(python -m liftexport.cli eval $m --text $t --json 2>/dev/null | tail -1)"
    done; done | tee $OUT/domain_check.txt ;;
  engine)
    setup
    cmake -S kernels/cuda -B /tmp/bc -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null && cmake --build /tmp/bc -j 16 | grep -i error
    cd /tmp && export PYTHONPATH=/tmp/site:/tmp/b LIFTEXPORT_CUDA_LIB=/tmp/bc/libliftquant_cuda.so
    python -m liftexport.cli model $M/SmolLM2-135M-Instruct.Q4_1.gguf --bits 2.4 -o /tmp/smol-24_10.lqt 2>&1 | tail -2
    python /tmp/b/engine_check.py /tmp/smol-24_10.lqt --json $OUT/engine_check.json 2>&1 | grep -v Warn | cut -c1-400 ;;
  start|timed)
    setup
    if [ "$1" = timed ]; then
      args=(); IFS=';' read -ra runs <<< "$RUNS"; for r in "${runs[@]}"; do args+=(--run "$r"); done
      (cd /tmp && PYTHONPATH=/tmp/site setsid nohup python /tmp/b/cli_runs.py --src $M/SmolLM2-135M-Instruct.Q4_1.gguf \
        --eval-text $M/austen/persuasion.txt --workdir /tmp/w --out /tmp/res_timed.json "${args[@]}" \
        > /tmp/res_timed.log 2>&1 &)
      sleep 5
    fi
    for v in ${VARIANTS:-}; do
      cfg=${v%%:*}; rest=${v#*:}; name=${rest%%=*}; js=${rest#*=}; js=${js//TEXT/$TEXT}
      (cd /tmp && PYTHONPATH=/tmp/site setsid nohup python /tmp/b/calib_ablation.py --src $M/SmolLM2-135M-Instruct.Q4_1.gguf \
        --eval-text $M/austen/persuasion.txt --config "$cfg" --variant "$name=$js" --out /tmp/res_$name.json \
        > /tmp/res_$name.log 2>&1 &)
    done
    "$0" wait ;;
  wait)
    # results go to $OUT as one tar (a call returns at most 8 files), refreshed every poll, so a call cut off
    # by its time limit or the session's device time still brings back what had finished
    save() { (cd /tmp && ls res_* >/dev/null 2>&1 && tar czf "$OUT/results.tgz" res_*); }
    for _ in $(seq 1 ${WAIT_STEPS:-110}); do save; pgrep -f "calib_ablation.py|cli_runs.py" >/dev/null || break; sleep 5; done
    save
    pgrep -f "calib_ablation.py|cli_runs.py" >/dev/null && echo "still running" || echo "all done"
    for f in /tmp/res_*.json; do [ "$f" = /tmp/res_timed.json ] && { cat "$f"; continue; }
      python -c "import json,sys; [print(r['variant'], r['ppl'], r['seconds']) for r in json.load(open('$f'))['rows']]"; done
    tail -n 3 /tmp/res_*.log | cut -c1-300 ;;
  *) echo "usage: $0 stage|start|timed|domain|engine|wait"; exit 2 ;;
esac
