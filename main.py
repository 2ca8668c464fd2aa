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
unreadable videos, 130 Ctrl-C (after saving last.pth when it came during training). Signals are handled for the
whole life of the process (``engine/preemption.py``), the final test and --eval included; a finished run given
again says so and changes nothing (``engine/finished.py``).

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

if __name__ == '__main__':  # Ctrl-C during the imports below (torch, timm: seconds) is one line, not a traceback
    import signal as _signal
    import sys as _sys

    def _interrupted_while_starting(signum, frame):
        print('main.py: interrupted (Ctrl-C)', file=_sys.stderr)
        raise SystemExit(130)

    _signal.signal(_signal.SIGINT, _interrupted_while_starting)

import argparse
import difflib
import json
import logging
import os
import sys
from typing import Any, List, NoReturn, Optional

from utils.threads import cpu_thread_plan, set_passive_wait_policy

set_passive_wait_policy()  # idle OpenMP threads sleep: read once, when torch starts its pool (before import torch)

from datasets import AnnotationError, UnreadableVideosError, ensure_toy_dataset
from datasets.toy import is_complete as toy_is_complete
from engine.amp import AMP_OPT_LEVELS
from engine.checkpoint import CheckpointError, PretrainedMismatchError
from engine.checkpoint.weights import set_allow_non_finite
from engine.config import ConfigError, apply_lr_scaling, config_to_yaml, get_config, keys_the_original_ignored
from engine.data_summary import log_data_summary
from engine.layout import apply_global_batch
from engine.preflight import check_run_files, will_auto_resume
from engine.run_identity import check_same_run
from engine.evaluator import evaluate_checkpoint
from engine.finished import finished_run
from engine.preemption import EXIT_INTERRUPTED, PreemptedError, StoppedDuringStartup, finish_preempted, process_flag
from engine.throughput import measure_throughput
from engine.trainer import NonFiniteLossError, TooManyUnreadableError, Trainer
from engine.weight_init import apply_weight_init
from models import build_model
from utils import distributed as du
from utils.env import configure_determinism, environment_summary, local_process_count, seed_everything
from utils.fs import atomic_write_text
from utils.logger import FILE_ONLY, close_logging, file_only, setup_logging, start_log_file
from utils.run_lock import RunLockedError, lock_run_folder, release_run_lock

logger = logging.getLogger('main')

