"""Multi-view video evaluation: the per-video score meter, exact cross-rank gathering, metrics, reports, ``--eval``.

How it differs from the original:

* Scores are kept per video index and gathered across ranks (``all_gather_object``), so every video is
  counted exactly once whatever the world size; the original averaged per-rank accuracies over a
  sampler whose hard-coded batch of 2 with ``drop_last`` silently skipped up to one video per rank.
* Each video is checked to have exactly ``clips x crops`` views, to be scored on one rank only, and
  every video of the annotation file is either scored or reported unreadable (by path).
* Views go through the model in chunks (all views of a batch at once when they fit), not one at a
  time. Scores: the sum of softmax probabilities over views (the original's rule; ``TEST.SCORE_AGG:
  softmax``) or the mean of logits (``logits``).
* Besides top-1 it reports top-5 and mean class accuracy, and writes ``eval_results.json`` and
  ``predictions.csv``.
* After every batch the ranks agree (one small all-reduce) on a stop signal (``engine/preemption.py``:
  :class:`PreemptedError` on every rank) and on an error one rank met (an unreadable video with
  ``TEST.ON_UNREADABLE error``, a killed worker, out of memory): every rank raises, instead of the others
  waiting in the next collective until the timeout.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from datasets import build_eval_loader, normalize_clip, read_label_list
from engine.amp import amp_dtype as resolve_amp_dtype
from engine.amp import autocast
from engine.checkpoint import load_model_weights
from engine.preemption import PreemptedError, PreemptionFlag, active_flag
from utils.progress import ProgressBar, format_duration
from engine.resume import resolve_resume
from utils import distributed as du
from utils.distributed import all_gather_object, get_world_size, is_main_process
from utils.fs import atomic_write_text

_logger = logging.getLogger(__name__)

SCORE_AGGREGATIONS = ('softmax', 'logits')


class EvaluationError(RuntimeError):
    """The gathered scores are inconsistent (a video scored twice, missing, or with the wrong number of views)."""


class VideoScoreMeter:
    """Accumulates per-video scores over views; merges across ranks.

    Args:
        num_classes: K, the width of the logits.
        num_views: views each video must get (clips x crops).
        score_agg: ``softmax`` (sum of per-view probabilities) or ``logits`` (mean of per-view logits).
    """

    def __init__(self, num_classes: int, num_views: int, score_agg: str = 'softmax') -> None:
        if score_agg not in SCORE_AGGREGATIONS:
            raise ValueError(f"TEST.SCORE_AGG: expected one of {list(SCORE_AGGREGATIONS)}, got {score_agg!r}")
        self.num_classes = int(num_classes)
        self.num_views = int(num_views)
        self.score_agg = score_agg
        self.scores: Dict[int, np.ndarray] = {}    # video index -> summed per-view scores (float64)
        self.labels: Dict[int, int] = {}
        self.views: Dict[int, int] = {}
        self.unreadable: Dict[int, Tuple[str, str]] = {}   # video index -> (path, reason)

    def update(self, indices: Sequence[int], logits: torch.Tensor, labels: Sequence[int]) -> None:
        """Add the views of a batch: ``logits`` is (B, V, K) for the videos ``indices`` (B,)."""
        if logits.ndim != 3 or logits.shape[-1] != self.num_classes:
            raise ValueError(f"expected logits of shape (B, V, {self.num_classes}), got {tuple(logits.shape)}")
        logits = logits.detach().float().cpu()
        per_view = torch.softmax(logits, dim=-1) if self.score_agg == 'softmax' else logits
        summed = per_view.double().sum(dim=1).numpy()
        for row, (index, label) in enumerate(zip(_ints(indices), _ints(labels))):
            if index in self.scores:
                self.scores[index] += summed[row]
                if self.labels[index] != label:
                    raise EvaluationError(f"video {index} arrived with labels {self.labels[index]} and {label}")
            else:
                self.scores[index] = summed[row].copy()
                self.labels[index] = label
                self.views[index] = 0
            self.views[index] += logits.shape[1]

    def add_unreadable(self, records: Iterable[Tuple[int, str, str]]) -> None:
        """Videos that could not be decoded: ``(index, path, reason)``."""
        for index, path, reason in records:
            self.unreadable[int(index)] = (str(path), str(reason))

    def synchronize(self) -> None:
        """Merge every rank's videos into every rank's meter; a video seen on two ranks is an error."""
        parts = all_gather_object((self.scores, self.labels, self.views, self.unreadable))
        if len(parts) == 1:
            return
        scores: Dict[int, np.ndarray] = {}
        labels: Dict[int, int] = {}
        views: Dict[int, int] = {}
        unreadable: Dict[int, Tuple[str, str]] = {}
        owner: Dict[int, int] = {}
        for rank, (s, l, v, u) in enumerate(parts):
            for index in list(s) + list(u):
                if index in owner and owner[index] != rank:
                    raise EvaluationError(f"video {index} was evaluated on ranks {owner[index]} and {rank}: "
                                          "the evaluation sampler must give each video to exactly one rank")
                owner[index] = rank
            scores.update(s)
            labels.update(l)
            views.update(v)
            unreadable.update(u)
        self.scores, self.labels, self.views, self.unreadable = scores, labels, views, unreadable

    def check(self, num_videos: Optional[int] = None) -> None:
        """Every scored video has exactly ``num_views`` views; with ``num_videos``, every index in
        ``[0, num_videos)`` is either scored or unreadable, never both."""
        wrong = {i: v for i, v in self.views.items() if v != self.num_views}
        if wrong:
            sample = dict(sorted(wrong.items())[:5])
            raise EvaluationError(f"{len(wrong)} video(s) got a number of views other than {self.num_views} "
                                  f"(clips x crops), e.g. {{index: views}} = {sample}")
        both = set(self.scores) & set(self.unreadable)
        if both:
            raise EvaluationError(f"video(s) {sorted(both)[:5]} both scored and reported unreadable")
        if num_videos is not None:
            seen = set(self.scores) | set(self.unreadable)
            missing = sorted(set(range(num_videos)) - seen)
            extra = sorted(seen - set(range(num_videos)))
            if missing or extra:
                raise EvaluationError(f"expected videos 0..{num_videos - 1} once each: {len(missing)} missing "
                                      f"(e.g. {missing[:5]}), {len(extra)} unknown (e.g. {extra[:5]})")

    def arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indices (N,), scores (N, K), labels (N,))`` sorted by video index; scores averaged over views."""
        indices = np.array(sorted(self.scores), dtype=np.int64)
        if not len(indices):
            return indices, np.zeros((0, self.num_classes)), np.zeros((0,), dtype=np.int64)
        scores = np.stack([self.scores[i] / self.views[i] for i in indices])
        labels = np.array([self.labels[i] for i in indices], dtype=np.int64)
        return indices, scores, labels


