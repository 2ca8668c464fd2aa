"""Train and evaluate Video-FocalNets: the command line and the dispatch to the modes (train, --eval,
--throughput). The machinery is ``engine/``.

    python main.py --cfg configs/toy/video-focalnet_toy.yaml                       # one process (CPU or 1 GPU)
    torchrun --nproc_per_node 8 main.py --cfg configs/kinetics400/video-focalnet_tiny.yaml
    torchrun --nnodes 2 --node-rank 0 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 main.py ...
    python main.py --cfg CFG --eval --resume CKPT --opts TEST.NUM_CLIP 4 TEST.NUM_CROP 3
    python main.py --cfg CFG --throughput

The original's command line keeps working (``python -m torch.distributed.launch ... --local_rank N``, also
``--local-rank``), except that unknown flags are now an error. Evaluation needs only VAL_FILE and the
checkpoint (no train loader, no ImageNet file); auto-resume never replaces ``--resume`` and never applies to
``--eval`` (``engine/resume.py``). Exit codes: 0 done (also after a preemption save), 2 a user error (one
line, no traceback; also another run holding the output folder's run.lock), 3 a non-finite loss, 4 too many
unreadable videos, 130 Ctrl-C (after saving last.pth when it came during training).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, List, Optional

from datasets import AnnotationError, UnreadableVideosError, ensure_toy_dataset
from datasets.toy import is_complete as toy_is_complete
from engine.amp import AMP_OPT_LEVELS
from engine.checkpoint import CheckpointError, PretrainedMismatchError
from engine.config import ConfigError, apply_lr_scaling, config_to_yaml, get_config, keys_the_original_ignored
from engine.data_summary import log_data_summary
from engine.evaluator import evaluate_checkpoint
from engine.preemption import EXIT_INTERRUPTED, PreemptedError, finish_preempted
from engine.throughput import measure_throughput
from engine.trainer import NonFiniteLossError, TooManyUnreadableError, Trainer
from engine.weight_init import apply_weight_init
from models import build_model
from utils import distributed as du
from utils.env import configure_determinism, environment_summary, seed_everything
from utils.fs import atomic_write_text
from utils.logger import setup_logging
from utils.run_lock import RunLockedError, lock_run_folder, release_run_lock

logger = logging.getLogger('main')

EXIT_USER_ERROR = 2
EXIT_NON_FINITE_LOSS = 3
EXIT_TOO_MANY_UNREADABLE = 4


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser('main.py', description='Train / evaluate Video-FocalNets. Flags override '
                                     '--cfg and --opts; a flag that is not given changes nothing.')
    parser.add_argument('--cfg', required=True, metavar='FILE', help='config file (yaml)')
    parser.add_argument('--opts', nargs='+', action='extend', default=None, metavar='KEY VALUE',
                        help='override config keys, e.g. --opts TEST.NUM_CLIP 4 TEST.NUM_CROP 3 (may be repeated)')
    parser.add_argument('--batch-size', type=int, help='clips per process (DATA.BATCH_SIZE)')
    parser.add_argument('--output', metavar='PATH', help='output root; the run goes to PATH/<dataset>/<model>/<tag>')
    parser.add_argument('--tag', help='last folder of the output path (default: derived from LR, epochs ...)')
    parser.add_argument('--resume', metavar='CKPT', help='checkpoint to resume training from, or to evaluate')
    parser.add_argument('--pretrained', metavar='CKPT', help='initial weights (TRAIN.PRETRAINED_PATH)')
    parser.add_argument('--eval', action='store_true', help='only evaluate --resume on DATA.VAL_FILE')
    parser.add_argument('--accumulation-steps', type=int, help='micro-batches per optimizer update')
    parser.add_argument('--use-checkpoint', action='store_true', help='gradient checkpointing (saves memory)')
    parser.add_argument('--amp-opt-level', choices=sorted(AMP_OPT_LEVELS), help='apex levels mapped to TRAIN.AMP')
    parser.add_argument('--throughput', action='store_true', help='measure clips/s of the model and exit')
    parser.add_argument('--seed', type=int, help='SEED')
    parser.add_argument('--local_rank', '--local-rank', type=int, dest='local_rank', default=None,
                        help='set by the deprecated torch.distributed.launch (torchrun uses LOCAL_RANK)')
    return parser.parse_args(argv)


def missing_toy_files(config: Any) -> List[str]:
    """The annotation files this run reads that are missing, when they are to be generated as the toy data.

    Empty unless DATA.DATASET is ``toy`` and DATA.ROOT lacks one of the toy files (train, val, test, labels).
    Only the files the mode reads count: ``--eval`` reads VAL_FILE, training TRAIN_FILE, VAL_FILE and, for
    the final test, TEST_FILE, and only those inside DATA.ROOT: a file that exists, or one pointed elsewhere
    (e.g. the toy model evaluated on other videos with DATA.VAL_FILE pointed at them), is never generated."""
    if config.DATA.DATASET != 'toy' or toy_is_complete(config.DATA.ROOT):
        return []
    read = [config.DATA.VAL_FILE] if config.EVAL_MODE else [config.DATA.TRAIN_FILE, config.DATA.VAL_FILE]
    if not config.EVAL_MODE and config.TRAIN.FINAL_TEST and config.DATA.TEST_FILE:
        read.append(config.DATA.TEST_FILE)
    inside = os.path.abspath(config.DATA.ROOT) + os.sep  # files pointed elsewhere are never generated
    return [path for path in read if not os.path.isfile(path) and os.path.abspath(path).startswith(inside)]


def prepare_toy_data(config: Any, dist_info: du.DistInfo) -> None:
    """Generate the toy dataset on rank 0 when the toy files this run reads are missing; other ranks wait."""
    missing = missing_toy_files(config)
    if not missing:
        return
    if dist_info.is_main:
        logger.info(f'generating the toy dataset into {config.DATA.ROOT} (no {os.path.basename(missing[0])} '
                    'there yet)')
        try:
            ensure_toy_dataset(config.DATA.ROOT)  # logs its own progress and time
        except FileExistsError as e:  # a folder of an older toy version (no test.csv): never overwritten
            raise ConfigError(str(e)) from None
    du.barrier()


def run(config: Any, dist_info: du.DistInfo) -> int:
    # logging first, so that the toy data generation of a fresh checkout is visible
    setup_logging(config.OUTPUT, dist_info.rank, config.MODEL.NAME)
    prepare_toy_data(config, dist_info)
    base_lr = config.TRAIN.BASE_LR
    if not (config.EVAL_MODE or config.THROUGHPUT_MODE):
        config = apply_lr_scaling(config, dist_info.world_size)
    if config.TRAIN.BASE_LR != base_lr:
        logger.info(f'linear LR scaling (TRAIN.LR_SCALING): {config.DATA.BATCH_SIZE} clips x {dist_info.world_size} '
                    f'processes x {max(1, config.TRAIN.ACCUMULATION_STEPS)} accumulation steps / 512: BASE_LR '
                    f'{base_lr:g} -> {config.TRAIN.BASE_LR:g} (WARMUP_LR, MIN_LR alike)')
    env = environment_summary(dist_info.device, dist_info.world_size)
    if dist_info.is_main:
        atomic_write_text(os.path.join(config.OUTPUT, 'config.yaml'), config_to_yaml(config))
        atomic_write_text(os.path.join(config.OUTPUT, 'environment.json'), json.dumps(env, indent=2) + '\n')
    logger.info('environment: ' + ', '.join(f'{k} {v}' for k, v in env.items()))
    logger.info(f'output folder {config.OUTPUT}; config:\n{config_to_yaml(config)}')
    if not config.THROUGHPUT_MODE:
        log_data_summary(config)
    seed_everything(config.SEED + dist_info.rank)
    configure_determinism(config.TRAIN.DETERMINISTIC)

    model = build_model(config)
    apply_weight_init(model, config.MODEL.INIT)  # before any checkpoint or pretrained weights are loaded
    if config.TRAIN.USE_CHECKPOINT:
        model.set_grad_checkpointing(True)
    model.to(dist_info.device)
    logger.info(f'{config.MODEL.NAME or config.MODEL.TYPE}: {sum(p.numel() for p in model.parameters()):,} parameters')
    if config.THROUGHPUT_MODE:
        measure_throughput(config, model, dist_info.device)
        return 0
    if config.EVAL_MODE:
        evaluate_checkpoint(config, dist_info, model)
        return 0
    ignored = keys_the_original_ignored(config)
    if ignored:
        logger.info('in effect here, ignored by the original code (see README, Differences from the original): '
                    + '; '.join(ignored))
    trainer = Trainer(config, dist_info, model)
    try:
        trainer.fit()
    except PreemptedError:  # saved; 0 (130 after Ctrl-C), a SLURM job requeued on SIGUSR1
        return finish_preempted(trainer.preemption.signal_name, dist_info.is_main)
    finally:
        trainer.preemption.uninstall()
        trainer.tb.close()
    if config.TRAIN.FINAL_TEST:
        trainer.final_test()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = get_config(args)
    except ConfigError as e:
        print(f'main.py: error: {e}', file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        dist_info = du.init_distributed(args.local_rank)
    except du.LaunchError as e:
        print(f'main.py: error: {e}', file=sys.stderr)
        return EXIT_USER_ERROR
    lock = None
    try:
        lock = lock_run_folder(config.OUTPUT)  # before anything is written there
        return run(config, dist_info)
    except RunLockedError as e:
        print(f'main.py: error: {e}', file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C outside training, or a second one during its save
        print('main.py: interrupted (Ctrl-C)', file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, CheckpointError, PretrainedMismatchError, AnnotationError, FileNotFoundError) as e:
        logger.error(f'{type(e).__name__}: {e}')  # a user error: one line, no traceback
        print(f'main.py: error: {e}', file=sys.stderr)
        return EXIT_USER_ERROR
    except NonFiniteLossError as e:
        logger.error(f'stopping: {e}')
        return EXIT_NON_FINITE_LOSS
    except (TooManyUnreadableError, UnreadableVideosError) as e:
        logger.error(f'stopping: {e}')
        return EXIT_TOO_MANY_UNREADABLE
    finally:
        release_run_lock(lock)
        du.cleanup()


if __name__ == '__main__':
    sys.exit(main())
