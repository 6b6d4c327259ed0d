#!/usr/bin/env bash
# The GPU checks in one call, from the project root on a machine with CUDA:
#   1. the gpu-marked tests (training, evaluation, PGD and the Lipschitz search on the GPU, bf16-mixed);
#   2. the Figure 14 recipe on the GPU (both nets, 30 epochs, PGD-100 curves on 1,000 images), timed;
#   3. AutoAttack-L2 on all 1,000 test images x 8 eps of the non-expansive run, timed.
# Usage: bash scripts/gpu_check.sh [extra overrides for the recipe, e.g. data.data_dir=/path/to/fashion-mnist]
# A dry run of the same steps on a CPU, small: DEVICE=cpu bash scripts/gpu_check.sh trainer.max_epochs=1 data.n_train=1000 attack.n_eval=100
# Needs the project's Python dependencies importable by python3 (PYTHONPATH if they live elsewhere) and the
# Fashion-MNIST files (data.data_dir, or /usr/share/datasets/fashion-mnist).  Logs go to $OUT or outputs/gpu_check.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-gpu}   # gpu, or cpu for a dry run
LOG=${OUT:-outputs/gpu_check}
mkdir -p "$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=${WANDB_MODE:-disabled}
stamp() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(stamp)" 'BEGIN { printf "%.1f", b - a }'; }
{
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} | tee "$LOG/device.txt"

echo "== 1. gpu tests"
t0=$(stamp)
$PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$LOG/gpu_tests.txt"
echo "gpu tests: $(since "$t0") s" | tee -a "$LOG/gpu_tests.txt"

echo "== 2. Figure 14 recipe on the GPU"
t0=$(stamp)
$PY experiments/fig14_robustness.py --group fig14_gpu trainer=$DEVICE num_threads=null logger=csv "$@" 2>&1 \
  | grep -v "^\[" | tail -40 | tee "$LOG/fig14.txt"
echo "fig14 recipe wall: $(since "$t0") s" | tee -a "$LOG/fig14.txt"
$PY - <<'PY' | tee -a "$LOG/fig14.txt"
import json, pathlib, yaml
for p in sorted(pathlib.Path("outputs/sweeps").glob("fig14_gpu*/*/results.json")):
    r = json.loads(p.read_text()); m = r["metrics"]
    epochs = yaml.safe_load((p.parent / "config.yaml").read_text())["trainer"]["max_epochs"]
    print(f"{r['name']:22s} clean {m['test/acc']:.3f}  train {m['train/seconds']:.1f} s ({m['train/seconds'] / epochs:.2f} s/epoch)"
          f"  PGD curve {m['test/pgd_seconds']:.1f} s  audit {m.get('test/certificate_violations')} violations")
PY

echo "== 3. AutoAttack-L2, 1,000 images x 8 eps, non-expansive run"
RUN=$(dirname "$(grep -l '"fmnist_nonexpansive"' outputs/sweeps/fig14_gpu*/*/results.json | head -1)")
t0=$(stamp)
$PY -m stablenets.eval "$RUN" attack=autoattack_l2 attack.n_eval=${AA_N:-1000} trainer.accelerator=$DEVICE 2>&1 | tail -20 | tee "$LOG/autoattack.txt"
echo "autoattack wall: $(since "$t0") s" | tee -a "$LOG/autoattack.txt"
cp outputs/sweeps/fig14_gpu*/fig14_table.csv "$LOG/" 2>/dev/null || true
