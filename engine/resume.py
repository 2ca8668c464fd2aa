"""Where a run starts from and how its state comes back: auto-resume, restoring optimizer / scheduler /
scaler / EMA / RNG state, and skipping the batches an interrupted epoch already consumed.

How it differs from the original (spec 4.7, 7.21):

* an explicit ``--resume`` / ``MODEL.RESUME`` always wins; ``TRAIN.AUTO_RESUME`` looks for ``OUTPUT/last.pth``
  (then the newest loadable ``ckpt_epoch_N.pth``) only when nothing was given, and never in ``--eval`` (the
  original swapped in "the most recently modified file ending in pth", even then);
* exact resume: every rank's RNG and mixup states are saved (``rng_per_rank``) and restored, and a
  mid-epoch resume (after a preemption) skips the consumed batches without loading them; with another
  number of processes or batch size the position is mapped by clips consumed (:func:`resume_position`);
* rank 0 alone decides where a run starts (:func:`decide_start`; every rank then reads that file, so output
  folders that are not shared between nodes cannot make ranks start at different epochs), and a start from
  scratch in a folder that holds an earlier run's checkpoints is refused unless ``TRAIN.ALLOW_START_OVER``.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch.utils.data import DataLoader, Sampler

from engine.checkpoint import CheckpointError, capture_rng_state
from engine.checkpoint.loading import PathLike, load_checkpoint_mapped
from engine.checkpoint.saving import METRICS_FILE, read_best
from engine.config import ConfigError
from utils.distributed import all_gather_object

_logger = logging.getLogger(__name__)


def resolve_resume(config: Any) -> Optional[str]:
    """The checkpoint to start from: ``MODEL.RESUME`` if set, else (training only, ``TRAIN.AUTO_RESUME``)
    ``OUTPUT/last.pth`` when it exists, else None. ``--eval`` requires ``MODEL.RESUME``."""
    if config.MODEL.RESUME:
        return config.MODEL.RESUME
    if config.EVAL_MODE:
        raise ConfigError('--eval needs the checkpoint to evaluate: pass --resume CHECKPOINT '
                          '(auto-resume never applies to --eval)')
    if config.TRAIN.AUTO_RESUME:
        return find_auto_resume(config.OUTPUT)
    return None


def own_random_state(mixup: Any = None) -> Dict[str, Any]:
    """This rank's RNG states and mixup generator, as :func:`gather_random_states` collects them."""
    return {'rng': capture_rng_state(), 'mixup': mixup.state_dict() if mixup is not None else None}


