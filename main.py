"""Train and evaluate Video-FocalNets.

    python main.py --cfg configs/toy/video-focalnet_toy.yaml                       # one process (CPU or 1 GPU)
    torchrun --nproc_per_node 8 main.py --cfg configs/kinetics400/video-focalnet_tiny.yaml
    torchrun --nnodes 2 --node-rank 0 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 main.py ...
    python main.py --cfg CFG --eval --resume CKPT --opts TEST.NUM_CLIP 4 TEST.NUM_CROP 3
    python main.py --cfg CFG --throughput

The original's command line keeps working (``python -m torch.distributed.launch ... --local_rank N``, also
``--local-rank``), except that unknown flags are now an error. What changed with respect to the original
loop (each documented where it is implemented):

* evaluation needs only VAL_FILE and the checkpoint (no train loader, no ImageNet file); auto-resume never
  replaces ``--resume`` and never applies to ``--eval`` (utils/training.py);
* native AMP, gradient clipping once per optimizer update (not per micro-batch), weight decay applied as
  configured (utils/optimizer.py), scheduler independent of the timm version (utils/lr_scheduler.py);
* validation before saving, so ``max_accuracy`` is current; the final 4x3 test uses ``best.pth``;
* exact resume: at epoch ends from ``last.pth``, and mid-epoch after SIGTERM / SIGUSR1 (the run saves at
  the next optimizer-step boundary and exits with code 0);
* a NaN / inf loss on any rank stops every rank before the optimizer step, and nothing is saved from it;
* exact multi-view evaluation with per-video gathering (utils/evaluation.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from typing import Any, Dict, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from datasets import (AnnotationError, UnreadableVideosError, apply_random_erasing, build_eval_loader, build_mixup,
                      build_train_loader, ensure_toy_dataset, normalize_clip)
from models import build_model
from utils import distributed as du
from utils.checkpoint import CheckpointError, load_model_weights, load_pretrained, restore_rng_state
from utils.config import ConfigError, apply_lr_scaling, config_to_yaml, get_config, keys_the_original_ignored
from utils.ema import ModelEma
from utils.evaluation import evaluate_views, test_and_report
from utils.logger import TensorBoardWriter, setup_logging
from utils.lr_scheduler import build_scheduler
from utils.misc import (AverageMeter, PreemptionFlag, atomic_write_text, configure_determinism,
                        environment_summary, format_duration, memory_mb, seed_everything)
from utils.optimizer import build_optimizer, clip_gradients
from utils.pretrained import PretrainedMismatchError
from utils.training import (NonFiniteLossError, PreemptedError, amp_dtype, apply_weight_init, autocast,
                            build_criterion, build_grad_scaler, check_finite_weights, checkpoint_names,
                            gather_random_states, measure_throughput, resolve_resume, restore_training_state,
                            skip_first_batches, write_checkpoint)

logger = logging.getLogger('main')

EXIT_NON_FINITE_LOSS = 3
EXIT_TOO_MANY_UNREADABLE = 4


class TooManyUnreadableError(RuntimeError):
    """More than DATA.MAX_UNREADABLE_FRACTION of an epoch's videos could not be decoded."""


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
    parser.add_argument('--amp-opt-level', choices=['O0', 'O1', 'O2'], help='apex levels mapped to TRAIN.AMP')
    parser.add_argument('--throughput', action='store_true', help='measure clips/s of the model and exit')
    parser.add_argument('--seed', type=int, help='SEED')
    parser.add_argument('--local_rank', '--local-rank', type=int, dest='local_rank', default=None,
                        help='set by the deprecated torch.distributed.launch (torchrun uses LOCAL_RANK)')
    return parser.parse_args(argv)


