#!/usr/bin/env bash
# GPU section of docs/benchmarks.md (needs a CUDA machine): DCGAN at 64x64 on Fashion-MNIST,
# batch 128 and 256, fp32 eager against bf16-mixed + torch.compile, gan_lab (real Trainer)
# against the plain loop with the same settings (the plain loop follows trainer.precision,
# train.compile, channels_last and fused Adam exactly as gan_lab does on CUDA).
# Then the two DDP designs on the available GPUs (end of this file).
# Usage: bash benchmarks/gpu.sh   (tables on stdout, JSON in benchmarks/results/gpu_*.json)
set -euo pipefail
PY=${PY:-.venv/bin/python}
for batch in 128 256; do
  common="data.resolution=64 data.batch_size=$batch"
  $PY -m benchmarks.bench --device cuda --workloads dcgan28_b64 sampling_10k \
    --override $common trainer.precision=32-true train.compile=false \
    --out benchmarks/results/gpu_fp32_eager_b$batch.json
  $PY -m benchmarks.bench --device cuda --workloads dcgan28_b64 sampling_10k \
    --override $common trainer.precision=bf16-mixed train.compile=true \
    --out benchmarks/results/gpu_bf16_compile_b$batch.json
done
# DDP designs (docs/benchmarks.md, "DDP: find_unused_parameters vs a GAN-aware gradient
# all-reduce"): trainer=ddp on every GPU, today's DDPStrategy(find_unused_parameters=true)
# against benchmarks.ddp_designs.GANAwareDDPStrategy, paired runs, per-iteration times.
gpus=$($PY -c 'import torch; print(torch.cuda.device_count())')
if [ "$gpus" -ge 2 ]; then
  $PY -m benchmarks.ddp_designs --device cuda --devices "$gpus" \
    --out benchmarks/results/gpu_ddp_designs.json
else
  # One rank: the designs' bookkeeping is timed, not their communication.
  echo "ddp_designs: $gpus GPU(s); the DDP comparison needs >= 2, timing devices=1 only" >&2
  $PY -m benchmarks.ddp_designs --device cuda --devices 1 \
    --out benchmarks/results/gpu_ddp_designs_1gpu.json
fi
# Sweep slots (README, "A GPU box"): which hydra.launcher.jobs_per_gpu keeps one GPU busy with
# small jobs: 8 ring-MLP jobs at 1, 2, 4 and 8 jobs per GPU, 8 digits DCGAN jobs at 1 and 4;
# wall time, jobs/min and nvidia-smi utilisation.
$PY -m benchmarks.slot_sweep --jobs 8 --jobs-per-gpu 1 2 4 8 \
  --out benchmarks/results/gpu_slot_sweep_ring.json
$PY -m benchmarks.slot_sweep --jobs 8 --jobs-per-gpu 1 4 \
  --out benchmarks/results/gpu_slot_sweep_digits.json -- \
  experiment=digits_dcgan train.iterations=1000 trainer.enable_progress_bar=false
