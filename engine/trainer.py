"""The training run: model, optimizer, schedule, loaders and the epoch loop (``main.py`` builds and calls it).

What changed with respect to the original loop (each documented where it is implemented):

* native AMP (``engine/amp.py``), gradient clipping once per optimizer update (not per micro-batch), weight
  decay applied as configured (``engine/optim.py``), a scheduler independent of the timm version
  (``engine/lr_schedule.py``);
* validation before saving, so ``max_accuracy`` is current; the final 4x3 test uses ``best.pth``, which is only
  ever replaced by a model with a higher validation top-1 than its own;
* one commit point per epoch (``last.pth``, ``engine/checkpoint/saving.py``), after which ``ckpt_epoch_N.pth``,
  ``best.pth`` and the ``metrics.jsonl`` line follow from it and are completed on the next start after a kill;
* rank 0 decides where the run starts and which ``best.pth`` the final test uses (output folders need not be
  shared between nodes); a write error on rank 0 (a full disk) stops every rank with one line;
* exact resume (``engine/resume.py``): at epoch ends from ``last.pth``, and mid-epoch after SIGTERM / SIGUSR1
  (``engine/preemption.py``: the run saves at the next optimizer-step boundary and exits with code 0);
* a NaN / inf loss on any rank stops every rank before the optimizer step, and nothing is saved from it;
* unreadable training videos are replaced and counted, and training stops past
  ``DATA.MAX_UNREADABLE_FRACTION``.
"""
from __future__ import annotations

import logging
import math
import os
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Dict, List, Optional

import torch

from datasets import apply_random_erasing, build_eval_loader, build_mixup, build_train_loader, normalize_clip
from datasets.transforms import host_to_device
from engine.amp import amp_dtype, autocast, build_grad_scaler
from engine.checkpoint import CheckpointError, checkpoint_names, load_model_weights, load_pretrained, \
    make_checkpoint, restore_rng_state, write_checkpoint
from engine.checkpoint.saving import append_metrics, complete_epoch_files, read_best
from engine.compile import compile_for_training
from engine.config import ConfigError, config_to_yaml
from engine.ema import ModelEma
from engine.evaluator import evaluate_views, test_and_report
from engine.losses import build_criterion
from engine.lr_schedule import build_scheduler
from engine.meters import EPOCH_METERS, AverageMeter
from utils.progress import ProgressBar, format_duration
from engine.optim import build_optimizer, clip_gradients
from engine.preemption import PreemptedError, process_flag
from engine.step_random import keyed_randomness, micro_batch_index, micro_batch_key
from engine.resume import ResumeTarget, decide_start, gather_random_states, move_aside, own_random_state, \
    restore_training_state, resume_position, skip_first_batches
from utils import distributed as du
from utils.env import memory_mb
from utils.logger import TensorBoardWriter

logger = logging.getLogger(__name__)


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


DATA_WAIT_WARNING = 0.2  # above this fraction of step time spent waiting for data, the epoch log warns


class TooManyUnreadableError(RuntimeError):
    """More than DATA.MAX_UNREADABLE_FRACTION of an epoch's videos could not be decoded."""


