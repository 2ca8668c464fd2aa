#!/usr/bin/env bash
# Video-FocalNet-B on ActivityNet-v1.3: configs/activitynet/video-focalnet_base.yaml
# Published recipe: 4 GPUs x 8 clips (LR 0.1 x 32 / 512 = 0.00625); reported top-1 89.8% (4x3 views).
# On fewer GPUs the run accumulates gradients to the same global batch of 32 (TRAIN.GLOBAL_BATCH_SIZE; the log
# names the layout it chose); --opts TRAIN.GLOBAL_BATCH_SIZE N (or 0) trains another one.
#
#   [GPUS=4 (default: all visible GPUs)] [DATA_ROOT=...] [OUTPUT=output] scripts/activitynet/video-focalnet_base.sh [main.py args]
#   NNODES=2 NODE_RANK=0|1 MASTER_ADDR=node0 GPUS=8 scripts/activitynet/video-focalnet_base.sh   # on each node
#   scripts/activitynet/video-focalnet_base.sh --eval --resume CKPT --opts TEST.NUM_CLIP 4 TEST.NUM_CROP 3
#
# Variables and behaviour: see scripts/launch.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" configs/activitynet/video-focalnet_base.yaml "$@"
