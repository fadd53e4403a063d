#!/usr/bin/env bash
# Run a ptft command on one GPU of a server, after validating the config.
#   scripts/run_on_gpu.sh pretrain configs/pretrain/gpt2_124m_gpu.yaml [GPU_INDEX] [extra ptft args...]
#   scripts/run_on_gpu.sh finetune configs/examples/sentence_pair_gpu.yaml 1 --set training.batch_size=64
# Set up first with: make install TORCH_SPEC="torch==2.13.0" (PyPI's Linux wheel is the CUDA build).
set -euo pipefail
command=${1:?usage: scripts/run_on_gpu.sh pretrain|finetune|evaluate|predict CONFIG [GPU_INDEX] [ptft args...]}
config=${2:?usage: scripts/run_on_gpu.sh pretrain|finetune|evaluate|predict CONFIG [GPU_INDEX] [ptft args...]}
gpu=${3:-0}
shift $(( $# >= 3 ? 3 : 2 ))
here=$(cd "$(dirname "$0")/.." && pwd)
read -r -a ptft <<< "${PTFT:-$here/.venv/bin/ptft}"  # PTFT: another command, e.g. "python -m ptft_cli"
export CUDA_VISIBLE_DEVICES=$gpu
export TOKENIZERS_PARALLELISM=false           # tokenizing happens before training starts
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # CPU threads only feed the GPU
"${ptft[@]}" validate --config "$config" --set device=cuda "$@"
exec "${ptft[@]}" "$command" --config "$config" --set device=cuda "$@"
