#!/usr/bin/env bash
# The paper's GPU-side sweeps on a lent one-GPU machine (no network; wheels carried in .whl, as in
# gpu_check.sh): the scaling study, the baselines and the init ablation, 12 jobs at a time sharing
# the GPU (the models are small, so one job leaves it mostly idle). Run folders, without their
# checkpoints, come back as $OUT/<sweep>.tar.gz; unpack them into runs/paper/.
#   bash experiments/gpu_sweeps.sh [sweep ...]        # default: scaling baselines init_ablation
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-runs/gpu_sweeps}"; mkdir -p "$OUT"
BUDGET="${GPU_SWEEPS_BUDGET:-480}"
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
pack() {  # the evidence of every run folder (complete or not), never the checkpoints
  (cd runs/paper && tar czf "$OUT/$1.tar.gz" --exclude=checkpoint.pt --exclude=wandb "$1") && ls -l "$OUT/$1.tar.gz"
}
for sweep in "${@:-scaling baselines init_ablation}"; do
  for s in $sweep; do
    left=$(( BUDGET - SECONDS - 20 ))
    if (( left < 30 )); then echo "SKIPPED $s: budget spent"; continue; fi
    echo "=== $s (timeout ${left}s, ${SECONDS}s elapsed)"
    timeout --kill-after=5 "$left" "$PY" experiments/train.py -m experiment="$s" device=cuda \
      hydra.launcher.n_jobs=12 logger.wandb.mode=disabled hydra.sweep.dir=runs/paper/"$s" > "$OUT/$s.log" 2>&1
    echo "rc $? after ${SECONDS}s; complete runs: $(ls runs/paper/$s/*/report.json 2>/dev/null | wc -l)"
    tail -3 "$OUT/$s.log"
    pack "$s"
  done
done
