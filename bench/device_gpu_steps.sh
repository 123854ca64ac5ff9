#!/usr/bin/env bash
# One call on a lent GPU machine (the `run` tool: repository root as working directory, results under $OUT):
# builds libliftquant_cuda.so for sm_90 into /tmp/bc, installs the package into /tmp/site (the in-tree
# liftexport/ lacks the mapped subpackages), copies bench/ and tests/ out of the tree, then runs the steps
# named in STEP (comma-separated):
#   test     the GPU kernel tests (binary route, decode attention) and the CUDA engine against the reference,
#            log to $OUT/test_cuda_binary.log
#   probe    bench/gpu_binary_probe.py --gemv-only, PDL off and on ($OUT/probe_gemv_pdl{0,1}.json)
#   prof     bench/gpu_decode_profile.py with LIFTEXPORT_PDL=0 ($OUT/gpu_decode_profile.json)
#   timeline bench/gpu_decode_profile.py --timeline with programmatic launch on, as the engine runs: each kernel's
#            share of a step's critical path ($OUT/gpu_decode_timeline.json)
#   e2e      bench/gpu_e2e.py --steps 96 ($OUT/gpu_e2e.json)
#   gemv     bench/gpu_gemv.py, the full table (about 90 s on the H100)
#   roof     bench/gpu_read_roofline.py: the best plain read of one GEMV's bytes ($OUT/gpu_read_roofline.json)
#   trace    a -DLQ_TRACE build (/tmp/bv/trace) and bench/gpu_block_trace.py: where and when each block of a layer's
#            lifts and GEMVs ran ($OUT/gpu_block_trace.json)
#   variants the library built once per LIB_VARIANTS entry ("name=nvcc flags;..." e.g. "base=;pipe=-DLQ_PIPE=1"),
#            each timed with the probe's --gemv-only at 24/10 batch 1 (PDL on; $OUT/var_NAME_PASS.json)
#   e2evar   the same libraries, each timed with bench/gpu_e2e.py --steps 96 --no-hf (models: E2E_RATES), two alternating passes
#            ($OUT/e2e_NAME_PASS.json); with E2E_ENVS ("ename=VAR=VALUE ...;..."), each library once per entry,
#            with those variables set ($OUT/e2e_NAMEENAME_PASS.json)
#   A LIB_VARIANTS name may carry its source folder: "old@bench/old_cuda=" builds bench/old_cuda (a copy of
#   kernels/cuda from another commit) instead of kernels/cuda.
# e.g. STEP=test,prof,timeline,e2e bash bench/device_gpu_steps.sh   (about 3 minutes on the H100)
set -uo pipefail
REPO=$PWD
cmake -S kernels/cuda -B /tmp/bc -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null && cmake --build /tmp/bc -j 16 | grep -i error
pip install -q --no-deps --no-build-isolation --upgrade --target /tmp/site . 2>&1 | grep -i error
rm -rf /tmp/b /tmp/t /tmp/spec && cp -r bench /tmp/b && cp -r tests /tmp/t && cp -r spec /tmp/spec
export LIFTEXPORT_CUDA_LIB=/tmp/bc/libliftquant_cuda.so PYTHONPATH=/tmp/site:/tmp/b
OUT=${OUT:-/tmp/out} && mkdir -p "$OUT"
cd /tmp
has() { [[ ",${STEP:-}," == *",$1,"* ]]; }
if has test; then
  TRITON_INTERPRET=0 python -m pytest -q -o addopts="" /tmp/t/kernels/test_cuda_binary.py \
    /tmp/t/kernels/test_decode_attention.py "/tmp/t/runtime/test_engine.py::test_verify_engine_on_cuda" 2>&1 \
    | tail -5 | tee "$OUT/test_cuda_binary.log"
fi
if has probe; then
  for p in 0 1; do
    LIFTEXPORT_PDL=$p python /tmp/b/gpu_binary_probe.py --gemv-only --rates 24/10 --batches 1 \
      --shapes 28672x8192,8192x8192,4096x4096,8192x28672 --json "$OUT/probe_gemv_pdl$p.json" 2>&1 | grep -v Warn
  done
