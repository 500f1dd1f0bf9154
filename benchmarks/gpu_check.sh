#!/usr/bin/env bash
# Every GPU check in one run, for a machine with CUDA (the team's lent H100):
#   GPU tests, the epoch benchmark, end-to-end train time three times (same seed -> same metrics),
#   and 1 / 4 / 8-job sweeps sharing the GPU through the joblib launcher (~5 min in all;
#   EXPERIMENTS=1 adds every experiment preset, ~2 min more).
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

{
  nvidia-smi -L
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
  date -u
} 2>&1 | tee "$out/machine.txt"

echo "== GPU tests"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -25 | tee "$out/pytest_gpu.txt"

save
echo "== end to end: cnnlab train model=lenet5 data=$data device=$dev (seed 0)"
# run 0 meets cold file caches and a fresh CUDA driver on a newly lent machine; the
# target is for a user's second run, so runs 1 and 2 are the ones timed
for i in 0 1 2; do
  t0=$(now)
  timeout 120 python3 -m cnnlab train model=lenet5 data=$data device=$dev \
    trainer.progress=false hydra.run.dir=/tmp/e2e_$i > "$out/e2e_$i.log" 2>&1
  echo "e2e run $i: rc=$? wall $(elapsed "$t0" "$(now)") s" | tee -a "$out/summary.txt"
done
python3 - <<'EOF' 2>&1 | tee -a "$out/summary.txt"
import json
a, b = (json.load(open(f"/tmp/e2e_{i}/metrics.json")) for i in (1, 2))
keys = ["accuracy", "f1_macro", "per_class", "epochs_completed", "path", "params"]
print("e2e:", {k: a.get(k) for k in ("accuracy", "f1_macro", "path", "train_seconds", "peak_gpu_mb")})
print("same seed twice identical:", all(a[k] == b[k] for k in keys))
print("history 1:", open("/tmp/e2e_1/history.csv").read())
EOF

save
echo "== sweeps sharing one GPU (joblib launcher)"
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
for n in 4 8; do
  for f in comparison.md comparison.csv accuracy_vs_params.png loss_curves.png; do
    cp "/tmp/sweep_$n/$f" "$out/sweep_${n}_$f" 2>/dev/null
  done
done

save
echo "== epoch benchmark"
timeout 300 python3 -m cnnlab bench --device $dev --data $data --epochs 3 \
  --out "$out/bench_$dev.json" 2>&1 | tail -30 | tee "$out/bench_$dev.txt"

save
[ "${EXPERIMENTS:-0}" = 1 ] || exit 0  # the README's results table: EXPERIMENTS=1 to redo it
echo "== every experiment preset on Fashion-MNIST (5 epochs), 8 jobs at a time on the GPU"
for e in chapter width_depth activations normalization kernels residual; do
  t0=$(now)
  timeout 150 python3 -m cnnlab train -m experiment=$e data=$data device=$dev \
    trainer.progress=false hydra/launcher=joblib hydra.launcher.n_jobs=8 \
    hydra.sweep.dir=/tmp/exp_$e > "$out/exp_$e.log" 2>&1
  echo "experiment $e: rc=$? wall $(elapsed "$t0" "$(now)") s" | tee -a "$out/summary.txt"
  cp /tmp/exp_$e/comparison.md "$out/exp_${e}_comparison.md" 2>/dev/null
  cp /tmp/exp_$e/accuracy_vs_params.png "$out/exp_${e}_accuracy_vs_params.png" 2>/dev/null
done
save