class Trainer:
    """One training run: model, optimizer, schedule, loaders and the epoch loop."""

    def __init__(self, config: Any, dist_info: du.DistInfo, model: torch.nn.Module) -> None:
        self.config = config
        self.dist = dist_info
        self.device = dist_info.device
        self.model = model
        _, self.sampler, self.train_loader = build_train_loader(config, dist_info.rank, dist_info.world_size)
        self.val_set, self.val_loader = build_eval_loader(config, dist_info.rank, dist_info.world_size,
                                                          persistent=True)
        self.mixup = build_mixup(config, dist_info.rank)
        self.criterion = build_criterion(config, self.mixup is not None)
        self.optimizer = build_optimizer(config, model)
        if config.TRAIN.FINAL_TEST and config.DATA.TEST_FILE and not os.path.isfile(config.DATA.TEST_FILE):
            # checked now, not after training, when the final test would first read it
            raise ConfigError(f"DATA.TEST_FILE: {config.DATA.TEST_FILE} does not exist (the final test of best.pth "
                              "reads it; '' tests on DATA.VAL_FILE)")
        self.accum = max(1, config.TRAIN.ACCUMULATION_STEPS)
        self.updates_per_epoch = len(self.train_loader) // self.accum
        if self.updates_per_epoch < 1:
            raise ConfigError(f'{config.DATA.TRAIN_FILE}: {len(self.train_loader)} batches per epoch, fewer than '
                              f'one optimizer update of {self.accum} x {config.DATA.BATCH_SIZE} clips per process')
        self.scheduler = build_scheduler(config, self.optimizer, self.updates_per_epoch)
        self.amp_dtype = amp_dtype(config, self.device)
        self.scaler = build_grad_scaler(self.device, self.amp_dtype)
        self.state = self._load_start_state()
        self.train_model: torch.nn.Module = model
        if dist_info.distributed:
            # No static_graph: with it, no_sync() micro-batches (gradient accumulation) fail in DDP's reducer
            # ("expect_autograd_hooks_ INTERNAL ASSERT FAILED"); the model's activation checkpointing is
            # non-reentrant, which DDP supports without a static graph.
            self.train_model = du.wrap_ddp(model, self.device)
        if self.ema is None and config.TRAIN.EMA:
            # after DDP's broadcast: every rank seeds its model differently (SEED + rank) and the head of an
            # ImageNet init is drawn per rank, so an EMA copied before would start from other weights per rank
            self.ema = ModelEma(self.model, config.TRAIN.EMA_DECAY)
        self.eval_model: torch.nn.Module = model
        if config.TRAIN.COMPILE:
            self.train_model = compile_for_training(self.train_model, config, dist_info.distributed)
            self.eval_model = torch.compile(model)
        self.tb = TensorBoardWriter(os.path.join(config.OUTPUT, 'tensorboard'),
                                    enabled=config.TENSORBOARD and dist_info.is_main)
        # the process's flag (main.py installs it for the whole run); from here on a Ctrl-C waits for a save point
        self.preemption = process_flag().defer_interrupts()
        # for the run ETA: when the current epoch began, how long its updates took, and how long the last
        # finished epoch spent after its updates (validation, checkpoints)
        self._epoch_timing = {'begin': None, 'train_seconds': None, 'overhead_seconds': 0.0}
        # the current epoch's meters and [unreadable, drawn] counts, which a mid-epoch save keeps
        self._epoch_progress: Dict[str, Any] = {'meters': {}, 'unreadable': [0.0, 0.0]}

    # ------------------------------------------------------------------------------------------ start
    def _load_start_state(self) -> Dict[str, Any]:
        """Decide on rank 0 where to start, load it on every rank and check that all ranks hold the same state.

        With auto-resume every rank reads its own ``OUTPUT/<name rank 0 chose>``: on nodes whose output folders
        are not shared, a rank without the file (or with another epoch's) stops every rank with one line
        naming it, instead of silently starting at another epoch."""
        config = self.config
        state: Dict[str, Any] = {'start_epoch': 0, 'start_step': 0, 'max_accuracy': 0.0, 'random': None,
                                 'best_accuracy': None, 'epoch_record': None, 'is_best': False, 'epoch_meters': None}
        self.ema = None
        # every entry a resume uses is checked against this run before anything is restored or republished
        target = ResumeTarget(epochs=config.TRAIN.EPOCHS, updates_per_epoch=self.updates_per_epoch,
                              world_size=self.dist.world_size, batch_size=config.DATA.BATCH_SIZE,
                              accumulation_steps=self.accum, optimizer=self.optimizer)
        decision = du.all_gather_object(decide_start(config, target) if self.dist.is_main else None)[0]
        if decision['error']:
            raise ConfigError(decision['error'])
        best = decision['best']
        if best['problem']:
            logger.warning(f"best.pth is not readable ({best['problem']}): the best model of this run replaces it")
        path = os.path.join(config.OUTPUT, decision['name']) if decision['name'] else decision['path']
        if path:
            logger.info(f'resuming from {path}')
            checkpoint, problem = {}, ''
            try:
                checkpoint = load_model_weights(self.model, path, config=config)
            except (CheckpointError, OSError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                problem = f"{path}: {reason.replace(f'{path}: ', '')}"
            mark = [checkpoint.get(k) for k in ('epoch', 'epoch_step', 'step', 'max_accuracy')]
            reports = du.all_gather_object((problem, mark))
            for rank, (problem, mark) in enumerate(reports):
                if not problem and mark != reports[0][1]:
                    problem = (f'{path} holds epoch {mark[0]} update {mark[1]}, rank 0\'s epoch {reports[0][1][0]} '
                               f'update {reports[0][1][1]} (output folders that nodes do not share must hold the '
                               'same files)')
                if problem:
                    raise CheckpointError(problem if self.dist.world_size == 1 else f'rank {rank}: {problem}')
            self.ema = ModelEma(self.model, config.TRAIN.EMA_DECAY) if config.TRAIN.EMA else None
            state = dict(state, **restore_training_state(
                checkpoint, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler, ema=self.ema,
                rank=self.dist.rank, world_size=self.dist.world_size))
            state['start_step'] = resume_position(
                checkpoint, world_size=self.dist.world_size, batch_size=config.DATA.BATCH_SIZE,
                accumulation_steps=self.accum, updates_per_epoch=self.updates_per_epoch, logger=logger)
            state['epoch_record'] = checkpoint.get('epoch_record')
            state['is_best'] = bool(checkpoint.get('is_best'))
            redone: List[str] = []  # filled on rank 0
            self._on_main(lambda: redone.extend(complete_epoch_files(
                config.OUTPUT, path, checkpoint, config.TRAIN.EPOCHS, config.SAVE_FREQ, logger)))
            if self.dist.is_main and 'best.pth' in redone:  # the completion published this epoch as best.pth
                best = read_best(config.OUTPUT)
            best = du.all_gather_object(best if self.dist.is_main else None)[0]
            if config.TRAIN.PRETRAINED_PATH:
                logger.info(f'TRAIN.PRETRAINED_PATH not loaded: the weights come from {path}')
        else:
            self._on_main(lambda: move_aside(config.OUTPUT, decision['move_aside'], logger))
            if config.TRAIN.PRETRAINED_PATH:
                load_pretrained(self.model, config.TRAIN.PRETRAINED_PATH, config)
        # best.pth's own accuracy counts (a resume from an older ckpt_epoch_N restores a lower max_accuracy)
        state['best_accuracy'] = best['accuracy']
        if best['accuracy'] is not None:
            state['max_accuracy'] = max(state['max_accuracy'], best['accuracy'])
        if path:
            logger.info(f"resumed: epoch {state['start_epoch']}, step {state['start_step']} of "
                        f"{self.updates_per_epoch}, max accuracy {state['max_accuracy']:.2f}%")
        # a fresh EMA is made in __init__ once DDP has given every rank rank 0's weights
        return state

    def _on_main(self, action: Callable[[], Any]) -> None:
        """Run ``action`` (a write into OUTPUT) on rank 0 only; its failure (a full disk, a folder that cannot be
        written) stops every rank with the same one-line error, instead of leaving the others in a collective."""
        error = ''
        if self.dist.is_main:
            try:
                action()
            except CheckpointError as e:
                error = str(e)
            except OSError as e:  # e.g. a read-only or vanished folder
                error = f'cannot write into {self.config.OUTPUT}: {e}'
        error = du.all_gather_object(error)[0]
        if error:
            raise CheckpointError(error)

    def checkpoint_state(self, epoch: int, epoch_step: int,
                         random_state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """What a checkpoint holds; ``epoch`` = last completed epoch, ``epoch_step`` = updates done after it.

        Call on every rank (the random states are gathered); only rank 0 writes it. Weights that are no
        longer finite (an update that overflowed although its loss and gradients were finite) stop the run
        here, before anything is written, on every rank alike (DDP keeps the weights equal). ``random_state``:
        this rank's RNG states taken earlier (``own_random_state``), default now."""
        check_finite_weights(self.model, f'epoch {epoch} update {epoch_step}')
        random_states = gather_random_states(self.mixup, random_state)
        return make_checkpoint(
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            lr_scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            ema=self.ema.state_dict() if self.ema is not None else None,
            epoch=epoch, epoch_step=epoch_step, step=(epoch + 1) * self.updates_per_epoch + epoch_step,
            max_accuracy=self.state['max_accuracy'], epoch_record=self.state['epoch_record'],
            is_best=bool(self.state['is_best']), world_size=self.dist.world_size,
            batch_size=self.config.DATA.BATCH_SIZE, accumulation_steps=self.accum, config=config_to_yaml(self.config),
            global_batch_size=self.accum * self.config.DATA.BATCH_SIZE * self.dist.world_size,
            rng=random_states[0]['rng'], mixup=random_states[0]['mixup'], rng_per_rank=random_states,
            epoch_meters=self._epoch_meters_state(epoch_step))

    def _epoch_meters_state(self, epoch_step: int) -> Any:
        """Every rank's running sums of the interrupted epoch (a collective when ``epoch_step`` > 0, the same on
        every rank), None at an epoch end: restored by the resume, so that the epoch's metrics line averages
        all of its updates, not only those after the resume."""
        if not epoch_step:
            return None
        own: Dict[str, Any] = {k: m.state_dict() for k, m in self._epoch_progress['meters'].items()}
        own['unreadable'] = list(self._epoch_progress['unreadable'])
        return du.all_gather_object(own)

    def restore_random_state(self) -> None:
        random_state = self.state['random']
        restore_rng_state(random_state['rng'])
        if self.mixup is not None and random_state.get('mixup'):
            self.mixup.load_state_dict(random_state['mixup'])

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> None:
        config = self.config
        start_epoch, start_step = self.state['start_epoch'], self.state['start_step']
        if self.state['random'] is not None and start_step == 0:
            self.restore_random_state()  # epoch boundary: before the next epoch draws anything
        logger.info(f'training epochs {start_epoch}..{config.TRAIN.EPOCHS - 1}: {self.updates_per_epoch} updates '
                    f'of {self.accum} x {config.DATA.BATCH_SIZE} x {self.dist.world_size} clips per epoch')
        run_start = time.time()
        for epoch in range(start_epoch, config.TRAIN.EPOCHS):
            skip = start_step if epoch == start_epoch else 0
            epoch_start = time.time()
            train_stats = self.train_one_epoch(epoch, skip)
            end_of_updates = own_random_state(self.mixup)  # what a save during validation resumes with
            try:
                val = self.validate(epoch)
            except PreemptedError:  # every rank stopped at the same evaluation batch
                self._save_preempted(epoch, self.updates_per_epoch, end_of_updates)
            # best.pth's own accuracy decides (None: there is none yet, or it is unreadable)
            improved = self.state['best_accuracy'] is None or val['acc1'] > self.state['best_accuracy']
            if improved:
                self.state['best_accuracy'] = val['acc1']
            self.state['max_accuracy'] = max(self.state['max_accuracy'], val['acc1'])
            record = dict(epoch=epoch, **train_stats, **{f'val_{k}': v for k, v in val.items()},
                          max_accuracy=self.state['max_accuracy'], epoch_time_s=round(time.time() - epoch_start, 1))
            self.state['epoch_record'], self.state['is_best'] = record, improved
            state = self.checkpoint_state(epoch, 0)
            names = checkpoint_names(epoch, config.TRAIN.EPOCHS, config.SAVE_FREQ, improved)
            # last.pth (the commit point), then the names it is published under, then the metrics line
            self._on_main(lambda: (write_checkpoint(config.OUTPUT, names, state), self._append_metrics(record)))
            logger.info(f"epoch {epoch}: max accuracy {self.state['max_accuracy']:.2f}%, "
                        f"{format_duration(time.time() - epoch_start)}")
            # a signal that came during validation or the save: last.pth is already this epoch's, stop now
            requested = torch.tensor([self.preemption.code(self.dist.world_size)], dtype=torch.float64,
                                     device=self.device)
            if self.preemption.adopt(du.all_reduce_sum(requested).item(), self.dist.world_size):
                logger.warning(f'{self.preemption.signal_name or "preemption"} received: last.pth holds epoch '
                               f'{epoch}; exiting, rerun the same command to continue')
                raise PreemptedError()
        logger.info(f'training time {format_duration(time.time() - run_start)}')
        self.tb.flush()

    def train_one_epoch(self, epoch: int, skip_updates: int) -> Dict[str, float]:
        """One epoch of updates from ``skip_updates`` on (a mid-epoch resume); returns the epoch's statistics.

        One collective and one device-to-host transfer per update: the flags every rank must agree on
        (non-finite loss, preemption, unreadable videos) are all-reduced on the device and read together
        with this rank's loss and gradient norm, so the GPU is waited for once per update (and by the fp16
        loss scaler, which reads its inf check), never per micro-batch."""
        config, device = self.config, self.device
        epoch_begin = time.time()
        self._time_last_epoch(epoch_begin)
        self.sampler.set_epoch(epoch)
        if self.mixup is not None and hasattr(self.mixup, 'set_epoch'):
            self.mixup.set_epoch(epoch)
        loader = skip_first_batches(self.train_loader, skip_updates * self.accum)
        batches = iter(loader)
        if skip_updates and self.state['random'] is not None:
            # Mid-epoch resume: the states were captured after set_epoch and the loader's start.
            self.restore_random_state()
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        meters = {k: AverageMeter() for k in EPOCH_METERS}
        unreadable = [0.0, 0.0]                            # this epoch, all ranks: [unreadable, drawn]
        saved = self.state.get('epoch_meters') if skip_updates else None
        if saved:  # mid-epoch resume: the sums of the updates before the interruption
            for name, meter in meters.items():
                meter.load_state_dict(saved[name])
            unreadable[:] = [float(v) for v in saved['unreadable']]
        self._epoch_progress = {'meters': meters, 'unreadable': unreadable}
        pending = torch.zeros(2, dtype=torch.float64)     # this rank, not yet reduced
        per_update = self.accum * config.DATA.BATCH_SIZE * max(1, config.AUG.REPEATED_AUG) * self.dist.world_size
        epoch_videos = self.updates_per_epoch * per_update // max(1, config.AUG.REPEATED_AUG)
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        bar = ProgressBar(self.updates_per_epoch, desc=f'train {epoch}', initial=skip_updates, unit='clips',
                          unit_scale=per_update, tty_only=True,
                          enabled=self.dist.is_main and bool(config.PROGRESS_BAR))
        end = time.time()
        for update in range(skip_updates, self.updates_per_epoch):
            loss_sum = torch.zeros((), device=device)
            data_time = 0.0
            for micro in range(self.accum):
                tick = time.time()
                batch = next(batches)
                data_time += time.time() - tick
                pending[0] += batch['num_unreadable']  # host tensors (the loader's), added without a read
                pending[1] += batch['label'].shape[0] / max(1, config.AUG.REPEATED_AUG)
                index = micro_batch_index(update, micro, self.accum, self.dist.rank, self.dist.world_size)
                with self.step_randomness(epoch, index):
                    loss_sum += self.forward_backward(batch, last=micro == self.accum - 1)
            global_step = epoch * self.updates_per_epoch + update
            grad_norm_t = self.unscale_and_clip(global_step)
            # One collective per update: [non-finite loss, preemption, unreadable, drawn] summed over ranks,
            # read in one transfer with this rank's loss sum and gradient norm.
            host = torch.cat([torch.tensor([self.preemption.code(self.dist.world_size)], dtype=torch.float64),
                              pending])
            flags = torch.cat([(~torch.isfinite(loss_sum)).double().view(1), host_to_device(host, device)])
            flags = du.all_reduce_sum(flags)
            values = torch.cat([flags, loss_sum.double().view(1),
                                grad_norm_t.to(device=device, dtype=torch.float64).view(1)]).tolist()
            non_finite, preempted, loss_value, grad_norm = values[0], values[1], values[4], values[5]
            pending.zero_()
            unreadable[:] = [unreadable[0] + values[2], unreadable[1] + values[3]]
            if non_finite > 0:
                raise NonFiniteLossError(
                    f'loss is {loss_value} on this rank ({int(non_finite)} rank(s) non-finite) at epoch {epoch}, '
                    f'update {update} (global step {global_step}, lr {self.optimizer.param_groups[0]["lr"]:.3g}). '
                    'Stopped before the optimizer step; no checkpoint was written from this state. Try a lower '
                    'TRAIN.BASE_LR, TRAIN.CLIP_GRAD > 0, or TRAIN.AMP bf16 instead of fp16.')
            if unreadable[0] > config.DATA.MAX_UNREADABLE_FRACTION * epoch_videos:
                raise TooManyUnreadableError(
                    f'{int(unreadable[0])} of {int(unreadable[1])} videos drawn in epoch {epoch} were unreadable, more '
                    f'than DATA.MAX_UNREADABLE_FRACTION={config.DATA.MAX_UNREADABLE_FRACTION} of the '
                    f'{epoch_videos} per epoch; the log names each one. Check the data with '
                    f'python -m datasets.check --cfg CONFIG --split train')
            self.optimizer_step(global_step, grad_norm)
            meters['loss'].update(loss_value / self.accum)
            if math.isfinite(grad_norm):  # fp16 steps skipped by the loss scaler are not averaged in
                meters['grad_norm'].update(grad_norm)
            meters['data_time'].update(data_time)
            meters['step_time'].update(time.time() - end)
            end = time.time()
            bar.update()
            if (update + 1) % config.PRINT_FREQ == 0 or update + 1 == self.updates_per_epoch:
                bar.clear()
                self._log_step(epoch, update, global_step, meters, per_update)
                bar.refresh()
            if self.preemption.adopt(preempted, self.dist.world_size):  # the signal every rank agrees on
                bar.close()
                self._save_preempted(epoch, update + 1)
        bar.close()
        if unreadable[0]:
            logger.warning(f'epoch {epoch}: {int(unreadable[0])} unreadable videos were replaced by others')
        data_wait = self._log_data_wait(epoch, meters['data_time'].sum, meters['step_time'].sum)
        self._epoch_timing['train_seconds'] = time.time() - epoch_begin
        return {'train_loss': meters['loss'].avg, 'lr': self.optimizer.param_groups[0]['lr'],
                'unreadable': int(unreadable[0]), 'data_wait_fraction': round(data_wait, 4)}

    def _time_last_epoch(self, now: float) -> None:
        """At an epoch's start: the time the previous epoch spent after its updates (validation, saving),
        which the run ETA adds for every epoch still to come."""
        timing = self._epoch_timing
        if timing['begin'] is not None and timing['train_seconds'] is not None:
            timing['overhead_seconds'] = max(0.0, now - timing['begin'] - timing['train_seconds'])
        timing.update(begin=now, train_seconds=None)

    def _log_data_wait(self, epoch: int, data_seconds: float, step_seconds: float) -> float:
        """Log the fraction of this epoch's step time spent waiting for the loader (mean and worst rank).

        A GPU fed fast enough waits close to 0; a large fraction means the loader (decoding) sets the pace:
        more DATA.NUM_WORKERS if cores are left, else re-encoded videos (DATA.md, keyframe interval). One
        collective per epoch; returns the mean over ranks, which also goes to TensorBoard and metrics.jsonl."""
        fractions = torch.zeros(self.dist.world_size, dtype=torch.float64)
        fractions[self.dist.rank] = data_seconds / step_seconds if step_seconds > 0 else 0.0
        fractions = du.all_reduce_sum(fractions.to(self.device)).cpu()
        mean, worst = float(fractions.mean()), int(fractions.argmax())
        line = f'epoch {epoch}: waiting for data {100 * mean:.1f}% of the step time'
        if self.dist.world_size > 1:
            line += f' (mean over ranks; rank {worst} {100 * float(fractions[worst]):.1f}%)'
        if mean > DATA_WAIT_WARNING:
            logger.warning(line + ': the loader sets the pace; raise DATA.NUM_WORKERS if the node has idle '
                           'cores, else re-encode the videos with a short keyframe interval (DATA.md)')
        else:
            logger.info(line)
        self.tb.scalars(epoch, 'epoch', data_wait_fraction=mean)
        return mean

    def forward_backward(self, batch: Dict[str, Any], last: bool) -> torch.Tensor:
        """Normalise, erase and mix on the device, forward, backward of loss / ACCUMULATION_STEPS; returns the
        loss (on the device: reading it here would wait for the GPU every micro-batch)."""
        imgs = normalize_clip(batch['imgs'].to(self.device, non_blocking=True))
        if 'erase_boxes' in batch:  # AUG.REPROB > 0: boxes drawn by the data pipeline, filled on the device
            imgs = apply_random_erasing(imgs, batch['erase_boxes'], mode=self.config.AUG.REMODE)
        targets = batch['label'].to(self.device, non_blocking=True)
        if self.mixup is not None:
            imgs, targets = self.mixup(imgs, targets)
        no_sync = getattr(self.train_model, 'no_sync', None)
        sync_context = no_sync() if (no_sync is not None and not last) else nullcontext()
        with sync_context:
            with autocast(self.device, self.amp_dtype):
                loss = self.criterion(self.train_model(imgs), targets)
            self.scaler.scale(loss / self.accum).backward()
        return loss.detach().float()

    def step_randomness(self, epoch: int, index: int) -> ContextManager[None]:
        """The generators of the draws of micro-batch ``index`` of ``epoch`` (DropPath, dropout, erasing noise,
        mixup/cutmix): keyed by (SEED, epoch, index) with TRAIN.LAYOUT_FREE_RANDOMNESS, so that they do not
        depend on the process and accumulation step the micro-batch lands on (``engine/step_random.py``);
        otherwise the process's own streams, as in the original."""
        if not self.config.TRAIN.LAYOUT_FREE_RANDOMNESS:
            return nullcontext()
        if self.mixup is not None:
            self.mixup.reseed(micro_batch_key(self.config.SEED, epoch, index))
        return keyed_randomness(self.config.SEED, epoch, index, self.device)

    def unscale_and_clip(self, global_step: int) -> torch.Tensor:
        """LR for this update, unscale (fp16), clip once; returns the gradient norm before clipping, on the
        device (``train_one_epoch`` reads it with the update's other scalars)."""
        self.scheduler.step_update(global_step)
        self.scaler.unscale_(self.optimizer)
        return clip_gradients(self.model.parameters(), self.config.TRAIN.CLIP_GRAD)

    def optimizer_step(self, global_step: int, grad_norm: float) -> None:
        """Step, update the scaler and the EMA, after ``unscale_and_clip`` gave ``grad_norm``.

        With fp16 a non-finite gradient is the loss scaler's business (it skips the step and lowers the
        scale); otherwise it stops training before the step, like a non-finite loss. Gradients are
        all-reduced, so every rank takes the same decision."""
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            raise NonFiniteLossError(
                f'the gradient norm is {grad_norm} at global step {global_step} (the loss was finite). Stopped '
                'before the optimizer step; no checkpoint was written from this state. Try a lower '
                'TRAIN.BASE_LR, TRAIN.CLIP_GRAD > 0, or TRAIN.AMP none.')
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def _log_step(self, epoch: int, update: int, global_step: int, meters: Dict[str, AverageMeter],
                  clips_per_update: int) -> None:
        config = self.config
        step_time = meters['step_time'].avg
        epoch_remaining, run_remaining = self._remaining_seconds(epoch, update, step_time)
        lr = self.optimizer.param_groups[0]['lr']
        clips_per_s = clips_per_update / meters['step_time'].val if meters['step_time'].val > 0 else 0.0
        mem = memory_mb(self.device)
        logger.info(f"Train: [{epoch}/{config.TRAIN.EPOCHS}][{update + 1}/{self.updates_per_epoch}]  "
                    f"epoch ETA {format_duration(epoch_remaining)}  run ETA {format_duration(run_remaining)}  "
                    f"lr {lr:.6f}  time {meters['step_time'].val:.3f} ({step_time:.3f})  "
                    f"data {meters['data_time'].val:.3f}  loss {meters['loss'].val:.4f} ({meters['loss'].avg:.4f})  "
                    f"grad_norm {meters['grad_norm'].val:.4f} ({meters['grad_norm'].avg:.4f})  "
                    f"clips/s {clips_per_s:.1f}  mem {mem:.0f}MB")
        self.tb.scalars(global_step, 'train', loss=meters['loss'].val, lr=lr, grad_norm=meters['grad_norm'].val,
                        data_time=meters['data_time'].val, step_time=meters['step_time'].val,
                        clips_per_s=clips_per_s, memory_mb=mem)

    def _remaining_seconds(self, epoch: int, update: int, step_time: float) -> tuple:
        """``(epoch, run)`` seconds left after ``update`` of ``epoch``: the remaining updates at this epoch's mean
        step time, and per epoch the time the last finished epoch spent after its updates (validation and
        checkpoints; not known yet, so 0, during the first epoch of a run). The final test is not included."""
        overhead = self._epoch_timing['overhead_seconds']
        epoch_remaining = (self.updates_per_epoch - update - 1) * step_time + overhead
        run_remaining = epoch_remaining + (self.config.TRAIN.EPOCHS - epoch - 1) * (
            self.updates_per_epoch * step_time + overhead)
        return epoch_remaining, run_remaining

    def _save_preempted(self, epoch: int, epoch_step: int, random_state: Optional[Dict[str, Any]] = None) -> None:
        """Save ``last.pth`` at ``epoch_step`` updates into ``epoch`` and raise ``PreemptedError``. A signal during
        validation saves the end of the epoch's updates (``random_state`` taken then): the rerun validates the
        epoch first, and the save does not wait for the validation to end."""
        during = ' during validation' if random_state is not None else ''
        logger.warning(f'{self.preemption.signal_name or "preemption"} received{during}: saving last.pth at epoch '
                       f'{epoch}, update {epoch_step} of {self.updates_per_epoch}, then exiting; rerun the same '
                       'command to continue')
        state = self.checkpoint_state(epoch - 1, epoch_step, random_state)
        self._on_main(lambda: write_checkpoint(self.config.OUTPUT, ['last.pth'], state))
        raise PreemptedError()

    def _append_metrics(self, record: Dict[str, Any]) -> None:
        """The epoch's line of metrics.jsonl (the file is rewritten atomically: whole lines only)."""
        append_metrics(self.config.OUTPUT, record, logger)

    # ------------------------------------------------------------------------------------------ evaluation
    def validate(self, epoch: int) -> Dict[str, Any]:
        """Per-epoch validation with TEST.NUM_CLIP x TEST.NUM_CROP views (and the EMA weights when enabled)."""
        config = self.config
        views = config.TEST.NUM_CLIP * config.TEST.NUM_CROP
        result, _ = evaluate_views(self.eval_model, self.val_loader, len(self.val_set), config, self.device,
                                   self.amp_dtype, views, f'val {epoch}')
        self.tb.scalars(epoch, 'val', acc1=result['acc1'], acc5=result['acc5'], mean_class_acc=result['mean_class_acc'])
        if self.ema is not None and config.TRAIN.EMA_EVAL:
            ema, _ = evaluate_views(self.ema.module, self.val_loader, len(self.val_set), config, self.device,
                                    self.amp_dtype, views, f'val ema {epoch}')
            self.tb.scalars(epoch, 'val_ema', acc1=ema['acc1'], acc5=ema['acc5'])
            result = dict(result, ema_acc1=ema['acc1'], ema_acc5=ema['acc5'])
        return {k: result[k] for k in ('acc1', 'acc5', 'mean_class_acc', 'ema_acc1', 'ema_acc5') if k in result}

    def final_test(self) -> None:
        """Test ``best.pth`` with TEST.FINAL_NUM_CLIP x TEST.FINAL_NUM_CROP views on DATA.TEST_FILE (VAL_FILE when
        it is '') and write the results."""
        config = self.config
        best = os.path.join(config.OUTPUT, 'best.pth')
        # rank 0 decides and loads, every rank gets its weights: output folders need not be shared
        if du.all_gather_object(os.path.isfile(best) if self.dist.is_main else None)[0]:
            loaded: Dict[str, Any] = {}
            self._on_main(lambda: loaded.update(load_model_weights(self.model, best)))
            if self.dist.distributed:
                for tensor in self.model.state_dict().values():
                    torch.distributed.broadcast(tensor, 0)
            source, epoch = best, du.all_gather_object(loaded.get('epoch'))[0]
        else:
            logger.warning('no best.pth: the final test uses the current weights')
            source, epoch = 'final weights', config.TRAIN.EPOCHS - 1
        if config.DATA.TEST_FILE:  # a held-out list: per-epoch validation and the choice of best.pth used VAL_FILE
            config = config.clone()
            config.defrost()
            config.DATA.VAL_FILE = config.DATA.TEST_FILE
            config.freeze()
        clips, crops = config.TEST.FINAL_NUM_CLIP, config.TEST.FINAL_NUM_CROP
        test_set, test_loader = build_eval_loader(config, self.dist.rank, self.dist.world_size, clips, crops)
        test_and_report(self.eval_model, test_set, test_loader, config, self.device, self.amp_dtype, clips, crops,
                        {'checkpoint': source, 'epoch': epoch, 'train_epochs': self.config.TRAIN.EPOCHS}, 'final test')
