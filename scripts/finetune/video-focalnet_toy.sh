#!/usr/bin/env bash
# The tiny toy model fine-tuned with the same recipe on CPU (the measured run of docs/own-videos.md):
# configs/finetune/video-focalnet_toy.yaml
# Usually started through scripts/finetune.sh DATA_DIR PRETRAINED (which points the config at a prepared folder);
# directly, it reads data/own/ as the config says; pass --pretrained CKPT (a checkpoint of configs/toy).
# The LR is not scaled by the number of GPUs (TRAIN.LR_SCALING False): BASE_LR is the LR used.
#
#   [GPUS=1] [DATA_ROOT=...] [OUTPUT=output] scripts/finetune/video-focalnet_toy.sh [main.py args]
#
# Variables and behaviour: see scripts/launch.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" configs/finetune/video-focalnet_toy.yaml "$@"
