"""Training-run bookkeeping for ``main.py``: loss, mixed precision, which checkpoint to resume, what a
checkpoint holds, how it is written and restored, and skipping the finished part of an epoch.

How it differs from the original (spec 4.6, 4.7, 7.12, 7.14, 7.21):

* Mixed precision is native ``torch.autocast`` (``TRAIN.AMP: none|fp16|bf16``; apex O1/O2 map to fp16)
  with a ``GradScaler`` for fp16 only.
* Resume: an explicit ``--resume`` / ``MODEL.RESUME`` always wins; ``TRAIN.AUTO_RESUME`` looks for
  ``OUTPUT/last.pth`` only when nothing was given, and never in ``--eval`` (the original swapped in the
  newest ``*pth`` file even then).
* One checkpoint per save, written once (atomically) and published under its names by hard links:
  ``ckpt_epoch_N.pth`` every ``SAVE_FREQ`` epochs and at the last epoch, ``best.pth`` when validation
  improved, ``last.pth`` always and last of all, so ``last.pth`` is the commit point of an epoch.
  It is written after validation, so ``max_accuracy`` is current (the original saved before).
* Contents: model, optimizer, lr_scheduler, scaler, ema, mixup (generator), epoch (last completed),
  epoch_step (optimizer updates already done in the next epoch, > 0 only after a preemption), step
  (updates done in total), max_accuracy, config (YAML text, not a pickled CfgNode), rng (rank 0's RNG
  states) and rng_per_rank (every rank's RNG and mixup states, for an exact multi-process resume).
  Everything is plain data, so checkpoints load with ``weights_only=True``.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from utils.checkpoint import capture_rng_state, find_auto_resume, save_checkpoint
from utils.config import ConfigError
from utils.distributed import all_gather_object
from utils.misc import publish_file

_logger = logging.getLogger(__name__)

AMP_DTYPES = {'none': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf on at least one rank; training stops without saving."""


def check_finite_weights(model: torch.nn.Module, when: str) -> None:
    """Raise ``NonFiniteLossError`` naming the tensors when a floating-point weight or buffer is NaN/inf.

    Called before a checkpoint is made: an update can overflow the weights although its loss and
    gradients were finite, and such a state must never replace a good checkpoint."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteLossError(
            f'{len(bad)} weight tensor(s) are no longer finite at {when} ({", ".join(bad[:3])}); no checkpoint '
            'was written from this state, the last one written is intact. Try a lower TRAIN.BASE_LR or '
            'TRAIN.CLIP_GRAD > 0.')


class PreemptedError(Exception):
    """Raised after a preemption checkpoint was written; ``main`` exits with code 0."""


# ------------------------------------------------------------------------------------------------ loss, AMP
def build_criterion(config: Any, mixup_enabled: bool) -> nn.Module:
    """Soft-target CE after mixup/cutmix; label-smoothing CE (``MODEL.LABEL_SMOOTHING`` > 0) or CE otherwise."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if mixup_enabled:
        return SoftTargetCrossEntropy()
    if config.MODEL.LABEL_SMOOTHING > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.MODEL.LABEL_SMOOTHING)
    return nn.CrossEntropyLoss()