fi
if has prof; then
  LIFTEXPORT_PDL=0 python /tmp/b/gpu_decode_profile.py --json "$OUT/gpu_decode_profile.json" 2>&1 | grep -v Warn | cut -c1-150
fi
if has timeline; then
  python /tmp/b/gpu_decode_profile.py --timeline --json "$OUT/gpu_decode_timeline.json" 2>&1 | grep -v Warn \
    | sed -n '/timeline/,/^$/p' | cut -c1-130
fi
if has e2e; then
  python /tmp/b/gpu_e2e.py --steps 96 --json "$OUT/gpu_e2e.json" 2>&1 | grep -v Warn | tail -12
fi
if has gemv; then
  python /tmp/b/gpu_gemv.py --json "$OUT/gpu_gemv.json" 2>&1 | grep -v Warn > "$OUT/gpu_gemv.log"; tail -40 "$OUT/gpu_gemv.log"
fi
if has roof; then
  python /tmp/b/gpu_read_roofline.py --json "$OUT/gpu_read_roofline.json" 2>&1 | grep -v Warn > "$OUT/gpu_read_roofline.log"
  head -4 "$OUT/gpu_read_roofline.log"
fi
if has trace; then
  (cmake -S $REPO/kernels/cuda -B /tmp/bv/trace -DCMAKE_CUDA_ARCHITECTURES=90 "-DCMAKE_CUDA_FLAGS=-DLQ_TRACE" >/dev/null \
    && cmake --build /tmp/bv/trace -j 16 | grep -i error)
  LIFTEXPORT_CUDA_LIB=/tmp/bv/trace/libliftquant_cuda.so python /tmp/b/gpu_block_trace.py \
    --json "$OUT/gpu_block_trace.json" 2>&1 | grep -v Warn
fi
if has variants || has e2evar; then
  IFS=';' read -ra vs <<< "${LIB_VARIANTS:-base=}"
  for v in "${vs[@]}"; do
    head=${v%%=*}; flags=${v#*=}; name=${head%%@*}; src=kernels/cuda
    [[ $head == *@* ]] && src=${head#*@}
    (cmake -S $REPO/$src -B /tmp/bv/$name -DCMAKE_CUDA_ARCHITECTURES=90 "-DCMAKE_CUDA_FLAGS=$flags" >/dev/null \
      && cmake --build /tmp/bv/$name -j 4 | grep -i error) &
  done
  wait
fi
if has variants; then
  for rep in 1 2; do for v in "${vs[@]}"; do
    head=${v%%=*}; name=${head%%@*}
    echo "== $name (pass $rep)"
    LIFTEXPORT_CUDA_LIB=/tmp/bv/$name/libliftquant_cuda.so python /tmp/b/gpu_binary_probe.py --gemv-only --rates 24/10 \
      --batches ${VAR_BATCHES:-1} --shapes ${VAR_SHAPES:-28672x8192,8192x8192,8192x28672,4096x4096} \
      --json "$OUT/var_${name}_$rep.json" 2>&1 | grep -v Warn | grep -v "^ *$"
  done; done
fi
if has e2evar; then
  IFS=';' read -ra es <<< "${E2E_ENVS:-=}"
  for rep in 1 2; do for v in "${vs[@]}"; do for ev in "${es[@]}"; do
    head=${v%%=*}; name=${head%%@*}; ename=${ev%%=*}; envs=${ev#*=}
    echo "== e2e $name$ename (pass $rep)"
    env $envs LIFTEXPORT_CUDA_LIB=/tmp/bv/$name/libliftquant_cuda.so python /tmp/b/gpu_e2e.py --steps 96 --no-hf \
      --rates ${E2E_RATES:-16/8,24/10,24/8,fp16} --json "$OUT/e2e_${name}${ename}_$rep.json" 2>&1 | grep -v Warn | grep "tok/s"
  done; done; done
fi
