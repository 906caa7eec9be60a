#!/usr/bin/env bash
# The device check: bench/gpu_check.py (correctness, step speed and memory), then the command-line
# training path on the GPU at the quick scale's network sizes (synth -> pretrain -> export -> finetune x2).
#
#   bash bench/gpu_run.sh OUT_DIR [PRETRAIN_STEPS] [FINETUNE_STEPS]
#
# Meant for a lent GPU machine whose Python has torch but not MONAI / nibabel: wheels of those
# (pure Python) are installed from .whl/ when present (see docs/benchmarks.md). The training commands write
# their DVCLive-format curves themselves (no dvclive package needed).
set -euo pipefail
out=${1:?usage: gpu_run.sh OUT_DIR [PRETRAIN_STEPS] [FINETUNE_STEPS]}
pre_steps=${2:-300}
ft_steps=${3:-200}
device=${DEVICE:-cuda}          # DEVICE=cpu GPU_CHECK_ARGS=--small: try the plumbing on a CPU
mkdir -p "$out"
. bench/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__, 'cuda', torch.cuda.is_available())"

python3 bench/gpu_check.py --device "$device" --out "$out" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$out/gpu_check.log"

# The command-line path with the quick scale's network and pretraining sizes (params.yaml, scales.quick), on the GPU
# (or on DEVICE); its fine-tuning keeps the options of an earlier quick scale (lr 3e-3, 2 crops per volume, a 16-case
# BTCV twin), not params.yaml's current ones.
d=/tmp/s2dc_quick
rm -rf "$d"
s2dc() { python3 -m s2dc.cli "$@"; }
t0=$(date +%s)
s2dc synth --kind ct_pool --out "$d/ct_pool" --cases 8 --seed 0 --shape 96 96 64 > /dev/null
s2dc synth --kind btcv --out "$d/btcv" --cases 16 --seed 1 --shape 96 96 64 > /dev/null
t1=$(date +%s)
s2dc pretrain --encoder.feature_size 12 --encoder.num_heads 1 2 3 4 --encoder.window_size 4 --encoder.token_stage 2 \
  --views.roi_size 64 64 32 --views.grid 2 --head.hidden_dim 512 --head.embed_dim 128 --loss.queue_size 64 \
  --loss.match_temperature 0.1 --optim.steps "$pre_steps" --optim.warmup_steps 50 --optim.lr 1e-3 \
  --run.checkpoint_every 1000000 --data.workers 4 --run.device "$device" --run.progress false \
  --data.source "$d/ct_pool/dataset.json" --run.out_dir "$d/pretrain"
t2=$(date +%s)
s2dc export-encoder "$d/pretrain" "$d/encoder.pt"
for init in scratch "$d/encoder.pt"; do
  s2dc finetune --model.feature_size 12 --model.num_heads 1 2 3 4 --model.window_size 4 --train.steps "$ft_steps" \
    --train.roi_size 64 64 32 --train.samples_per_volume 2 --train.warmup_steps 20 --train.lr 3e-3 \
    --eval.sw_batch_size 4 --data.workers 4 --run.device "$device" --run.progress false --data.label_ratio 0.25 \
    --data.source "$d/btcv/dataset.json" --model.init "$init" --run.out_dir "$d/ft_$(basename "$init" .pt)"
done
t3=$(date +%s)
cp "$d/pretrain/summary.json" "$out/quick_pretrain_summary.json"
cp "$d/ft_scratch/metrics.json" "$out/quick_ft_scratch.json"
cp "$d/ft_encoder/metrics.json" "$out/quick_ft_encoder.json"
echo "quick-size CLI path on the GPU: synth $((t1 - t0)) s, pretrain $pre_steps steps $((t2 - t1)) s," \
     "export + 2 x finetune $ft_steps steps $((t3 - t2)) s"
