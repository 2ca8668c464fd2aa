#!/usr/bin/env bash
# Video-FocalNet-B on Something-Something-v2: configs/ssv2/video-focalnet_base.yaml
# Published recipe: 16 GPUs x 8 clips (LR 0.1 x 128 / 512 = 0.025); reported top-1 71.1% (4x3 views).
# On fewer GPUs the run accumulates gradients to the same global batch of 128 (TRAIN.GLOBAL_BATCH_SIZE; the log
# names the layout it chose); --opts TRAIN.GLOBAL_BATCH_SIZE N (or 0) trains another one.
#
#   [GPUS=16 (default: all visible GPUs)] [DATA_ROOT=...] [OUTPUT=output] scripts/ssv2/video-focalnet_base.sh [main.py args]
#   NNODES=2 NODE_RANK=0|1 MASTER_ADDR=node0 GPUS=8 scripts/ssv2/video-focalnet_base.sh   # on each node
#   scripts/ssv2/video-focalnet_base.sh --eval --resume CKPT --opts TEST.NUM_CLIP 4 TEST.NUM_CROP 3
#
# Variables and behaviour: see scripts/launch.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" configs/ssv2/video-focalnet_base.yaml "$@"
