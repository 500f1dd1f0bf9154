#!/usr/bin/env bash
# Every GPU check in one run, for a machine with CUDA (the team's lent H100 or H200), in
# order of what the open issues need, each stage saved to $OUT as it ends:
#   1. the GPU tests (pytest -m gpu)
#   2. end to end `cnnlab train model=lenet5 data=fashion_mnist device=cuda`, three times
#      (run 0 warms the caches; runs 1 and 2 are timed; same seed -> same metrics)
#   3. the cost of true fp32 against TF32 on LeNet-5 (3 epochs each, median epoch)
#   4. the epoch benchmark, classic pipeline against cnnlab's, same batch order
#   5. seeds trained together: 1, 4 and 8 seeds of LeNet-5 (benchmarks/seeds.py), and a
#      seeds=4 training run on the CUDA-graph path
#   6. with EXPERIMENTS=1, every experiment preset (their default seeds), 8 jobs at a time
#   7. with SWEEPS=1, 1 / 4 / 8-job sweeps sharing the GPU through joblib
# Usage: bash benchmarks/gpu_check.sh OUTDIR   (with Fashion-MNIST under $CNNLAB_DATA)
# Wheels for packages the GPU image lacks (hydra-core, omegaconf, antlr4, the joblib
# launcher) are installed from .whl/ when that folder exists: benchmarks/gpu_prepare.sh
# makes it, and .gpudata/ with Fashion-MNIST, on the machine that calls the device tool.
# DEVICE=cpu DATA=digits runs the same steps on a CPU, to check the script before GPU time
# is spent on it.
set -u
out=${1:-gpu_check_out}
dev=${DEVICE:-cuda} data=${DATA:-fashion_mnist}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
# On the team's device tool, $OUT comes back: keep a tarball of what is done so far there.
save() { [ -n "${OUT:-}" ] && tar czf "$OUT/gpu_check.tgz" -C "$(dirname "$out")" "$(basename "$out")"; }
train() { timeout 150 python3 -m cnnlab train data=$data device=$dev trainer.progress=false "$@"; }

{
  nvidia-smi -L
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
  date -u
} 2>&1 | tee "$out/machine.txt"

echo "== 1. GPU tests"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -25 | tee "$out/pytest_gpu.txt"
save

echo "== 2. end to end: cnnlab train model=lenet5 data=$data device=$dev (seed 0)"
for i in 0 1 2; do
  t0=$(now)
  train model=lenet5 hydra.run.dir=/tmp/e2e_$i > "$out/e2e_$i.log" 2>&1
  echo "e2e run $i: rc=$? wall $(elapsed "$t0" "$(now)") s" | tee -a "$out/summary.txt"
done
python3 - <<'EOF' 2>&1 | tee -a "$out/summary.txt"
import json
a, b = (json.load(open(f"/tmp/e2e_{i}/metrics.json")) for i in (1, 2))
keys = ["accuracy", "f1_macro", "per_class", "epochs_completed", "path", "params"]
print("e2e:", {k: a.get(k) for k in ("accuracy", "f1_macro", "path", "train_seconds", "peak_gpu_mb", "numerics")})
print("same seed twice identical:", all(a[k] == b[k] for k in keys))
EOF
save

echo "== 3. true fp32 against TF32, LeNet-5, 3 epochs each"
for precision in fp32 tf32; do
  train model=lenet5 trainer.epochs=3 trainer.precision=$precision pictures=false \
    hydra.run.dir=/tmp/precision_$precision > /dev/null 2>&1
  python3 -c "
import csv, json, statistics
rows = list(csv.DictReader(open('/tmp/precision_$precision/history.csv')))
m = json.load(open('/tmp/precision_$precision/metrics.json'))
print('$precision', 'median epoch s', round(statistics.median(float(r['seconds']) for r in rows), 4),
      'accuracy', round(m['accuracy'], 4), m['numerics'])" 2>&1 | tee -a "$out/summary.txt"
done
save

echo "== 4. epoch benchmark"
timeout 300 python3 -m cnnlab bench --device $dev --data $data --epochs 2 \
  --out "$out/bench_$dev.json" 2>&1 | tail -12 | tee "$out/bench_$dev.txt"
save

echo "== 5. seeds trained together"
timeout 200 python3 benchmarks/seeds.py --device $dev --data $data --models lenet5,mlp \
  --seeds 1,4,8 --epochs 2 --out "$out/seeds_$dev.json" 2>&1 | tail -14 | tee "$out/seeds_$dev.txt"
t0=$(now)
train model=lenet5 seeds=4 hydra.run.dir=/tmp/seeds4 > "$out/seeds4.log" 2>&1
echo "seeds=4 run: rc=$? wall $(elapsed "$t0" "$(now)") s" | tee -a "$out/summary.txt"
python3 -c "
import json; m = json.load(open('/tmp/seeds4/metrics.json'))
print({k: m.get(k) for k in ('status', 'path', 'accuracy', 'accuracy_std', 'train_seconds', 'peak_gpu_mb')})
print([(s['seed'], round(s['accuracy'], 4)) for s in m['per_seed']])" 2>&1 | tee -a "$out/summary.txt"
save

if [ "${EXPERIMENTS:-0}" = 1 ]; then
  echo "== 6. every experiment preset on $data (5 epochs, the presets' seeds), 8 jobs at a time"
  for e in chapter width_depth activations normalization kernels residual; do
    t0=$(now)
    timeout 200 python3 -m cnnlab train -m experiment=$e data=$data device=$dev \
      trainer.progress=false pictures=false hydra/launcher=joblib hydra.launcher.n_jobs=8 \
      hydra.sweep.dir=/tmp/exp_$e > "$out/exp_$e.log" 2>&1
    echo "experiment $e: rc=$? wall $(elapsed "$t0" "$(now)") s" | tee -a "$out/summary.txt"
    cp /tmp/exp_$e/comparison.md "$out/exp_${e}_comparison.md" 2>/dev/null
    save
  done
fi

if [ "${SWEEPS:-0}" = 1 ]; then
  echo "== 7. sweeps sharing one GPU (joblib launcher)"
  for spec in "1:model.width=1" "4:model.width=1,2 model.depth=1,2" \
              "8:model.width=1,2 model.depth=1,2 seed=0,1"; do
    n=${spec%%:*}
    t0=$(now)
    # shellcheck disable=SC2086
    timeout 150 python3 -m cnnlab train -m ${spec#*:} data=$data device=$dev trainer.progress=false \
      hydra/launcher=joblib hydra.launcher.n_jobs=$n hydra.sweep.dir=/tmp/sweep_$n \
      > "$out/sweep_$n.log" 2>&1
    echo "sweep of $n job(s): rc=$? wall $(elapsed "$t0" "$(now)") s" | tee -a "$out/summary.txt"
  done
  save
fi
