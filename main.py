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

The start, in order: the config (``--cfg`` also finds the original's ``video_focalnet_*.yaml`` spelling, and
suggests the closest configs for a wrong path); every file the mode reads (``engine/preflight.py``: lists,
label list, the videos' folder, ``--resume``, the ImageNet file), each problem one line, before a model is
built or anything is logged; then a short summary on the console (the full config and the environment go to
the log file). Nothing is written into the run folder (config.yaml, environment.json, the log) before the
checkpoints are loaded and the loaders built (``start_run``), so a failed start leaves a finished run as it was.
``--eval`` writes into ``<run folder>/eval/<checkpoint stem>_<clips>x<crops>/`` (``engine.config.eval_output_dir``)
and ``--throughput`` writes nothing: no mode replaces a file another mode wrote.
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
from engine.checkpoint.weights import set_allow_non_finite
from engine.config import ConfigError, apply_lr_scaling, config_to_yaml, get_config, keys_the_original_ignored
from engine.data_summary import log_data_summary
from engine.preflight import check_run_files, will_auto_resume
from engine.evaluator import evaluate_checkpoint
from engine.preemption import EXIT_INTERRUPTED, PreemptedError, finish_preempted
from engine.throughput import measure_throughput
from engine.trainer import NonFiniteLossError, TooManyUnreadableError, Trainer
from engine.weight_init import apply_weight_init
from models import build_model
from utils import distributed as du
from utils.env import configure_determinism, environment_summary, seed_everything
from utils.fs import atomic_write_text
from utils.logger import FILE_ONLY, close_logging, file_only, setup_logging, start_log_file
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
    parser.add_argument('--allow-non-finite', action='store_true',
                        help='load checkpoint weights that hold NaN or inf (refused by default)')
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


def files_to_generate(config: Any) -> List[str]:
    """The toy files this run will generate (not looked for by the start-up checks): the missing lists, and
    then the label list and DATA.ROOT, which the generation creates alongside them."""
    missing = missing_toy_files(config)
    return missing + [os.path.join(config.DATA.ROOT, 'labels.csv'), config.DATA.ROOT] if missing else []


def log_run_summary(config: Any, dist_info: du.DistInfo, env: dict) -> None:
    """The console's few lines about the run; the full config and the environment go to the log file only
    (except for --throughput, which writes no file: its figure is only as good as the environment beside it)."""
    logger.info('environment: ' + ', '.join(f'{k} {v}' for k, v in env.items()),
                extra=None if config.THROUGHPUT_MODE else FILE_ONLY)
    logger.info(f'config:\n{config_to_yaml(config)}', extra=FILE_ONLY)
    model = config.MODEL.NAME or config.MODEL.TYPE
    if config.THROUGHPUT_MODE:
        logger.info(f'measuring the throughput of {model} (batch {config.DATA.BATCH_SIZE}, {config.DATA.NUM_FRAMES} '
                    f'frames of {config.DATA.INPUT_SIZE}px) on device {dist_info.device}; no files are written')
        return
    if config.EVAL_MODE:
        logger.info(f'evaluating {config.MODEL.RESUME} ({model}) on {config.DATA.VAL_FILE} with '
                    f'{config.TEST.NUM_CLIP} clips x {config.TEST.NUM_CROP} crops, device {dist_info.device} x '
                    f'{dist_info.world_size} process(es); results to {config.OUTPUT}'
                    + (' (replacing those of the same evaluation before)'
                       if os.path.isfile(os.path.join(config.OUTPUT, 'eval_results.json')) else ''))
        return
    accum = max(1, config.TRAIN.ACCUMULATION_STEPS)
    if config.MODEL.RESUME:
        start = config.MODEL.RESUME
    elif will_auto_resume(config):
        start = "the output folder's own checkpoints (auto-resume)"
    else:
        start = f'the weights of {config.TRAIN.PRETRAINED_PATH}' if config.TRAIN.PRETRAINED_PATH else 'scratch'
    logger.info(f'training {model} on {config.DATA.DATASET} from {start}: {config.TRAIN.EPOCHS} epochs, batch '
                f'{config.DATA.BATCH_SIZE} x {dist_info.world_size} process(es) x {accum} accumulation step(s), '
                f'base LR {config.TRAIN.BASE_LR:g} ({config.TRAIN.OPTIMIZER.NAME}, {config.TRAIN.LR_SCHEDULER.NAME}), '
                f'device {dist_info.device}; '
                f'output {config.OUTPUT} (full config in config.yaml there)')


def start_run(config: Any, dist_info: du.DistInfo, env: dict) -> None:
    """The run is known to start (every file found, checkpoints loaded): only now is the run folder written
    (config.yaml and environment.json by rank 0, every rank's log file with what was logged so far)."""
    if dist_info.is_main:
        atomic_write_text(os.path.join(config.OUTPUT, 'config.yaml'), config_to_yaml(config))
        atomic_write_text(os.path.join(config.OUTPUT, 'environment.json'), json.dumps(env, indent=2) + '\n')
    start_log_file()


def run(config: Any, dist_info: du.DistInfo) -> int:
    # --throughput measures and writes nothing; the other modes' log file waits for start_run
    setup_logging(None if config.THROUGHPUT_MODE else config.OUTPUT, dist_info.rank, config.MODEL.NAME,
                  defer_file=True)
    prepare_toy_data(config, dist_info)  # logged, so that the generation of a fresh checkout is visible
    base_lr = config.TRAIN.BASE_LR
    if not (config.EVAL_MODE or config.THROUGHPUT_MODE):
        config = apply_lr_scaling(config, dist_info.world_size)
    if config.TRAIN.BASE_LR != base_lr:
        logger.info(f'linear LR scaling (TRAIN.LR_SCALING): {config.DATA.BATCH_SIZE} clips x {dist_info.world_size} '
                    f'processes x {max(1, config.TRAIN.ACCUMULATION_STEPS)} accumulation steps / 512: BASE_LR '
                    f'{base_lr:g} -> {config.TRAIN.BASE_LR:g} (WARMUP_LR, MIN_LR alike)')
    env = environment_summary(dist_info.device, dist_info.world_size)
    log_run_summary(config, dist_info, env)
    if not config.THROUGHPUT_MODE:
        with file_only():  # a line per list with its sha256: the log file's business
            log_data_summary(config)
    seed_everything(config.SEED + dist_info.rank)
    configure_determinism(config.TRAIN.DETERMINISTIC)

    model = build_model(config)
    if not config.EVAL_MODE:  # --eval loads every weight from its checkpoint: an init would be logged, then overwritten
        apply_weight_init(model, config.MODEL.INIT)  # before any checkpoint or pretrained weights are loaded
    if config.TRAIN.USE_CHECKPOINT:
        model.set_grad_checkpointing(True)
    model.to(dist_info.device)
    logger.info(f'{config.MODEL.NAME or config.MODEL.TYPE}: {sum(p.numel() for p in model.parameters()):,} parameters')
    if config.THROUGHPUT_MODE:
        measure_throughput(config, model, dist_info.device)
        return 0
    if config.EVAL_MODE:
        evaluate_checkpoint(config, dist_info, model, on_start=lambda: start_run(config, dist_info, env))
        return 0
    ignored = keys_the_original_ignored(config)
    if ignored:
        logger.info('in effect here, ignored by the original code (see README, Differences from the original): '
                    + '; '.join(ignored))
    trainer = Trainer(config, dist_info, model)  # loads --resume / last.pth / the ImageNet weights
    start_run(config, dist_info, env)
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


def user_error(message: str) -> int:
    """A user error: one line on stderr (from the first process only under torchrun), exit code 2."""
    if int(os.environ.get('RANK', '0') or 0) == 0:
        print(f'main.py: error: {message}', file=sys.stderr)
    return EXIT_USER_ERROR


def one_line_message(error: BaseException) -> str:
    """The message of ``error``. An exception raised in a DataLoader worker is re-raised by the loader with the
    worker's whole traceback as its message: the original message is its last line."""
    text = str(error).strip()
    if 'Original Traceback' in text:
        last = text.splitlines()[-1]
        return last.split(': ', 1)[1] if ': ' in last and last.split(': ', 1)[0].replace('.', '').isidentifier() \
            else last
    return text


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    set_allow_non_finite(args.allow_non_finite)
    try:
        config = get_config(args)
        check_run_files(config, generated=files_to_generate(config))  # before a model exists or a line is logged
    except (ConfigError, AnnotationError) as e:
        return user_error(str(e))
    try:
        dist_info = du.init_distributed(args.local_rank)
    except du.LaunchError as e:
        return user_error(str(e))
    lock = None
    try:
        lock = lock_run_folder(config.OUTPUT)  # before anything is written there
        return run(config, dist_info)
    except RunLockedError as e:
        return user_error(str(e))
    except KeyboardInterrupt:  # Ctrl-C outside training, or a second one during its save
        print('main.py: interrupted (Ctrl-C)', file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, CheckpointError, PretrainedMismatchError, AnnotationError, FileNotFoundError) as e:
        logger.error(f'{type(e).__name__}: {e}', extra=FILE_ONLY)  # the console gets the one line of user_error
        return user_error(str(e))
    except NonFiniteLossError as e:
        logger.error(f'stopping: {one_line_message(e)}')
        return EXIT_NON_FINITE_LOSS
    except (TooManyUnreadableError, UnreadableVideosError) as e:
        logger.error(f'stopping: {one_line_message(e)}')
        return EXIT_TOO_MANY_UNREADABLE
    finally:
        release_run_lock(lock)
        du.cleanup()
        close_logging()


if __name__ == '__main__':
    sys.exit(main())
