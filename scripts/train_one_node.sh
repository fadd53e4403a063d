#!/usr/bin/env bash
# Train on every GPU of one machine (one process per GPU, through torchrun), after validating the
# config and printing the global batch (per-process batch × accumulation × processes).
#   scripts/train_one_node.sh pretrain configs/pretrain/gpt2_124m_gpu.yaml        # all GPUs
#   scripts/train_one_node.sh finetune CONFIG 4 --set distributed.strategy=fsdp    # 4 processes
# Without a GPU the processes train on the CPU (gloo), e.g. to try a config on a laptop.
# Stop with Ctrl-C or SIGTERM: the step finishes, a checkpoint is saved, and the command that
# resumes is printed (this script again, with --resume auto).
set -euo pipefail
usage="usage: scripts/train_one_node.sh pretrain|finetune CONFIG [NPROC] [ptft args...]"
command=${1:?$usage}
config=${2:?$usage}
shift 2
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then nproc=$1; shift; else
  nproc=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  nproc=${nproc:-0}; [[ $nproc -ge 1 ]] || nproc=1
fi
here=$(cd "$(dirname "$0")/.." && pwd)
read -r -a ptft <<< "${PTFT:-$here/.venv/bin/ptft}"  # PTFT: another command, e.g. "python -m ptft_cli"
export TOKENIZERS_PARALLELISM=false  # tokenizing happens before training starts
"${ptft[@]}" validate --config "$config" --nproc "$nproc" "$@"
exec "${ptft[@]}" "$command" --config "$config" --nproc "$nproc" "$@"
