#!/usr/bin/env bash
# One lent-GPU session's check, as one command (docs/benchmarks.md, "LP-FT at eight times the steps"):
#   1. the research measurement the 2-core CPU cannot afford: every segmentation and classification twin of the
#      quick scale fine-tuned with LP-FT (train.frozen_encoder_steps, a third of the steps) at 8x the quick budget
#      (256 steps, validated at 128 and 256), both arms, the quick seeds 0 and 1, from the CPU pipeline's encoders
#      carried in .gpu_enc/encoder_<MODALITY>.pt; and a 100-step CT pretraining through the command line (bench/gpu_tasks.py);
#   2. bench/gpu_check.py (correctness on the device against the CPU, then speed and memory) in the time left.
#
#   bash bench/gpu_lpft.sh OUT_DIR [TOTAL_S] [TASKS_BUDGET_S]
#
# For a machine whose Python has torch but not MONAI / nibabel: their wheels are installed from .whl/ (see
# docs/benchmarks.md). Every part runs whatever the one before it did; the exit status is the first failure's.
set -uo pipefail
out=${1:?usage: gpu_lpft.sh OUT_DIR [TOTAL_S] [TASKS_BUDGET_S]}
total=${2:-560}
tasks_budget=${3:-380}
start=$(date +%s)
mkdir -p "$out"
. bench/gpu_env.sh
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; date -u;
  python3 -c "import torch, monai, nibabel; print('torch', torch.__version__, 'monai', monai.__version__, 'nibabel', nibabel.__version__, 'cuda', torch.cuda.is_available())"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

work=/tmp/s2dc_lpft
rm -rf "$work"
OMP_NUM_THREADS=1 python3 bench/gpu_tasks.py --out "$work" --device "${DEVICE:-cuda}" --encoders .gpu_enc \
  --pretrain-steps "${PRETRAIN_STEPS:-100}" --datasets ${DATASETS:-btcv msd_liver msd_lung msd_spleen cc_ccii brats21 autopet adni} \
  --finetune-steps "${FINETUNE_STEPS:-256}" --lpft 0.333 --eval-every "${EVAL_EVERY:-128}" --seeds ${SEEDS:-0 1} \
  --parallel "${PARALLEL:-32}" --budget-s "$tasks_budget" --no-probe ${SPLIT_SEED:+--split-seed "$SPLIT_SEED"} \
  > "$out/gpu_tasks.log" 2>&1
tasks_rc=$?
cp "$work"/gpu_tasks.md "$work"/gpu_tasks.json "$out"/ 2>/dev/null
tar -czf "$out/logs.tgz" -C "$work" logs 2>/dev/null
tail -25 "$out/gpu_tasks.log"

left=$(( total - ($(date +%s) - start) - 10 ))
check_rc=0
if [ "$left" -gt 30 ]; then
  timeout "$left" python3 bench/gpu_check.py --device "${DEVICE:-cuda}" --out "$out" --repeats 3 ${GPU_CHECK_ARGS:-} \
    > "$out/gpu_check.log" 2>&1
  check_rc=$?
  tail -12 "$out/gpu_check.log"
else
  echo "gpu_check.py: not run, ${left} s left" | tee "$out/gpu_check.log"
fi
echo "gpu_tasks rc $tasks_rc, gpu_check rc $check_rc, $(( $(date +%s) - start )) s in all"
[ "$tasks_rc" -eq 0 ] && exit "$check_rc"
exit "$tasks_rc"
