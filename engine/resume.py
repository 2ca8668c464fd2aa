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

import dataclasses
import logging
import math
import numbers
import os
import random
import re
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional

import numpy as np

import torch
from torch.utils.data import DataLoader, Sampler

from engine.checkpoint import CheckpointError, capture_rng_state
from engine.checkpoint.loading import PathLike, load_checkpoint_mapped
from engine.checkpoint.saving import METRICS_FILE, read_best
from engine.config import ConfigError
from engine.meters import EPOCH_METERS, meter_state_problem
from utils.distributed import all_gather_object
from utils.run_lock import LOCK_NAME

_logger = logging.getLogger(__name__)


def resolve_resume(config: Any, target: Optional['ResumeTarget'] = None) -> Optional[str]:
    """The checkpoint to start from: ``MODEL.RESUME`` if set, else (training only, ``TRAIN.AUTO_RESUME``)
    ``OUTPUT/last.pth`` when it exists, else None. ``--eval`` requires ``MODEL.RESUME``."""
    if config.MODEL.RESUME:
        return config.MODEL.RESUME
    if config.EVAL_MODE:
        raise ConfigError('--eval needs the checkpoint to evaluate: pass --resume CHECKPOINT '
                          '(auto-resume never applies to --eval)')
    if config.TRAIN.AUTO_RESUME:
        return find_auto_resume(config.OUTPUT, target=target)
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
                        f'{world_size}: every rank starts from rank 0\'s states (the training step does not draw from '
                        'them with TRAIN.LAYOUT_FREE_RANDOMNESS, the default; without it results will not match an '
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
            'random': pick_random_state(checkpoint, rank, world_size),
            'epoch_meters': pick_epoch_meters(checkpoint, rank, world_size)}


def pick_epoch_meters(checkpoint: Dict[str, Any], rank: int, world_size: int) -> Optional[Dict[str, Any]]:
    """This rank's running sums of the interrupted epoch (None at an epoch end and in older checkpoints, whose
    resumed epoch averages only the updates after the resume). With another number of processes every rank
    takes rank 0's, whose loss is the one the metrics line records."""
    per_rank = checkpoint.get('epoch_meters') or []
    if not per_rank or not int(checkpoint.get('epoch_step', 0) or 0):
        return None
    return per_rank[rank] if len(per_rank) == world_size else per_rank[0]


EPOCH_CHECKPOINT = re.compile(r'ckpt_epoch_(\d+)\.pth')


@dataclasses.dataclass
class ResumeTarget:
    """What a checkpoint must fit to be resumed by this run (:func:`resume_state_problem`). Fields left None are
    not checked: the start-up check (``engine/preflight.py``) knows the config only, the trainer everything."""
    epochs: int
    updates_per_epoch: Optional[int] = None
    world_size: Optional[int] = None
    batch_size: Optional[int] = None
    accumulation_steps: Optional[int] = None
    optimizer: Optional[torch.optim.Optimizer] = None


