#!/usr/bin/env bash
# Train on several machines: run this same line on every machine of the run. The machines meet at
# RDZV (host:port of one of them, reachable by all); torchrun numbers them as they arrive.
#   NNODES=2 RDZV=node01:29500 scripts/train_multi_node.sh pretrain CONFIG [NPROC_PER_NODE] [ptft args...]
# The output_dir must be on a filesystem every machine sees (rank 0 writes it; all read checkpoints).
set -euo pipefail
usage="usage: NNODES=N RDZV=host:port scripts/train_multi_node.sh pretrain|finetune CONFIG [NPROC_PER_NODE] [ptft args...]"
command=${1:?$usage}
config=${2:?$usage}
nnodes=${NNODES:?$usage}
rdzv=${RDZV:?$usage}
shift 2
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then nproc=$1; shift; else
  nproc=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  nproc=${nproc:-0}; [[ $nproc -ge 1 ]] || nproc=1
fi
here=$(cd "$(dirname "$0")/.." && pwd)
read -r -a ptft <<< "${PTFT:-$here/.venv/bin/ptft}"  # PTFT: another command, e.g. "python -m ptft_cli"
export TOKENIZERS_PARALLELISM=false
launch=(--nproc "$nproc" --nnodes "$nnodes" --rdzv-endpoint "$rdzv")
"${ptft[@]}" validate --config "$config" "${launch[@]}" "$@"
exec "${ptft[@]}" "$command" --config "$config" "${launch[@]}" "$@"