EXIT_USER_ERROR = 2
EXIT_NON_FINITE_LOSS = 3
EXIT_TOO_MANY_UNREADABLE = 4
# the exit code of a rank that stops because another one failed with this error (see main's except clauses)
PEER_EXIT_CODES = {'ConfigError': EXIT_USER_ERROR, 'CheckpointError': EXIT_USER_ERROR,
                   'AnnotationError': EXIT_USER_ERROR, 'NonFiniteLossError': EXIT_NON_FINITE_LOSS,
                   'TooManyUnreadableError': EXIT_TOO_MANY_UNREADABLE,
                   'UnreadableVideosError': EXIT_TOO_MANY_UNREADABLE}


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (with the closest flag for an unknown one) instead of the usage dump."""

    def error(self, message: str) -> NoReturn:
        flags = [f for action in self._actions for f in action.option_strings]
        unknown = [word for word in message.split() if word.startswith('--') or (word.startswith('-') and
                                                                                    len(word) == 2)]
        hints = []
        if message.startswith('unrecognized arguments'):
            for word in unknown:
                close = difflib.get_close_matches(word.split('=', 1)[0], flags, n=1, cutoff=0.6)
                if close:
                    hints.append(f'did you mean {close[0]} (not {word})?')
        tail = ' '.join(hints) if hints else f'{self.prog} --help lists the flags'
        self.exit(2, f'{self.prog}: error: {message}; {tail}\n')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = OneLineParser('main.py', description='Train / evaluate Video-FocalNets. Flags override '
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


def set_cpu_threads(config: Any) -> None:
    """The compute threads of a CPU run (``utils.threads``: usable CPUs less the loader workers), one line."""
    import torch
    threads, line = cpu_thread_plan(config.CPU_THREADS, config.DATA.NUM_WORKERS, local_process_count())
    if threads is not None:
        torch.set_num_threads(threads)
    logger.info(line)


def start_run(config: Any, dist_info: du.DistInfo, env: dict) -> None:
    """The run is known to start (every file found, checkpoints loaded): only now is the run folder written
    (config.yaml and environment.json by rank 0, every rank's log file with what was logged so far)."""
    if dist_info.is_main:
        atomic_write_text(os.path.join(config.OUTPUT, 'config.yaml'), config_to_yaml(config))
        atomic_write_text(os.path.join(config.OUTPUT, 'environment.json'), json.dumps(env, indent=2) + '\n')
    start_log_file()


def run(config: Any, dist_info: du.DistInfo, resume_changes: Optional[List[str]] = None) -> int:
    # --throughput measures and writes nothing; the other modes' log file waits for start_run
    setup_logging(None if config.THROUGHPUT_MODE else config.OUTPUT, dist_info.rank, config.MODEL.NAME,
                  defer_file=True)
    finished = du.all_gather_object(finished_run(config) if dist_info.is_main else None)[0]
    if finished:  # the same command again: nothing to train or test, nothing is read or written
        logger.info(finished)
        return 0
    if not (config.EVAL_MODE or config.THROUGHPUT_MODE):  # the recipe's global batch on these processes
        config = apply_global_batch(config, dist_info.world_size, logger)
    prepare_toy_data(config, dist_info)  # logged, so that the generation of a fresh checkout is visible
    base_lr = config.TRAIN.BASE_LR
    if not (config.EVAL_MODE or config.THROUGHPUT_MODE):
        config = apply_lr_scaling(config, dist_info.world_size)
    if config.TRAIN.BASE_LR != base_lr:
        logger.info(f'linear LR scaling (TRAIN.LR_SCALING): {config.DATA.BATCH_SIZE} clips x {dist_info.world_size} '
                    f'processes x {max(1, config.TRAIN.ACCUMULATION_STEPS)} accumulation steps / 512: BASE_LR '
                    f'{base_lr:g} -> {config.TRAIN.BASE_LR:g} (WARMUP_LR, MIN_LR alike)')
    if dist_info.device.type == 'cpu':
        set_cpu_threads(config)
    env = environment_summary(dist_info.device, dist_info.world_size)
    log_run_summary(config, dist_info, env)
    if resume_changes:
        logger.info('continuing the run with changes allowed on resume: ' + '; '.join(resume_changes))
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
        evaluate_checkpoint(config, dist_info, model, on_start=lambda: after_start(config, dist_info, env))
        return 0
    ignored = keys_the_original_ignored(config)
    if ignored:
        logger.info('in effect here, ignored by the original code (see README, Differences from the original): '
                    + '; '.join(ignored))
    trainer = Trainer(config, dist_info, model)  # loads --resume / last.pth / the ImageNet weights
    after_start(config, dist_info, env)
    try:  # a signal from here on (final test included) ends in main's PreemptedError: saved, requeued, exit code
        if trainer.state['start_epoch'] >= config.TRAIN.EPOCHS:  # the final test was interrupted or never written
            logger.info(f'training finished earlier (epoch {config.TRAIN.EPOCHS}/{config.TRAIN.EPOCHS}): running '
                        'only the final test' if config.TRAIN.FINAL_TEST else 'training finished earlier')
        else:
            trainer.fit()
        if config.TRAIN.FINAL_TEST:
            trainer.final_test()
    finally:
        trainer.tb.close()
    return 0


def after_start(config: Any, dist_info: du.DistInfo, env: dict) -> None:
    """Start-up is over: write the run folder (``start_run``) and shorten the collective timeout, so that a
    process that dies or hangs from here on stops the others within DIST_TIMEOUT_MIN minutes."""
    start_run(config, dist_info, env)
    du.set_collective_timeout(config.DIST_TIMEOUT_MIN)


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
    # SIGTERM / SIGUSR1 / SIGINT are handled for the whole life of the process: a signal before training,
    # during it, in the final test or in --eval ends in a save point or a clean stop, and run.lock is released
    stop = process_flag(defer_interrupts=False)  # a Ctrl-C during start-up stops at once
    try:
        return main_with_signals(argv)
    except StoppedDuringStartup:  # SIGTERM / SIGUSR1 before the run took its output folder (config, launcher)
        print(f'main.py: stopped by {stop.signal_name} during start-up; nothing to save', file=sys.stderr)
        return finish_preempted(stop.signal_name, int(os.environ.get('RANK', '0') or 0) == 0,
                                'stopped during start-up, nothing to save', stop.seconds_since_signal())
    finally:
        stop.uninstall()


def main_with_signals(argv: Optional[List[str]] = None) -> int:
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
    try:  # before the lock or any write: a refused start leaves the run folder as it was
        resume_changes = check_same_run(config, dist_info.world_size, will_auto_resume(config))
    except ConfigError as e:
        du.cleanup()
        return user_error(str(e))
    lock = None
    try:
        # before anything is written there; --throughput writes nothing, so another run's lock does not concern it
        lock = None if config.THROUGHPUT_MODE else lock_run_folder(config.OUTPUT)
        return run(config, dist_info, resume_changes)
    except RunLockedError as e:
        return user_error(str(e))
    except KeyboardInterrupt:  # Ctrl-C outside training, or a second one during its save
        print('main.py: interrupted (Ctrl-C)', file=sys.stderr)
        return EXIT_INTERRUPTED
    except PreemptedError as e:  # every rank agreed on a signal: saved (training) or stopped (final test, --eval)
        stop = process_flag()
        return finish_preempted(stop.signal_name, dist_info.is_main, e.saved, stop.seconds_since_signal())
    except StoppedDuringStartup:  # SIGTERM / SIGUSR1 before training or evaluation began: nothing to save
        stop = process_flag()
        return finish_preempted(stop.signal_name, dist_info.is_main, 'stopped during start-up, nothing to save',
                                stop.seconds_since_signal())
    except du.PeerFailedError as e:  # another rank's error: this rank stops with it, with the same exit code
        logger.error(f'stopping: {one_line_message(e)}')
        return PEER_EXIT_CODES.get(e.kind, 1)
    except (ConfigError, CheckpointError, PretrainedMismatchError, AnnotationError, FileNotFoundError) as e:
        logger.error(f'{type(e).__name__}: {e}', extra=FILE_ONLY)  # the console gets the one line of user_error
        return user_error(str(e))
    except NonFiniteLossError as e:
        logger.error(f'stopping: {one_line_message(e)}')
        return EXIT_NON_FINITE_LOSS
    except (TooManyUnreadableError, UnreadableVideosError) as e:
        logger.error(f'stopping: {one_line_message(e)}')
        return EXIT_TOO_MANY_UNREADABLE
    except RuntimeError as e:  # a peer died or hangs: one line instead of a traceback per rank
        if not du.is_collective_failure(e):
            raise
        first = one_line_message(e).splitlines()[0] if str(e).strip() else type(e).__name__
        logger.error(f'stopping: the other processes of this run stopped answering (a process died or hangs: its '
                     f'own log says why; the wait is DIST_TIMEOUT_MIN={config.DIST_TIMEOUT_MIN:g} minutes): {first}')
        return 1
    finally:
        process_flag().defer_interrupts()  # a signal now only gets recorded: nothing may stop the clean-up
        release_run_lock(lock)
        du.cleanup()
        close_logging()


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before the run's own handling starts (the command line, the config)
        print('main.py: interrupted (Ctrl-C)', file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
