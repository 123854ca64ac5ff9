#!/usr/bin/env bash
# Prepares .carry/ (git-ignored) for runs on a lent GPU machine that has no network and takes at most
# ~64 MiB per call: the example model, the Austen texts and wheels in chunks of 60 MB, one folder per
# call. Usage: bench/device_carry.sh [--ort-gpu] [--lqt FILE.lqt]
#
# On the device, consecutive calls (each within 30 s of the previous one, or /tmp is gone):
#   model:   carry .carry/a:  mkdir -p /tmp/m && cp .carry/a/modelpart_* /tmp/m/ && cp -r .carry/a/austen /tmp/m/
#            carry .carry/b:  cat /tmp/m/modelpart_aa .carry/b/modelpart_ab /tmp/m/modelpart_ac > /tmp/m/MODEL.gguf
#                             pip install --no-index --no-deps --target /tmp/site .carry/b/*.whl
#   ort-gpu: carry .carry/ortwN (N = 1..), each: mkdir -p /tmp/c && cp .carry/ortwN/* /tmp/c/; then
#            cat /tmp/c/ortw_* > /tmp/onnxruntime_gpu-...whl; pip install --no-index --no-deps --target /tmp/ortsite
#   always:  pip install --no-deps --no-build-isolation --target /tmp/site . ; export PYTHONPATH=/tmp/site;
#            run Python from outside the repository (cd /tmp): the in-tree liftexport/ lacks liftexport.formats.
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNK=60000000
model=$(.venv/bin/python -c "from liftexport.models.load import example_model_path; print(example_model_path())")
mkdir -p .carry/a .carry/b
split -b 48000000 -a 2 "$model" /tmp/modelpart_
mv /tmp/modelpart_aa /tmp/modelpart_ac .carry/a/ && mv /tmp/modelpart_ab .carry/b/
cp -r ../shared/data/austen .carry/a/
.venv/bin/pip download -q --no-deps gguf -d .carry/b
.venv/bin/pip download -q --no-deps "transformers==$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')" -d .carry/b
if [[ "${1:-}" == "--ort-gpu" ]]; then
  shift
  d=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 onnxruntime-gpu==1.31.1 -d "$d"
  split -b $CHUNK -d -a 1 "$d"/onnxruntime_gpu-*.whl "$d/ortw_"
  i=1
  for f in "$d"/ortw_*; do mkdir -p ".carry/ortw$i" && mv "$f" ".carry/ortw$i/"; i=$((i + 1)); done
fi
if [[ "${1:-}" == "--lqt" ]]; then
  split -b $CHUNK -d -a 1 "$2" /tmp/lqt_
  i=1
  for f in /tmp/lqt_*; do mkdir -p ".carry/lqt$i" && mv "$f" ".carry/lqt$i/"; i=$((i + 1)); done
fi
du -sh .carry/*
