#!/usr/bin/env bash
# On the GPU machine (the `run` tool's device), from the repository root, with .whl carried (gpu_wheels.sh):
#   bash benchmark/gpu_session.sh            # results under $OUT/gpu (or ./gpu-session without $OUT)
# Installs the carried wheels into /tmp/site, then runs benchmark/gpu_session.py within ~8 minutes.
set -uo pipefail
out="${OUT:-gpu-session}/gpu"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_session.sh: installing the carried wheels failed"; exit 2; }
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1
export PYTHONUNBUFFERED=1
timeout 480 python3 benchmark/gpu_session.py --out "$out" --pipeline-limit 300 2>&1 | tee "$out/session.log"