def gather_random_states(mixup: Any = None, own: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Every rank's RNG states and mixup generator, in rank order (a collective: call on all ranks); ``own``:
    this rank's, taken earlier with :func:`own_random_state` (default: now).

    Ranks draw different numbers (seeds SEED + rank), so an exact multi-process resume needs each
    rank's own state, not only rank 0's."""
    return all_gather_object(own if own is not None else own_random_state(mixup))


def pick_random_state(checkpoint: Dict[str, Any], rank: int, world_size: int) -> Optional[Dict[str, Any]]:
    """This rank's ``{'rng', 'mixup'}`` from ``checkpoint`` (None when it has none, e.g. the original's)."""
    per_rank = checkpoint.get('rng_per_rank') or []
    if len(per_rank) == world_size:
        return per_rank[rank]
    if checkpoint.get('rng') is None:
        return None
    if world_size > 1 or per_rank:
        _logger.warning(f'random states were saved for {max(1, len(per_rank))} process(es), resuming with '
                        f'{world_size}: every rank starts from rank 0\'s states (results will not match an '
                        'uninterrupted run exactly)')
    return {'rng': checkpoint['rng'], 'mixup': checkpoint.get('mixup')}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> bool:
    """Load the per-parameter state (momentum, Adam moments, step counts) of ``state`` into ``optimizer``.

    Hyper-parameters (weight decay, momentum, betas ...) stay those of today's config; the LR is set by the
    scheduler. A state of another optimizer type or grouping (e.g. the original's SGD groups, or AdamW
    state for an SGD run) is reported and not loaded. Returns whether it was loaded.
    """
    saved_groups = state.get('param_groups', [])
    own_keys = [set(g) - {'params', 'initial_lr'} for g in optimizer.param_groups]
    saved_keys = [set(g) - {'params', 'initial_lr'} for g in saved_groups]
    sizes = [len(g['params']) for g in optimizer.param_groups]
    saved_sizes = [len(g['params']) for g in saved_groups]
    if own_keys != saved_keys or sizes != saved_sizes:
        _logger.warning(f'optimizer state in the checkpoint does not fit {type(optimizer).__name__} with groups of '
                        f'{sizes} parameters (it has {saved_sizes}, options {sorted(set().union(*saved_keys))}): '
                        'the optimizer starts fresh')
        return False
    hyper = [{k: v for k, v in g.items() if k != 'params'} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, hyper):
        group.update(own)
    return True


def restore_training_state(checkpoint: Dict[str, Any], *, optimizer: torch.optim.Optimizer, scheduler: Any,
                           scaler: torch.amp.GradScaler, ema: Any = None, rank: int = 0,
                           world_size: int = 1) -> Dict[str, Any]:
    """Restore optimizer, scaler and EMA from ``checkpoint`` (the model is loaded by the caller).

    Returns ``start_epoch``, ``start_step`` (updates to skip in ``start_epoch``), ``max_accuracy`` and
    ``random`` (this rank's RNG / mixup states, restored by ``main`` at the right moment).
    The scheduler position follows from epoch and step, so a checkpoint of the original (timm scheduler
    dict, no step) resumes at the epoch boundary. Parts that do not fit (the original's optimizer groups)
    are reported and left fresh.
    """
    if checkpoint.get('optimizer'):
        load_optimizer_state(optimizer, checkpoint['optimizer'])
    if checkpoint.get('lr_scheduler'):
        scheduler.load_state_dict(checkpoint['lr_scheduler'])
    if scaler.is_enabled() and checkpoint.get('scaler'):
        scaler.load_state_dict(checkpoint['scaler'])
    if ema is not None:
        if checkpoint.get('ema'):
            ema.load_state_dict(checkpoint['ema'])
        else:
            _logger.warning('TRAIN.EMA is on but the checkpoint has no EMA weights: the average restarts from them')
    epoch = int(checkpoint.get('epoch', -1))
    return {'start_epoch': epoch + 1, 'start_step': int(checkpoint.get('epoch_step', 0) or 0),
            'max_accuracy': float(checkpoint.get('max_accuracy', 0.0) or 0.0),
            'random': pick_random_state(checkpoint, rank, world_size)}


EPOCH_CHECKPOINT = re.compile(r'ckpt_epoch_(\d+)\.pth')


def checkpoint_problem(path: str) -> Optional[str]:
    """None when ``path`` is a complete checkpoint with a 'model' entry, else the reason it is not."""
    try:
        checkpoint = load_checkpoint_mapped(path)  # checks structure without reading tensor data
    except (CheckpointError, OSError) as e:
        return str(e).replace(f'{path}: ', '')
    if 'model' not in checkpoint:
        return "no 'model' entry"
    return None


def find_auto_resume(output_dir: PathLike, logger: Optional[logging.Logger] = None) -> Optional[str]:
    """Checkpoint to resume from in ``output_dir``: ``last.pth`` if it loads, else the loadable
    ``ckpt_epoch_N.pth`` with the largest N, else None. Corrupt files are logged and passed over."""
    log = logger or _logger
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return None
    last = os.path.join(output_dir, 'last.pth')
    epochs = sorted(((int(m.group(1)), name) for name in os.listdir(output_dir)
                     if (m := EPOCH_CHECKPOINT.fullmatch(name))), reverse=True)
    candidates = ([last] if os.path.exists(last) else []) + [os.path.join(output_dir, n) for _, n in epochs]
    for candidate in candidates:
        problem = checkpoint_problem(candidate)
        if problem is None:
            if candidate != last:
                log.warning('auto-resume: %s', 'last.pth is not usable, falling back to ' + candidate
                            if os.path.exists(last) else 'no last.pth, using ' + candidate)
            log.info('auto-resume from %s', candidate)
            return candidate
        log.warning('auto-resume: skipping %s (%s)', candidate, problem)
    return None


class _SkipSampler(Sampler):
    """Yields ``sampler``'s indices from position ``start`` on (cheap: indices only, no data loaded)."""

    def __init__(self, sampler: Any, start: int) -> None:
        self.sampler = sampler
        self.start = start

    def __iter__(self) -> Iterator[int]:
        for position, index in enumerate(self.sampler):
            if position >= self.start:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)


def skip_first_batches(loader: DataLoader, num_batches: int) -> DataLoader:
    """A loader over the same dataset that starts ``num_batches`` batches into ``loader``'s epoch.

    Used to resume mid-epoch: the sampler's order is a function of (seed, epoch) and the data
    randomness of (seed, epoch, index), so the remaining batches are exactly those of an uninterrupted
    run. Call ``set_epoch`` on the original sampler first.
    """
    if num_batches <= 0:
        return loader
    if loader.batch_size is None:
        raise ValueError('skip_first_batches: the loader must batch with a fixed batch_size')
    kwargs = dict(batch_size=loader.batch_size, sampler=_SkipSampler(loader.sampler, num_batches * loader.batch_size),
                  num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                  drop_last=loader.drop_last, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                  generator=loader.generator)
    if loader.num_workers > 0:
        kwargs.update(prefetch_factor=loader.prefetch_factor, persistent_workers=False,
                      multiprocessing_context=loader.multiprocessing_context)
    return DataLoader(loader.dataset, **kwargs)


def run_files(output_dir: str) -> List[str]:
    """The checkpoint files of a run in ``output_dir`` (``last.pth``, ``best.pth``, ``ckpt_epoch_N.pth``)."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(n for n in os.listdir(output_dir) if n in ('last.pth', 'best.pth') or EPOCH_CHECKPOINT.fullmatch(n))


def decide_start(config: Any) -> Dict[str, Any]:
    """Where training starts, decided once (rank 0) and then sent to every rank.

    Returns ``path`` (the checkpoint to resume from, or ''), ``name`` (its name inside OUTPUT when auto-resume
    chose it: each rank reads ``its`` OUTPUT/name, so node-local output folders work when they hold a copy),
    ``best`` (:func:`read_best` of OUTPUT), ``move_aside`` (an earlier run's files that a permitted start over
    moves away) and ``error`` (a refusal, one line). Nothing is changed on disk here."""
    decision: Dict[str, Any] = {'path': '', 'name': '', 'best': read_best(config.OUTPUT), 'move_aside': [],
                                'error': ''}
    try:
        path = resolve_resume(config)
    except ConfigError as e:
        decision['error'] = str(e)
        return decision
    if path:
        decision['path'] = path
        if not config.MODEL.RESUME:
            decision['name'] = os.path.relpath(path, config.OUTPUT)
        return decision
    existing = run_files(config.OUTPUT)
    if existing and not config.TRAIN.ALLOW_START_OVER:
        best = decision['best']
        held = f" (best.pth: epoch {best['epoch']}, top-1 {best['accuracy']:.2f}%)" \
            if best['accuracy'] is not None else ''
        why = 'auto-resume found no loadable checkpoint (the log says why)' if config.TRAIN.AUTO_RESUME \
            else 'TRAIN.AUTO_RESUME is off'
        decision['error'] = (f"{config.OUTPUT} holds an earlier run's {', '.join(existing)}{held} and {why}: "
                             'starting from scratch would replace them; pass --resume CHECKPOINT, use another '
                             '--output / --tag, or set TRAIN.ALLOW_START_OVER True to move them aside and start over')
        return decision
    decision['move_aside'] = existing + ([METRICS_FILE] if os.path.isfile(os.path.join(config.OUTPUT, METRICS_FILE))
                                         else [])
    if existing:
        decision['best'] = dict(decision['best'], accuracy=None, exists=False)  # moved away before training
    return decision


def move_aside(output_dir: str, names: List[str], logger: Optional[logging.Logger] = None) -> str:
    """Move ``names`` of ``output_dir`` into a new ``previous-<time>`` folder there (nothing is deleted)."""
    if not names:
        return ''
    folder = os.path.join(output_dir, time.strftime('previous-%Y%m%d-%H%M%S'))
    suffix = 0
    while os.path.exists(folder + (f'-{suffix}' if suffix else '')):
        suffix += 1
    folder += f'-{suffix}' if suffix else ''
    os.makedirs(folder)
    for name in names:
        os.replace(os.path.join(output_dir, name), os.path.join(folder, name))
    (logger or _logger).warning(f"starting over (TRAIN.ALLOW_START_OVER): the earlier run's {', '.join(names)} "
                                f'moved to {folder}')
    return folder


def resume_position(checkpoint: Dict[str, Any], *, world_size: int, batch_size: int, accumulation_steps: int,
                    updates_per_epoch: int, logger: Optional[logging.Logger] = None) -> int:
    """Optimizer updates to skip in the resumed epoch, in this run's updates.

    The training sampler cuts one permutation per epoch into global batches of consecutive indices, so the
    clips an interrupted epoch consumed are the first ``epoch_step x world_size x batch x accumulation`` of its
    order whatever the number of processes. With the same global update they are ``epoch_step`` updates; with
    another one they are mapped exactly when they make whole updates of this run, else the resume starts at
    the update before (the few clips in between are trained on twice) with a warning. Checkpoints without the
    sizes (older versions, the original's) resume at ``epoch_step`` as saved."""
    log = logger or _logger
    step = int(checkpoint.get('epoch_step', 0) or 0)
    saved = [checkpoint.get(k) for k in ('world_size', 'batch_size', 'accumulation_steps')]
    if step == 0 or not all(isinstance(v, int) and v > 0 for v in saved):
        return step
    now = [world_size, batch_size, max(1, accumulation_steps)]
    old_update, new_update = saved[0] * saved[1] * saved[2], now[0] * now[1] * now[2]
    if saved == now:
        return step
    consumed = step * old_update
    mapped, rest = divmod(consumed, new_update)
    sizes = 'processes x clips per process x accumulation steps'
    if rest:
        log.warning(f'resuming mid-epoch with {" x ".join(map(str, now))} ({sizes}) a checkpoint saved with '
                    f'{" x ".join(map(str, saved))} after {step} updates = {consumed} clips: not a whole number of '
                    f'updates of {new_update} clips, so the epoch resumes at update {mapped} ({mapped * new_update} '
                    f'clips) and {rest} clips are trained on twice')
    else:
        log.info(f'resuming mid-epoch: {step} updates of {old_update} clips ({" x ".join(map(str, saved))} {sizes}) '
                 f'= {mapped} updates of {new_update} clips ({" x ".join(map(str, now))})')
    if mapped > updates_per_epoch:
        log.warning(f'the saved position ({consumed} clips) is past this run\'s epoch of {updates_per_epoch} '
                    'updates: the epoch ends here')
    return min(mapped, updates_per_epoch)