def _integer(value: Any) -> Optional[int]:
    """``value`` as an int when it is one (also a one-element integer tensor), else None (bools are not)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else None


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _position_problem(checkpoint: Mapping[str, Any], target: ResumeTarget) -> Optional[str]:
    epoch = -1 if checkpoint.get('epoch') is None else _integer(checkpoint.get('epoch'))
    last = target.epochs - 1
    if epoch is None or not -1 <= epoch <= last:
        return (f"epoch {checkpoint.get('epoch')!r}: expected an integer from -1 (saved during the first epoch) to "
                f'{last} (the last of TRAIN.EPOCHS {target.epochs}; raise TRAIN.EPOCHS to train a run further)')
    step = 0 if checkpoint.get('epoch_step') is None else _integer(checkpoint.get('epoch_step'))
    sizes = {k: checkpoint.get(k) for k in ('world_size', 'batch_size', 'accumulation_steps')}
    for key, value in sizes.items():
        if value is not None and (_integer(value) is None or _integer(value) < 1):
            return f'{key} {value!r}: expected a positive integer (or None)'
    if step is None or step < 0:
        return f"epoch_step {checkpoint.get('epoch_step')!r}: expected an integer >= 0 (updates done in the epoch)"
    if step and epoch == last:
        return f'epoch_step {step}: the checkpoint is at the end of the last epoch ({epoch}), no update can follow'
    if step and target.updates_per_epoch is not None:
        # clips the interrupted epoch consumed must fit into this run's epoch (mapped as resume_position does)
        saved = [_integer(v) for v in sizes.values()]
        now = [target.world_size, target.batch_size, max(1, target.accumulation_steps or 1)]
        if all(saved) and all(now):
            consumed, per_epoch = step * saved[0] * saved[1] * saved[2], target.updates_per_epoch * math.prod(now)
        else:
            consumed, per_epoch = step, target.updates_per_epoch
        if consumed > per_epoch:
            return (f'epoch_step {step}: more than the {target.updates_per_epoch} updates of an epoch of this run'
                    + (f' ({consumed} clips consumed, {per_epoch} per epoch)' if all(saved) and all(now) else ''))
    record = checkpoint.get('epoch_record')
    if record is not None and not isinstance(record, Mapping):
        return f'epoch_record: expected a dict (the metrics line of the epoch) or None, found {type(record).__name__}'
    if isinstance(record, Mapping):
        odd = [k for k, v in record.items()
               if not isinstance(k, str) or not isinstance(v, (str, int, float, type(None)))]
        if odd or _integer(record.get('epoch')) != epoch:
            return (f'epoch_record: not the metrics line of epoch {epoch} (epoch {record.get("epoch")!r}'
                    + (f', entries {odd[:3]} not plain numbers or text)' if odd else ')'))
    return None


def _optimizer_problem(state: Any, optimizer: Optional[torch.optim.Optimizer]) -> Optional[str]:
    if not isinstance(state, Mapping) or not isinstance(state.get('param_groups'), (list, tuple)) \
            or not isinstance(state.get('state', {}), Mapping):
        return 'optimizer: expected a state dict with a list of param_groups and a dict of per-parameter state'
    for i, group in enumerate(state['param_groups']):
        if not isinstance(group, Mapping) or not isinstance(group.get('params'), (list, tuple)) \
                or any(_integer(p) is None for p in group['params']):
            return f'optimizer: param_groups[{i}] is not a dict with a list of parameter ids'
    if optimizer is None:
        return None
    own = [g['params'] for g in optimizer.param_groups]
    if [len(g['params']) for g in state['param_groups']] != [len(g) for g in own]:
        return None  # another grouping (the original's): load_optimizer_state reports it and starts fresh
    for group, params in zip(state['param_groups'], own):
        for pid, param in zip(group['params'], params):
            entry = state['state'].get(pid, state['state'].get(str(pid)))
            if entry is None:
                continue
            if not isinstance(entry, Mapping):
                return f'optimizer: the state of parameter {pid} is a {type(entry).__name__}, expected a dict'
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    return (f'optimizer: state {key!r} of parameter {pid} has shape {list(value.shape)}, the '
                            f'parameter {list(param.shape)}')
                if not isinstance(value, (torch.Tensor, numbers.Real)):
                    return f'optimizer: state {key!r} of parameter {pid} is a {type(value).__name__}'
    return None


def _scheduler_problem(state: Any) -> Optional[str]:
    if not isinstance(state, Mapping):
        return f'lr_scheduler: expected a dict, found {type(state).__name__}'
    if 'num_updates' not in state and 'total_updates' not in state:
        return None  # a timm scheduler's (the original's): ignored, the position follows from the epoch
    for key in ('num_updates', 'total_updates', 'warmup_updates', 'decay_updates'):
        if key in state and (_integer(state[key]) is None or _integer(state[key]) < 0):
            return f'lr_scheduler: {key} {state[key]!r}, expected an integer >= 0'
    for key in ('warmup_lr', 'min_lr', 'decay_rate'):
        if key in state and not _finite(state[key]):
            return f'lr_scheduler: {key} {state[key]!r}, expected a finite number'
    return None


def _scaler_problem(state: Any) -> Optional[str]:
    if not isinstance(state, Mapping):
        return f'scaler: expected the dict of a GradScaler, found {type(state).__name__}'
    for key in ('scale', 'growth_factor', 'backoff_factor'):
        value = state.get(key)
        value = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        if not _finite(value) or value <= 0:
            return f'scaler: {key} {state.get(key)!r}, expected a finite number > 0'
    for key in ('growth_interval', '_growth_tracker'):
        if _integer(state.get(key)) is None or _integer(state.get(key)) < 0:
            return f'scaler: {key} {state.get(key)!r}, expected an integer >= 0'
    return None


def _random_problem(state: Any, where: str) -> Optional[str]:
    """Each saved generator state is tried on a throwaway generator of its kind: what restore_rng_state and
    the mixup generator would refuse mid-start is refused here, with the entry named."""
    if not isinstance(state, Mapping):
        return f'{where}: expected {{rng, mixup}}, found {type(state).__name__}'
    rng = state.get('rng')
    if rng is not None:
        if not isinstance(rng, Mapping):
            return f'{where} rng: expected a dict of generator states, found {type(rng).__name__}'
        trials = {
            'python': lambda v: random.Random().setstate((int(v[0]), tuple(int(x) for x in v[1].tolist()), v[2])),
            'numpy': lambda v: np.random.RandomState().set_state(
                (v[0], v[1].numpy().astype(np.uint32), int(v[2]), int(v[3]), float(v[4]))),
            'torch': lambda v: torch.Generator().set_state(v),
        }
        for key, trial in trials.items():
            if key in rng:
                try:
                    trial(rng[key])
                except Exception as e:  # noqa: BLE001 - any failure means the state cannot be restored
                    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
                    return f'{where} rng {key!r}: not a state of that generator ({detail})'
        cuda = rng.get('cuda', [])  # without a GPU only their type can be checked
        if not isinstance(cuda, (list, tuple)) or \
                not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1 for t in cuda):
            return f"{where} rng 'cuda': expected a list of byte tensors"
    mixup = state.get('mixup')
    if mixup is not None:
        try:
            generator = mixup['bit_generator']
            kind = getattr(np.random, str(generator['bit_generator']), None)
            if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):  # nothing else is called
                raise ValueError(f"unknown bit generator {generator['bit_generator']!r}")
            kind().state = generator
        except Exception as e:  # noqa: BLE001
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            return f'{where} mixup: not a numpy generator state ({detail})'
    return None


def _meters_problem(per_rank: Any) -> Optional[str]:
    if not isinstance(per_rank, (list, tuple)) or not per_rank:
        return f'epoch_meters: expected a list of every rank\'s sums, found {type(per_rank).__name__}'
    for i, sums in enumerate(per_rank):
        if not isinstance(sums, Mapping) or set(sums) != set(EPOCH_METERS) | {'unreadable'}:
            return f'epoch_meters[{i}]: expected the entries {sorted(EPOCH_METERS)} and unreadable'
        for name in EPOCH_METERS:
            problem = meter_state_problem(sums[name])
            if problem:
                return f'epoch_meters[{i}] {name}: {problem}'
        counts = sums['unreadable']
        if not isinstance(counts, (list, tuple)) or len(counts) != 2 or not all(_finite(v) and v >= 0 for v in counts):
            return f'epoch_meters[{i}] unreadable {counts!r}: expected [unreadable, drawn] counts'
    return None


def resume_state_problem(checkpoint: Mapping[str, Any], target: ResumeTarget) -> Optional[str]:
    """None when every entry a resume uses fits ``target`` (``field: what is wrong`` otherwise): epoch and
    epoch_step within this run, the optimizer, scheduler and scaler states and their shapes, every RNG state.

    Checked before anything is restored, copied or published: a crafted or damaged ``last.pth`` must not
    republish its epoch files (the completion of an interrupted save) and then fail."""
    problem = _position_problem(checkpoint, target)
    if problem:
        return problem
    if checkpoint.get('optimizer'):
        problem = _optimizer_problem(checkpoint['optimizer'], target.optimizer)
    if not problem and checkpoint.get('lr_scheduler'):
        problem = _scheduler_problem(checkpoint['lr_scheduler'])
    if not problem and checkpoint.get('scaler'):
        problem = _scaler_problem(checkpoint['scaler'])
    if not problem and not _finite(checkpoint.get('max_accuracy', 0.0) or 0.0):
        problem = f"max_accuracy {checkpoint.get('max_accuracy')!r}: expected a finite number"
    if not problem and checkpoint.get('epoch_meters') is not None:
        problem = _meters_problem(checkpoint['epoch_meters'])
    per_rank = checkpoint.get('rng_per_rank')
    if not problem and per_rank is not None and not isinstance(per_rank, (list, tuple)):
        problem = f'rng_per_rank: expected a list of every rank\'s states, found {type(per_rank).__name__}'
    if not problem:
        states = [(f'rng_per_rank[{i}]', s) for i, s in enumerate(per_rank or [])]
        states.append(('rng/mixup', {'rng': checkpoint.get('rng'), 'mixup': checkpoint.get('mixup')}))
        problem = next(filter(None, (_random_problem(s, where) for where, s in states)), None)
    return problem


def checkpoint_problem(path: str, target: Optional[ResumeTarget] = None) -> Optional[str]:
    """None when ``path`` is a complete checkpoint with a 'model' entry (and, given ``target``, one this run can
    resume from: :func:`resume_state_problem`), else the reason it is not."""
    try:
        checkpoint = load_checkpoint_mapped(path)  # checks structure without reading tensor data
    except (CheckpointError, OSError) as e:
        return str(e).replace(f'{path}: ', '')
    if 'model' not in checkpoint:
        return "no 'model' entry"
    return resume_state_problem(checkpoint, target) if target is not None else None


def find_auto_resume(output_dir: PathLike, logger: Optional[logging.Logger] = None,
                     target: Optional[ResumeTarget] = None) -> Optional[str]:
    """Checkpoint to resume from in ``output_dir``: ``last.pth`` if it loads (and fits ``target``), else the
    loadable ``ckpt_epoch_N.pth`` with the largest N, else None. Corrupt files are logged and passed over."""
    log = logger or _logger
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return None
    last = os.path.join(output_dir, 'last.pth')
    epochs = sorted(((int(m.group(1)), name) for name in os.listdir(output_dir)
                     if (m := EPOCH_CHECKPOINT.fullmatch(name))), reverse=True)
    candidates = ([last] if os.path.exists(last) else []) + [os.path.join(output_dir, n) for _, n in epochs]
    for candidate in candidates:
        problem = checkpoint_problem(candidate, target)
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


def earlier_run_outputs(output_dir: str) -> List[str]:
    """Everything in ``output_dir`` that a start over moves aside: all but this run's ``run.lock`` (held while
    the decision is made, before this run writes anything else) and the ``previous-*`` folders of earlier starts."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(n for n in os.listdir(output_dir) if n != LOCK_NAME and not n.startswith('previous-'))


