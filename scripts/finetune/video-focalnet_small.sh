#!/usr/bin/env bash
# Video-FocalNet-S fine-tuned from the released Kinetics-400 weights: configs/finetune/video-focalnet_small.yaml
# Usually started through scripts/finetune.sh DATA_DIR PRETRAINED (which points the config at a prepared folder);
# directly, it reads data/own/ and ./pretrained/video-focalnet_small_k400.pth as the config says.
# The LR is not scaled by the number of GPUs (TRAIN.LR_SCALING False): BASE_LR is the LR used.
#
#   [GPUS=1] [DATA_ROOT=...] [OUTPUT=output] scripts/finetune/video-focalnet_small.sh [main.py args]
#
# Variables and behaviour: see scripts/launch.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" configs/finetune/video-focalnet_small.yaml "$@"
