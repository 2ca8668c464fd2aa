#!/usr/bin/env bash
# The toy run: generates data/toy if missing, trains the tiny model and runs the final 4x3 test.
# On CPU it is one process (about ten minutes on two cores, docs/training.md "The toy run"); with GPUs it uses all visible ones.
#
#   scripts/toy/train.sh [main.py args]            e.g. --opts TRAIN.EPOCHS 2
#   GPUS=2 scripts/toy/train.sh                    two processes (gloo on CPU, NCCL on GPUs)
#
# Variables and behaviour: see scripts/launch.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" configs/toy/video-focalnet_toy.yaml "$@"