def decide_start(config: Any, target: Optional[ResumeTarget] = None) -> Dict[str, Any]:
    """Where training starts, decided once (rank 0) and then sent to every rank.

    Returns ``path`` (the checkpoint to resume from, or ''), ``name`` (its name inside OUTPUT when auto-resume
    chose it: each rank reads ``its`` OUTPUT/name, so node-local output folders work when they hold a copy),
    ``best`` (:func:`read_best` of OUTPUT), ``move_aside`` (an earlier run's files that a permitted start over
    moves away) and ``error`` (a refusal, one line). Nothing is changed on disk here."""
    decision: Dict[str, Any] = {'path': '', 'name': '', 'best': read_best(config.OUTPUT), 'move_aside': [],
                                'error': ''}
    try:
        path = resolve_resume(config, target)
    except ConfigError as e:
        decision['error'] = str(e)
        return decision
    if path and config.MODEL.RESUME and target is not None:  # auto-resume checked its candidates already
        problem = checkpoint_problem(path, target)
        if problem:
            decision['error'] = f'--resume {path}: cannot be resumed from: {problem}'
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
    # starting over: everything the earlier run wrote goes (its final test's eval_results.json and predictions.csv,
    # eval/, tensorboard/, logs), so no file of the new run is mixed with or written over one of the old
    decision['move_aside'] = earlier_run_outputs(config.OUTPUT) if existing else \
        [METRICS_FILE] if os.path.isfile(os.path.join(config.OUTPUT, METRICS_FILE)) else []
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
