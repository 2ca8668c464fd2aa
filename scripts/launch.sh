#!/usr/bin/env bash
# Launch main.py on one or several machines; the per-config scripts in scripts/<dataset>/ call this.
#
#   scripts/launch.sh CONFIG [main.py arguments ...]
#
# Environment variables (default):
#   GPUS         processes (GPUs) per node      (the number of visible GPUs, 1 without GPUs)
#   NNODES       number of nodes                (1)
#   NODE_RANK    rank of this node              (0)
#   MASTER_ADDR  address of node 0              (127.0.0.1)
#   MASTER_PORT  free TCP port on node 0        (29500)
#   DATA_ROOT    folder joined in front of the annotation paths (the config's DATA.ROOT)
#   OUTPUT       output root; runs go to OUTPUT/<dataset>/<model>/<tag>  (output)
#   PYTHON       interpreter                    (python)
#
# One process on one node runs `python main.py` directly (no launcher); anything else goes through
# torchrun (python -m torch.distributed.run) with a static rendezvous at MASTER_ADDR:MASTER_PORT.
# Multi-node: start the same command on every node with NNODES, NODE_RANK, MASTER_ADDR set.
# Arguments after CONFIG go to main.py unchanged (e.g. --eval --resume CKPT, --opts KEY VALUE ...;
# --opts may be given several times). Relative paths are relative to the repository root.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 CONFIG [main.py arguments ...]" >&2
    exit 2
fi
CONFIG=$1
shift
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${GPUS:-}" ]; then
    GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    [ "${GPUS:-0}" -ge 1 ] || GPUS=1
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python}

ARGS=(--cfg "$CONFIG" --output "${OUTPUT:-output}")
if [ -n "${DATA_ROOT:-}" ]; then
    ARGS+=(--opts DATA.ROOT "$DATA_ROOT")
fi

if [ "$GPUS" -eq 1 ] && [ "$NNODES" -eq 1 ]; then
    exec "$PYTHON" main.py "${ARGS[@]}" "$@"
fi
exec "$PYTHON" -m torch.distributed.run \
    --nproc_per_node "$GPUS" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    main.py "${ARGS[@]}" "$@"