def topk_predictions(scores: np.ndarray, k: int = 5) -> np.ndarray:
    """Class ids of the ``k`` highest scores per row (ties: lower class id first)."""
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind='stable')[:, :k]


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Top-1, top-5 and mean class accuracy in percent (mean over the classes present in ``labels``)."""
    if not len(labels):
        return {'acc1': 0.0, 'acc5': 0.0, 'mean_class_acc': 0.0}
    top = topk_predictions(scores, 5)
    correct1 = top[:, 0] == labels
    correct5 = (top == labels[:, None]).any(axis=1)
    per_class = [correct1[labels == c].mean() for c in np.unique(labels)]
    return {'acc1': float(100.0 * correct1.mean()), 'acc5': float(100.0 * correct5.mean()),
            'mean_class_acc': float(100.0 * np.mean(per_class))}


def _ints(values: Any) -> List[int]:
    if isinstance(values, torch.Tensor):
        return [int(v) for v in values.reshape(-1).tolist()]
    return [int(v) for v in values]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Dict[str, Any]], num_classes: int, num_views: int, *,
             device: torch.device, normalize: Any, score_agg: str = 'softmax',
             amp_dtype: Optional[torch.dtype] = None, max_clips_per_forward: int = 16,
             num_videos: Optional[int] = None, desc: str = 'eval', show_progress: bool = True) -> VideoScoreMeter:
    """Score every video of ``loader`` on this rank, gather all ranks, check the counts.

    Args:
        model: returns (N, K) logits for float clips (N, T, 3, H, W).
        loader: yields dicts ``imgs`` uint8 (B, V, T, 3, S, S), ``index`` (B,), ``label`` (B,),
            ``unreadable`` list of (index, path, reason).
        num_classes: K.
        num_views: V expected per video (clips x crops).
        device: where the model runs.
        normalize: ``datasets.normalize_clip`` (uint8 -> normalised float, on the device).
        score_agg: ``softmax`` | ``logits``.
        amp_dtype: autocast dtype (None = fp32).
        max_clips_per_forward: views of several videos are forwarded together up to this many clips.
        num_videos: size of the annotation file; when given, every video must be scored or unreadable.
        desc: label of the progress bar.
        show_progress: draw the progress bar (rank 0).
    """
    was_training = model.training
    model.eval()
    meter = VideoScoreMeter(num_classes, num_views, score_agg)
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    world_size = get_world_size()
    # Ranks may hold one batch more than others: the per-batch agreement covers the batches every rank has,
    # one more after the loop covers the rest (the same number of collectives on every rank).
    agreed_batches = total if world_size == 1 else min((n or 0) for n in all_gather_object(total))
    flag = active_flag()
    bar = ProgressBar(total, desc=desc, enabled=show_progress)
    error: Optional[Exception] = None
    batches = iter(loader)
    position = 0
    try:
        with flag.interrupts_deferred() if flag is not None else contextlib.nullcontext():
            while True:
                error = None
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except Exception as e:  # e.g. a killed worker, an unreadable video with TEST.ON_UNREADABLE error
                    error = e
                if error is None:
                    try:
                        _score_batch(model, batch, meter, num_views, device, normalize, amp_dtype,
                                     max_clips_per_forward)
                    except Exception as e:  # e.g. out of memory on this rank's device
                        error = e
                    bar.update(1)
                position += 1
                if agreed_batches is None or position <= agreed_batches:
                    _stop_or_fail_together(flag, error, device, f'{desc} stopped at batch {position} of {total}')
                elif error is not None:
                    break
            if world_size > 1:
                _stop_or_fail_together(flag, error, device, f'{desc} stopped at batch {position} of {total}')
    finally:
        bar.close()
        model.train(was_training)
        del batches  # a loader stopped early shuts its workers down now, not at the exit
    meter.synchronize()
    meter.check(num_videos)
    return meter


def _score_batch(model: nn.Module, batch: Dict[str, Any], meter: VideoScoreMeter, num_views: int,
                 device: torch.device, normalize: Any, amp_dtype: Optional[torch.dtype],
                 max_clips_per_forward: int) -> None:
    """Forward every view of ``batch`` (in chunks of ``max_clips_per_forward`` clips) into ``meter``."""
    meter.add_unreadable(batch.get('unreadable') or [])
    imgs = batch['imgs']
    if not imgs.shape[0]:
        return
    if imgs.shape[1] != num_views:
        raise EvaluationError(f"the loader gave {imgs.shape[1]} views per video, expected {num_views}")
    b, v = imgs.shape[:2]
    clips = imgs.to(device, non_blocking=True).flatten(0, 1)
    outputs = []
    for chunk in clips.split(max(1, max_clips_per_forward)):
        with autocast(device, amp_dtype):
            outputs.append(model(normalize(chunk)).float())
    meter.update(batch['index'], torch.cat(outputs).view(b, v, -1), batch['label'])


def _stop_or_fail_together(flag: Optional[PreemptionFlag], error: Optional[Exception], device: torch.device,
                           stopped: str) -> None:
    """After an evaluation batch: raise ``error`` (this rank's, or another rank's as ``PeerFailedError``) or
    :class:`PreemptedError` (a signal on any rank), on every rank alike. With several ranks this is one small
    all-reduce (the batch's scores were just read to the host anyway)."""
    world_size = get_world_size()
    code = flag.code(world_size) if flag is not None else 0.0
    if world_size > 1:
        agreed = torch.tensor([code, float(error is not None)], dtype=torch.float64, device=device)
        code, errors = du.all_reduce_sum(agreed).tolist()
        if errors:
            du.raise_together(error)
    elif error is not None:
        raise error
    if flag is not None and flag.adopt(code, world_size):
        raise PreemptedError(stopped)


def summarize(meter: VideoScoreMeter) -> Dict[str, Any]:
    """Metrics and counts of a synchronised meter (the core of ``eval_results.json``)."""
    _, scores, labels = meter.arrays()
    result: Dict[str, Any] = classification_metrics(scores, labels)
    result.update(num_videos=int(len(labels)), num_views=meter.num_views, score_agg=meter.score_agg,
                  num_unreadable=len(meter.unreadable),
                  unreadable=[meter.unreadable[i][0] for i in sorted(meter.unreadable)],
                  unreadable_reasons={meter.unreadable[i][0]: meter.unreadable[i][1]
                                      for i in sorted(meter.unreadable)})
    return result


def write_predictions_csv(path: str, meter: VideoScoreMeter, samples: Sequence[Tuple[str, int]],
                          class_names: Optional[Sequence[str]] = None, k: int = 5) -> None:
    """One row per scored video: ``path, label, label_name, correct`` (top-1), then the top-k class ids
    ``top1_id..topk_id``, their names ``top1_name..topk_name`` and scores ``top1_score..topk_score``
    (the layout tools/report.py reads).

    Scores are per-view averages: mean probability for ``softmax`` aggregation (so the top-1 score is
    a confidence in [0, 1]), mean logit for ``logits``. Written atomically through the csv module, so
    paths and class names with commas or quotes stay one field.
    """
    indices, scores, labels = meter.arrays()
    top = topk_predictions(scores, k) if len(indices) else np.zeros((0, 0), dtype=np.int64)
    k = top.shape[1] if len(indices) else min(k, meter.num_classes)

    def name(c: int) -> str:
        return class_names[c] if class_names is not None and 0 <= c < len(class_names) else ''

    header = ['path', 'label', 'label_name', 'correct']
    header += [f'top{j + 1}_id' for j in range(k)] + [f'top{j + 1}_name' for j in range(k)]
    header += [f'top{j + 1}_score' for j in range(k)]
    rows: List[List[Any]] = [header]
    for row, index in enumerate(indices):
        label = int(labels[row])
        ids = [int(c) for c in top[row]]
        rows.append([samples[index][0], label, name(label), int(ids[0] == label)] + ids
                    + [name(c) for c in ids] + [f'{scores[row, c]:.6g}' for c in ids])
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator='\n').writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_eval_results(output_dir: str, result: Dict[str, Any], meter: VideoScoreMeter,
                       samples: Sequence[Tuple[str, int]], class_names: Optional[Sequence[str]] = None,
                       prefix: str = '') -> Tuple[str, str]:
    """Write ``{prefix}eval_results.json`` and ``{prefix}predictions.csv`` into ``output_dir``."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, f'{prefix}eval_results.json')
    csv_path = os.path.join(output_dir, f'{prefix}predictions.csv')
    atomic_write_text(json_path, json.dumps(result, indent=2, sort_keys=False) + '\n')
    write_predictions_csv(csv_path, meter, samples, class_names)
    return json_path, csv_path


# ------------------------------------------------------------------------------------------------ config level
def class_names(config: Any) -> Optional[List[str]]:
    """Names by class id from ``DATA.LABEL_LIST``, or None when the file is absent or unreadable."""
    path = config.DATA.LABEL_LIST
    if not path or not os.path.isfile(path):
        return None
    try:
        return read_label_list(path)
    except (OSError, ValueError) as e:
        _logger.warning(f'class names unavailable ({e}): predictions.csv gets ids only')
        return None


def evaluate_views(model: nn.Module, loader: Any, num_videos: int, config: Any, device: torch.device,
                   amp_dtype: Optional[torch.dtype], num_views: int,
                   desc: str) -> Tuple[Dict[str, Any], VideoScoreMeter]:
    """Evaluate with ``config``'s settings, log one accuracy line; returns ``(summarize(meter), meter)``.

    ``TEST.BATCH_SIZE`` videos x ``num_views`` views go through the model at once.
    """
    start = time.time()
    meter = evaluate(model, loader, config.MODEL.NUM_CLASSES, num_views, device=device, normalize=normalize_clip,
                     score_agg=config.TEST.SCORE_AGG, amp_dtype=amp_dtype,
                     max_clips_per_forward=max(1, config.TEST.BATCH_SIZE) * num_views, num_videos=num_videos,
                     desc=desc, show_progress=is_main_process())
    result = summarize(meter)
    _logger.info(f"{desc}: top-1 {result['acc1']:.2f}%  top-5 {result['acc5']:.2f}%  mean class "
                 f"{result['mean_class_acc']:.2f}%  on {result['num_videos']} videos x {num_views} views"
                 + (f", {result['num_unreadable']} unreadable" if result['num_unreadable'] else '')
                 + f"  ({format_duration(time.time() - start)})")
    return result, meter


def test_and_report(model: nn.Module, dataset: Any, loader: Any, config: Any, device: torch.device,
                    amp_dtype: Optional[torch.dtype], num_clip: int, num_crop: int, extra: Dict[str, Any],
                    desc: str) -> Dict[str, Any]:
    """Evaluate with ``num_clip x num_crop`` views; rank 0 writes eval_results.json and predictions.csv
    into ``config.OUTPUT``. ``extra`` (checkpoint, epoch ...) is added to the json."""
    result, meter = evaluate_views(model, loader, len(dataset), config, device, amp_dtype, num_clip * num_crop, desc)
    result.update(num_clip=num_clip, num_crop=num_crop, views=f'{num_clip}x{num_crop}', model=config.MODEL.NAME,
                  val_file=config.DATA.VAL_FILE, world_size=get_world_size(), **extra)
    if is_main_process():
        paths = write_eval_results(config.OUTPUT, result, meter, dataset.samples, class_names(config))
        _logger.info(f'wrote {paths[0]} and {paths[1]}')
    return result


def evaluate_checkpoint(config: Any, dist_info: du.DistInfo, model: nn.Module,
                        on_start: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
    """``--eval``: the checkpoint of ``--resume`` on DATA.VAL_FILE with TEST.NUM_CLIP x TEST.NUM_CROP views.

    Needs only VAL_FILE and the checkpoint (the original also built the train loader). Results go to
    ``config.OUTPUT``, which for ``--eval`` is the run's ``eval/<checkpoint stem>_<clips>x<crops>`` folder
    (``engine.config.eval_output_dir``), never the training run's own files. ``on_start`` is called once the
    weights are loaded and the list is read, before anything is evaluated (``main.py`` writes config.yaml,
    environment.json and the log then, so a checkpoint that does not load leaves no folder behind)."""
    path = resolve_resume(config)
    checkpoint = load_model_weights(model, path, config=config)
    clips, crops = config.TEST.NUM_CLIP, config.TEST.NUM_CROP
    dataset, loader = build_eval_loader(config, dist_info.rank, dist_info.world_size, clips, crops)
    if on_start is not None:
        on_start()
    eval_model = torch.compile(model) if config.TRAIN.COMPILE else model
    return test_and_report(eval_model, dataset, loader, config, dist_info.device,
                           resolve_amp_dtype(config, dist_info.device), clips, crops,
                           {'checkpoint': path, 'epoch': checkpoint.get('epoch')}, 'eval')
