#!/usr/bin/env bash
# A sweep over the Lipschitz bound L x depth, each run evaluated at every eps of a list: copy and edit.
#   bash experiments/sweep_lipschitz_depth.sh [extra overrides]
# Relaunching the same command skips finished runs and resumes unfinished ones (same group => same dirs).
# Then: outputs/sweeps/L_depth/{runs.csv,curves.csv,curves_pgd_acc.png,curves_certified_acc.png,tradeoff_*.png}
# For Fashion-MNIST swap in: experiment=fmnist_nonexpansive model.blocks=1,2 (and trainer=gpu on a cluster).
set -euo pipefail
stablenets-train -m model=nonexpansive data=swiss_roll trainer.max_epochs=40 \
    lipschitz=bound lipschitz.L=1,4 model.depth=2,6 \
    attack=pgd_l2 'attack.eps=[0,0.05,0.1,0.2,0.4]' attack.n_iter=50 attack.n_eval=500 \
    callbacks.jacobian_norm=null logger=wandb group=L_depth hydra/launcher=local "$@" || true
stablenets-collect outputs/sweeps/L_depth --by lipschitz.L model.depth --x lipschitz.L