def amp_dtype(config: Any, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype of ``TRAIN.AMP`` on ``device`` (None = fp32); falls back to fp32 with a warning
    where the device cannot autocast to it."""
    dtype = AMP_DTYPES[config.TRAIN.AMP]
    if dtype is None:
        return None
    if device.type == 'cuda' and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        _logger.warning('TRAIN.AMP bf16: this GPU has no bf16 support; training in fp32')
        return None
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        _logger.warning(f'TRAIN.AMP {config.TRAIN.AMP}: autocast is not available on {device.type}; fp32')
        return None
    if device.type == 'cpu' and dtype == torch.float16:
        # honoured, but CPUs have few fp16 kernels: Video-FocalNet-T inference measured 0.2 clips/s in fp16
        # against 1.8 in fp32 and 3.7 in bf16 on a 2-core AVX-512 machine (--throughput)
        _logger.warning('TRAIN.AMP fp16 on the CPU is several times slower than fp32 (few fp16 CPU kernels): '
                        'add --opts TRAIN.AMP none (or bf16 where the CPU supports it)')
    return dtype


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` context for ``dtype`` (a no-op context for None)."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def build_grad_scaler(device: torch.device, dtype: Optional[torch.dtype]) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


# ------------------------------------------------------------------------------------------------ init
WEIGHT_INITS = ('original', 'xavier')


def apply_weight_init(model: nn.Module, scheme: str) -> None:
    """``MODEL.INIT``: ``original`` keeps the model's own initialisation (Linear ~ trunc-normal std 0.02);
    ``xavier`` re-draws every Linear weight xavier-uniform with a zero bias.

    Why: in the focal modulation the output is the product ``q * modulator * modulator_temporal`` of
    three Linear-fed terms; with std 0.02 at widths of 16-128 (the toy model) each term is ~0.01-0.1,
    so the modulation, the only place where frames interact, starts ~1e-6 of the residual stream and a
    model trained from scratch memorises through its MLPs instead. With xavier the toy model learns
    the temporal classes within minutes; the published widths start from ImageNet weights anyway.
    """
    if scheme not in WEIGHT_INITS:
        raise ConfigError(f"MODEL.INIT: expected one of {list(WEIGHT_INITS)}, got {scheme!r}")
    if scheme == 'original':
        return
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            count += 1
    _logger.info(f'MODEL.INIT {scheme}: re-initialised {count} Linear layers')


# ------------------------------------------------------------------------------------------------ resume
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


def gather_random_states(mixup: Any = None) -> List[Dict[str, Any]]:
    """Every rank's RNG states and mixup generator, in rank order (a collective: call on all ranks).

    Ranks draw different numbers (seeds SEED + rank), so an exact multi-process resume needs each
    rank's own state, not only rank 0's."""
    own = {'rng': capture_rng_state(), 'mixup': mixup.state_dict() if mixup is not None else None}
    return all_gather_object(own)


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


# ------------------------------------------------------------------------------------------------ saving
def checkpoint_names(epoch: int, total_epochs: int, save_freq: int, improved: bool) -> List[str]:
    """File names a completed ``epoch`` is saved under, ``last.pth`` last (the commit point)."""
    names = []
    if (save_freq > 0 and epoch % save_freq == 0) or epoch == total_epochs - 1:
        names.append(f'ckpt_epoch_{epoch}.pth')
    if improved:
        names.append('best.pth')
    names.append('last.pth')
    return names


def write_checkpoint(output_dir: str, names: List[str], state: Dict[str, Any]) -> List[str]:
    """Write ``state`` once under ``names[0]`` and publish it under the other names (in order)."""
    paths = [os.path.join(output_dir, name) for name in names]
    save_checkpoint(paths[0], state)
    for path in paths[1:]:
        publish_file(paths[0], path)
    _logger.info(f"saved {', '.join(paths)}")
    return paths


# ------------------------------------------------------------------------------------------------ throughput
@torch.no_grad()
def measure_throughput(config: Any, model: torch.nn.Module, device: torch.device) -> float:
    """``--throughput``: inference clips/s of the model on DATA.BATCH_SIZE clips of the evaluated size
    (DATA.INPUT_SIZE), after warm-up, compiled with TRAIN.COMPILE (the original had the config key but no
    code). Random uint8 clips are normalised on the device."""
    from datasets import normalize_clip as normalize
    model.eval()
    run = torch.compile(model) if config.TRAIN.COMPILE else model
    batch, size = config.DATA.BATCH_SIZE, config.DATA.INPUT_SIZE
    shape = (batch, config.DATA.NUM_FRAMES, 3, size, size)
    clips = normalize(torch.randint(0, 256, shape, dtype=torch.uint8, device=device))
    dtype = amp_dtype(config, device)
    warmup, iters = (10, 30) if device.type == 'cuda' else (2, 5)
    for i in range(warmup + iters):
        if i == warmup:
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            start = time.time()
        with torch.inference_mode(), autocast(device, dtype):
            run(clips)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    throughput = batch * iters / (time.time() - start)
    _logger.info(f'throughput: {throughput:.1f} clips/s ({config.MODEL.NAME}, batch {batch}, '
                f'{config.DATA.NUM_FRAMES} frames of {size}px, AMP {config.TRAIN.AMP}, '
                f'{"compiled, " if config.TRAIN.COMPILE else ""}{device}, after {warmup} warm-up iterations)')
    return throughput


# ------------------------------------------------------------------------------------------------ skipping
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
