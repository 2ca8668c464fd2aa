#!/usr/bin/env bash
# Launch main.py on one or several machines; the per-config scripts in scripts/<dataset>/ call this.
#
#   scripts/launch.sh CONFIG [main.py arguments ...]
#
# Environment variables (default):
#   GPUS         processes (GPUs) per node      (the GPUs torch sees, i.e. honouring CUDA_VISIBLE_DEVICES;
#                                                1 without GPUs)
#   NNODES       number of nodes                (1)
#   NODE_RANK    rank of this node              (0; multi-node only)
#   MASTER_ADDR  address of node 0              (multi-node only, required)
#   MASTER_PORT  free TCP port on node 0        (multi-node only, 29500)
#   DATA_ROOT    folder joined in front of the annotation paths (the config's DATA.ROOT)
#   OUTPUT       output root; runs go to OUTPUT/<dataset>/<model>/<tag>  (output)
#   PYTHON       interpreter                    (python)
#
# One process on one node runs `python main.py` directly (no launcher). Several processes on one node go
# through `torchrun --standalone` (python -m torch.distributed.run), which picks a free port itself, so two
# jobs on one node never collide. Multi-node: start the same command on every node with NNODES, NODE_RANK,
# MASTER_ADDR (and MASTER_PORT) set; torchrun then meets at MASTER_ADDR:MASTER_PORT.
# On a SLURM cluster use scripts/slurm/train.sbatch instead (docs/slurm.md).
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

PYTHON=${PYTHON:-python}
if [ -z "${GPUS:-}" ]; then
    # what torch can use: nvidia-smi -L lists every GPU of the node and ignores CUDA_VISIBLE_DEVICES
    GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || true)
    [[ "$GPUS" =~ ^[0-9]+$ ]] && [ "$GPUS" -ge 1 ] || GPUS=1
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}

ARGS=(--cfg "$CONFIG" --output "${OUTPUT:-output}")
if [ -n "${DATA_ROOT:-}" ]; then
    ARGS+=(--opts DATA.ROOT "$DATA_ROOT")
fi

if [ "$GPUS" -eq 1 ] && [ "$NNODES" -eq 1 ]; then
    exec "$PYTHON" main.py "${ARGS[@]}" "$@"
fi
if [ "$NNODES" -eq 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node "$GPUS" \
        main.py "${ARGS[@]}" "$@"
fi
if [ -z "${MASTER_ADDR:-}" ]; then
    echo "$0: NNODES=$NNODES needs MASTER_ADDR (the address of node 0), the same on every node" >&2
    exit 2
fi
exec "$PYTHON" -m torch.distributed.run \
    --nproc_per_node "$GPUS" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" \
    main.py "${ARGS[@]}" "$@"
