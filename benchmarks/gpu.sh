#!/usr/bin/env bash
# GPU section of docs/benchmarks.md (needs a CUDA machine): DCGAN at 64x64 on Fashion-MNIST,
# batch 128 and 256, fp32 eager against bf16-mixed + torch.compile, gan_lab (real Trainer)
# against the plain loop with the same settings (the plain loop follows trainer.precision,
# train.compile, channels_last and fused Adam exactly as gan_lab does on CUDA).
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
