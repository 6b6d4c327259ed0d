#!/usr/bin/env bash
# A sweep over the Lipschitz bound L x depth, each run evaluated at every eps of attack.eps: copy and edit.
#   bash experiments/sweep_lipschitz_depth.sh [extra overrides, e.g. hydra.launcher.n_jobs=4]
# Fixed settings live in conf/experiment/lipschitz_sweep.yaml, so job dirs are named by the swept keys only.
# Relaunching the same command skips finished runs and resumes unfinished ones (same group => same dirs).
# Output: outputs/sweeps/L_depth/{runs.csv, curves.csv, curves_*.png, tradeoff_*.png}; W&B runs offline.
# On a cluster: add hydra/launcher=slurm trainer=gpu (and e.g. experiment=fmnist_nonexpansive lipschitz=bound).
set -uo pipefail
stablenets-train -m experiment=lipschitz_sweep lipschitz.L=1,4 model.depth=2,6 \
    logger=wandb group=L_depth hydra/launcher=local "$@"
status=$?
stablenets-collect outputs/sweeps/L_depth --by lipschitz.L model.depth --x lipschitz.L
exit $status
