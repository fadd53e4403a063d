#!/usr/bin/env bash
# Run a ptft config on one GPU of a server.
#   scripts/finetune_gpu.sh configs/examples/sentence_pair_gpu.yaml [GPU_INDEX] [extra ptft args...]
# Set up first with: make install TORCH_SPEC="torch==2.13.0" (PyPI's Linux wheel is the CUDA build).
set -euo pipefail
config=${1:?usage: scripts/finetune_gpu.sh CONFIG [GPU_INDEX] [ptft args...]}
gpu=${2:-0}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")/.." && pwd)
ptft=${PTFT:-$here/.venv/bin/ptft}
export CUDA_VISIBLE_DEVICES=$gpu
export TOKENIZERS_PARALLELISM=false          # the tokenizer runs once, before training
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # CPU threads only feed the GPU
"$ptft" validate --config "$config" --set device=cuda "$@"
exec "$ptft" finetune --config "$config" --set device=cuda "$@"
