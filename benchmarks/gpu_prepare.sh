#!/usr/bin/env bash
# Run here, before a session on a lent GPU machine: fetches what benchmarks/gpu_check.sh
# needs there and that machine cannot fetch (it has torch, torchvision, joblib,
# matplotlib; not Hydra). Writes .whl/ (pure-Python wheels, the versions of this venv)
# and .gpudata/FashionMNIST/raw (Debian's dataset-fashion-mnist). Both are git-ignored:
# name them in the device tool's carry, then on the machine:
#   CNNLAB_DATA=$PWD/.gpudata bash benchmarks/gpu_check.sh /tmp/gc
set -euo pipefail
cd "$(dirname "$0")/.."

version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir .whl
for name in hydra-core omegaconf hydra-joblib-launcher; do
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "$name==$(version "$name")"
done
# antlr4's runtime 4.9.3 (the one Hydra 1.3 needs) is published only as source
python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"

mkdir -p .gpudata/FashionMNIST/raw
cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpudata/FashionMNIST/raw/
du -sh .whl .gpudata