def prepare_toy_data(config: Any, dist_info: du.DistInfo) -> None:
    """Generate the toy dataset on rank 0 when the toy folder lacks an annotation file; other ranks wait."""
    if config.DATA.DATASET != 'toy' or all(os.path.isfile(os.path.join(config.DATA.ROOT, name))
                                           for name in ('train.csv', 'val.csv', 'test.csv', 'labels.csv')):
        return
    if dist_info.is_main:
        logger.info(f'generating the toy dataset into {config.DATA.ROOT} (its annotation files are missing)')
        ensure_toy_dataset(config.DATA.ROOT)  # logs its own progress and time
    du.barrier()


class Trainer:
    """One training run: model, optimizer, schedule, loaders and the epoch loop."""

    def __init__(self, config: Any, dist_info: du.DistInfo, model: torch.nn.Module) -> None:
        self.config = config
        self.dist = dist_info
        self.device = dist_info.device
        self.model = model
        _, self.sampler, self.train_loader = build_train_loader(config, dist_info.rank, dist_info.world_size)
        self.val_set, self.val_loader = build_eval_loader(config, dist_info.rank, dist_info.world_size)
        self.mixup = build_mixup(config, dist_info.rank)
        self.criterion = build_criterion(config, self.mixup is not None)
        self.optimizer = build_optimizer(config, model)
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
            self.train_model = DistributedDataParallel(
                model, device_ids=[dist_info.local_rank] if self.device.type == 'cuda' else None,
                static_graph=bool(config.TRAIN.USE_CHECKPOINT), **du.no_buffer_sync_kwargs())
        if self.ema is None and config.TRAIN.EMA:
            # after DDP's broadcast: every rank seeds its model differently (SEED + rank) and the head of an
            # ImageNet init is drawn per rank, so an EMA copied before would start from other weights per rank
            self.ema = ModelEma(self.model, config.TRAIN.EMA_DECAY)
        self.eval_model: torch.nn.Module = model
        if config.TRAIN.COMPILE:
            self.train_model = torch.compile(self.train_model)
            self.eval_model = torch.compile(model)
        self.tb = TensorBoardWriter(os.path.join(config.OUTPUT, 'tensorboard'),
                                    enabled=config.TENSORBOARD and dist_info.is_main)
        self.preemption = PreemptionFlag().install()
        self.has_best = os.path.isfile(os.path.join(config.OUTPUT, 'best.pth'))

    # ------------------------------------------------------------------------------------------ start
    def _load_start_state(self) -> Dict[str, Any]:
        config = self.config
        state = {'start_epoch': 0, 'start_step': 0, 'max_accuracy': 0.0, 'random': None}
        path = resolve_resume(config)
        self.ema = None
        if path:
            logger.info(f'resuming from {path}')
            checkpoint = load_model_weights(self.model, path)
            self.ema = ModelEma(self.model, config.TRAIN.EMA_DECAY) if config.TRAIN.EMA else None
            state = restore_training_state(checkpoint, optimizer=self.optimizer, scheduler=self.scheduler,
                                           scaler=self.scaler, ema=self.ema, rank=self.dist.rank,
                                           world_size=self.dist.world_size)
            logger.info(f"resumed: epoch {state['start_epoch']}, step {state['start_step']} of "
                        f"{self.updates_per_epoch}, max accuracy {state['max_accuracy']:.2f}%")
            if config.TRAIN.PRETRAINED_PATH:
                logger.info(f'TRAIN.PRETRAINED_PATH not loaded: the weights come from {path}')
        elif config.TRAIN.PRETRAINED_PATH:
            load_pretrained(self.model, config.TRAIN.PRETRAINED_PATH, config)
        # a fresh EMA is made in __init__ once DDP has given every rank rank 0's weights
        return state

    def checkpoint_state(self, epoch: int, epoch_step: int) -> Dict[str, Any]:
        """What a checkpoint holds; ``epoch`` = last completed epoch, ``epoch_step`` = updates done after it.

        Call on every rank (the random states are gathered); only rank 0 writes it. Weights that are no
        longer finite (an update that overflowed although its loss and gradients were finite) stop the run
        here, before anything is written, on every rank alike (DDP keeps the weights equal)."""
        check_finite_weights(self.model, f'epoch {epoch} update {epoch_step}')
        random_states = gather_random_states(self.mixup)
        return {
            'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
            'lr_scheduler': self.scheduler.state_dict(),
            'scaler': self.scaler.state_dict() if self.scaler.is_enabled() else None,
            'ema': self.ema.state_dict() if self.ema is not None else None,
            'epoch': epoch, 'epoch_step': epoch_step,
            'step': (epoch + 1) * self.updates_per_epoch + epoch_step,
            'max_accuracy': self.state['max_accuracy'], 'config': config_to_yaml(self.config),
            'rng': random_states[0]['rng'], 'mixup': random_states[0]['mixup'], 'rng_per_rank': random_states,
        }

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
            val = self.validate(epoch)
            improved = val['acc1'] > self.state['max_accuracy'] or not self.has_best
            self.state['max_accuracy'] = max(self.state['max_accuracy'], val['acc1'])
            state = self.checkpoint_state(epoch, 0)
            if self.dist.is_main:
                names = checkpoint_names(epoch, config.TRAIN.EPOCHS, config.SAVE_FREQ, improved)
                write_checkpoint(config.OUTPUT, names, state)
                self._append_metrics(dict(epoch=epoch, **train_stats, **{f'val_{k}': v for k, v in val.items()},
                                          max_accuracy=self.state['max_accuracy'],
                                          epoch_time_s=round(time.time() - epoch_start, 1)))
            du.barrier()
            self.has_best = self.has_best or improved
            logger.info(f"epoch {epoch}: max accuracy {self.state['max_accuracy']:.2f}%, "
                        f"{format_duration(time.time() - epoch_start)}")
            # a signal that came during validation or the save: last.pth is already this epoch's, stop now
            requested = torch.tensor([float(self.preemption.requested)], dtype=torch.float64, device=self.device)
            if du.all_reduce_sum(requested).item() > 0:
                logger.warning(f'{self.preemption.signal_name or "preemption"} received: last.pth holds epoch '
                               f'{epoch}; exiting, rerun the same command to continue')
                raise PreemptedError()
        logger.info(f'training time {format_duration(time.time() - run_start)}')
        self.tb.flush()

    def train_one_epoch(self, epoch: int, skip_updates: int) -> Dict[str, float]:
        config, device = self.config, self.device
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
        meters = {k: AverageMeter() for k in ('loss', 'grad_norm', 'step_time', 'data_time')}
        unreadable = torch.zeros(2, dtype=torch.float64)  # this epoch, all ranks: [unreadable, drawn]
        pending = torch.zeros(2, dtype=torch.float64)     # this rank, not yet reduced
        per_update = self.accum * config.DATA.BATCH_SIZE * max(1, config.AUG.REPEATED_AUG) * self.dist.world_size
        epoch_videos = self.updates_per_epoch * per_update // max(1, config.AUG.REPEATED_AUG)
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        end = time.time()
        for update in range(skip_updates, self.updates_per_epoch):
            loss_sum = torch.zeros((), device=device)
            data_time = 0.0
            for micro in range(self.accum):
                tick = time.time()
                batch = next(batches)
                data_time += time.time() - tick
                pending += torch.tensor([float(batch['num_unreadable']),
                                         batch['label'].shape[0] / max(1, config.AUG.REPEATED_AUG)],
                                        dtype=torch.float64)
                loss_sum += self.forward_backward(batch, last=micro == self.accum - 1)
            # One collective per update: [non-finite loss, preemption, unreadable, drawn] summed over ranks.
            flags = torch.cat([(~torch.isfinite(loss_sum)).double().view(1).cpu(),
                               torch.tensor([float(self.preemption.requested)], dtype=torch.float64), pending])
            flags = du.all_reduce_sum(flags.to(device)).cpu()
            pending.zero_()
            unreadable += flags[2:]
            global_step = epoch * self.updates_per_epoch + update
            if flags[0] > 0:
                raise NonFiniteLossError(
                    f'loss is {loss_sum.item()} on this rank ({int(flags[0])} rank(s) non-finite) at epoch {epoch}, '
                    f'update {update} (global step {global_step}, lr {self.optimizer.param_groups[0]["lr"]:.3g}). '
                    'Stopped before the optimizer step; no checkpoint was written from this state. Try a lower '
                    'TRAIN.BASE_LR, TRAIN.CLIP_GRAD > 0, or TRAIN.AMP bf16 instead of fp16.')
            if unreadable[0] > config.DATA.MAX_UNREADABLE_FRACTION * epoch_videos:
                raise TooManyUnreadableError(
                    f'{int(unreadable[0])} of {int(unreadable[1])} videos drawn in epoch {epoch} were unreadable, more '
                    f'than DATA.MAX_UNREADABLE_FRACTION={config.DATA.MAX_UNREADABLE_FRACTION} of the '
                    f'{epoch_videos} per epoch; the log names each one. Check the data with '
                    f'python -m datasets.check --cfg CONFIG --split train')
            grad_norm = self.optimizer_step(global_step)
            meters['loss'].update(loss_sum.item() / self.accum)
            if math.isfinite(grad_norm):  # fp16 steps skipped by the loss scaler are not averaged in
                meters['grad_norm'].update(grad_norm)
            meters['data_time'].update(data_time)
            meters['step_time'].update(time.time() - end)
            end = time.time()
            if (update + 1) % config.PRINT_FREQ == 0 or update + 1 == self.updates_per_epoch:
                self._log_step(epoch, update, global_step, meters, per_update)
            if flags[1] > 0:
                self._save_preempted(epoch, update + 1)
        if unreadable[0]:
            logger.warning(f'epoch {epoch}: {int(unreadable[0])} unreadable videos were replaced by others')
        return {'train_loss': meters['loss'].avg, 'lr': self.optimizer.param_groups[0]['lr'],
                'unreadable': int(unreadable[0])}

    def forward_backward(self, batch: Dict[str, Any], last: bool) -> torch.Tensor:
        """Normalise, erase and mix on the device, forward, backward of loss / ACCUMULATION_STEPS; returns the loss."""
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

    def optimizer_step(self, global_step: int) -> float:
        """LR for this update, unscale, clip once, step, update the scaler and the EMA; returns the grad norm.

        With fp16 a non-finite gradient is the loss scaler's business (it skips the step and lowers the
        scale); otherwise it stops training before the step, like a non-finite loss. Gradients are
        all-reduced, so every rank takes the same decision."""
        self.scheduler.step_update(global_step)
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(clip_gradients(self.model.parameters(), self.config.TRAIN.CLIP_GRAD))
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
        return grad_norm

    def _log_step(self, epoch: int, update: int, global_step: int, meters: Dict[str, AverageMeter],
                  clips_per_update: int) -> None:
        config = self.config
        step_time = meters['step_time'].avg
        remaining = self.updates_per_epoch - update - 1
        run_remaining = remaining + (config.TRAIN.EPOCHS - epoch - 1) * self.updates_per_epoch
        lr = self.optimizer.param_groups[0]['lr']
        clips_per_s = clips_per_update / meters['step_time'].val if meters['step_time'].val > 0 else 0.0
        mem = memory_mb(self.device)
        logger.info(f"Train: [{epoch}/{config.TRAIN.EPOCHS}][{update + 1}/{self.updates_per_epoch}]  "
                    f"eta {format_duration(remaining * step_time)} (run {format_duration(run_remaining * step_time)})  "
                    f"lr {lr:.6f}  time {meters['step_time'].val:.3f} ({step_time:.3f})  "
                    f"data {meters['data_time'].val:.3f}  loss {meters['loss'].val:.4f} ({meters['loss'].avg:.4f})  "
                    f"grad_norm {meters['grad_norm'].val:.4f} ({meters['grad_norm'].avg:.4f})  "
                    f"clips/s {clips_per_s:.1f}  mem {mem:.0f}MB")
        self.tb.scalars(global_step, 'train', loss=meters['loss'].val, lr=lr, grad_norm=meters['grad_norm'].val,
                        data_time=meters['data_time'].val, step_time=meters['step_time'].val,
                        clips_per_s=clips_per_s, memory_mb=mem)

    def _save_preempted(self, epoch: int, epoch_step: int) -> None:
        logger.warning(f'{self.preemption.signal_name or "preemption"} received: saving last.pth at epoch {epoch}, '
                       f'update {epoch_step} of {self.updates_per_epoch}, then exiting; rerun the same command '
                       'to continue')
        state = self.checkpoint_state(epoch - 1, epoch_step)
        if self.dist.is_main:
            write_checkpoint(self.config.OUTPUT, ['last.pth'], state)
        du.barrier()
        raise PreemptedError()

    def _append_metrics(self, record: Dict[str, Any]) -> None:
        path = os.path.join(self.config.OUTPUT, 'metrics.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps(record) + '\n')

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
        """Test ``best.pth`` with TEST.FINAL_NUM_CLIP x TEST.FINAL_NUM_CROP views and write the results."""
        config = self.config
        best = os.path.join(config.OUTPUT, 'best.pth')
        if os.path.isfile(best):
            checkpoint = load_model_weights(self.model, best)
            source, epoch = best, checkpoint.get('epoch')
        else:
            logger.warning('no best.pth: the final test uses the current weights')
            source, epoch = 'final weights', config.TRAIN.EPOCHS - 1
        if config.DATA.TEST_FILE:  # the held-out split: per-epoch validation and best.pth used VAL_FILE
            config = config.clone()
            config.defrost()
            config.DATA.VAL_FILE = config.DATA.TEST_FILE
            config.freeze()
        clips, crops = config.TEST.FINAL_NUM_CLIP, config.TEST.FINAL_NUM_CROP
        test_set, test_loader = build_eval_loader(config, self.dist.rank, self.dist.world_size, clips, crops)
        test_and_report(self.eval_model, test_set, test_loader, config, self.device, self.amp_dtype, clips, crops,
                        {'checkpoint': source, 'epoch': epoch}, 'final test')


# ---------------------------------------------------------------------------------------------- other modes
def evaluate_checkpoint(config: Any, dist_info: du.DistInfo, model: torch.nn.Module) -> None:
    """``--eval``: the checkpoint of ``--resume`` on DATA.VAL_FILE with TEST.NUM_CLIP x TEST.NUM_CROP views."""
    path = resolve_resume(config)
    checkpoint = load_model_weights(model, path)
    clips, crops = config.TEST.NUM_CLIP, config.TEST.NUM_CROP
    dataset, loader = build_eval_loader(config, dist_info.rank, dist_info.world_size, clips, crops)
    eval_model = torch.compile(model) if config.TRAIN.COMPILE else model
    test_and_report(eval_model, dataset, loader, config, dist_info.device, amp_dtype(config, dist_info.device),
                    clips, crops, {'checkpoint': path, 'epoch': checkpoint.get('epoch')}, 'eval')


# ---------------------------------------------------------------------------------------------- entry point
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
    except PreemptedError:
        logger.info('preempted: state saved in last.pth; exiting with code 0')
        return 0
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
        return 2
    dist_info = du.init_distributed(args.local_rank)
    try:
        return run(config, dist_info)
    except (ConfigError, CheckpointError, PretrainedMismatchError, AnnotationError, FileNotFoundError) as e:
        logger.error(f'{type(e).__name__}: {e}')  # a user error: one line, no traceback
        print(f'main.py: error: {e}', file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        logger.error(f'stopping: {e}')
        return EXIT_NON_FINITE_LOSS
    except (TooManyUnreadableError, UnreadableVideosError) as e:
        logger.error(f'stopping: {e}')
        return EXIT_TOO_MANY_UNREADABLE
    finally:
        du.cleanup()


if __name__ == '__main__':
    sys.exit(main())
