"""Start-up checks: every file a run reads is looked for before a model is built or anything is written.

New (the original opened its files one after another, the checkpoint only after building the loaders and the
model). ``check_run_files`` looks at the files the mode reads, in the order a user needs them:

* ``--eval`` needs its checkpoint (``--resume``); a training run's explicit ``--resume`` too;
* the annotation lists the mode reads (``DATA.TRAIN_FILE`` / ``VAL_FILE`` / ``TEST_FILE``, see
  ``engine.data_summary.lists_read``) and, for training, ``DATA.LABEL_LIST`` (``--eval`` goes without names);
* the videos: a list none of whose first 20 videos exists (a wrong ``DATA.ROOT``);
* training without a checkpoint to resume: ``TRAIN.PRETRAINED_PATH`` (the ImageNet start): present, a state
  dict, and finite (weights holding NaN / inf would only show up as a NaN loss, after the run folder was made).

The first problem is raised as a ``ConfigError`` of one line: what the file is for, the path as it was
resolved (absolute, and relative to what), and what to do; the other missing files are named after it, so
one attempt shows them all. Files that are about to be generated (the toy dataset) are passed in as
``generated`` and not looked for.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, List, Optional, Tuple

from datasets import AnnotationError
from datasets.annotations import join_root, list_root, parse_annotation_lines
from engine.config import ConfigError
from engine.checkpoint.weights import pretrained_problem
from engine.data_summary import lists_read
from engine.defaults import _C
from engine.resume import EPOCH_CHECKPOINT, ResumeTarget, checkpoint_problem  # auto-resume's names and checks

ORIGINAL_REPO = 'https://github.com/TalalWasim/Video-FocalNets'
FOCALNET_REPO = 'https://github.com/microsoft/FocalNet'
# the names the model zoo tells users to save the published checkpoints under (video-focalnet_base_k400.pth ...)
_PUBLISHED = re.compile(r'video[-_]focalnet[-_](tiny|small|base)[-_]\w+\.(pth|pt|safetensors)$', re.IGNORECASE)
_IMAGENET = re.compile(r'focalnet[-_](tiny|small|base)[-_](srf|lrf)\w*\.(pth|pt|bin|safetensors)$', re.IGNORECASE)
_PURPOSE = {
    'DATA.TRAIN_FILE': 'the training list',
    'DATA.VAL_FILE': 'the validation list',
    'DATA.TEST_FILE': "the held-out list of the final test ('' tests on DATA.VAL_FILE)",
}


def describe_path(path: str) -> str:
    """``/abs/path`` plus what a relative path was resolved against (the working directory)."""
    if os.path.isabs(path):
        return os.path.normpath(path)
    return f'{os.path.abspath(path)} (relative to the working directory {os.getcwd()})'


def _missing_checkpoint(key: str, path: str, purpose: str) -> Optional[str]:
    if os.path.isfile(path):
        return None
    problem = f'{key} {path} ({purpose}): not found at {describe_path(path)}'
    if os.path.isdir(path):
        problem = f'{key} {path} ({purpose}): {os.path.abspath(path)} is a folder, expected a checkpoint file'
    if _PUBLISHED.search(os.path.basename(path)):
        return (f'{problem}; this is a published Video-FocalNet checkpoint: download it from the model zoo in the '
                f'README of {ORIGINAL_REPO} (links to the weights) and pass the path of the downloaded file')
    return f'{problem}; check the path (a training run keeps last.pth and best.pth in its output folder)'


def _unloadable_checkpoint(key: str, path: str, purpose: str, target: Optional[ResumeTarget] = None) -> Optional[str]:
    problem = checkpoint_problem(path, target)
    if problem is None:
        return None
    return f'{key} {path} ({purpose}): cannot be used: {problem}'


def _missing_pretrained(path: str) -> Optional[str]:
    if os.path.isfile(path):
        return None
    where = describe_path(path)
    start = "or pass --pretrained '' to train from scratch (random initialisation)"
    if _PUBLISHED.search(os.path.basename(path)):
        return (f'TRAIN.PRETRAINED_PATH {path} (the weights training starts from): not found at {where}; this is a '
                f'published Video-FocalNet checkpoint: download it from the model zoo in the README of '
                f'{ORIGINAL_REPO}, {start}')
    name = os.path.basename(path) if _IMAGENET.search(os.path.basename(path)) else 'focalnet_{tiny,small,base}_srf.pth'
    return (f'TRAIN.PRETRAINED_PATH {path} (the ImageNet-1k FocalNet-SRF weights training starts from): not found at '
            f'{where}; download {name} from the ImageNet-1K models of {FOCALNET_REPO} (README, release v1.0.0) to that '
            f'path or pass --pretrained PATH, {start}')


def _unusable_pretrained(path: str) -> Optional[str]:
    problem = pretrained_problem(path)
    if problem is None:
        return None
    return (f"TRAIN.PRETRAINED_PATH {path} (the weights training starts from): cannot be used: {problem}; pass "
            f"another file, or --pretrained '' to train from scratch")


def _missing_list(key: str, path: str, root: str) -> Optional[str]:
    if os.path.isfile(path):
        return None
    purpose = _PURPOSE.get(key, 'an annotation list')
    hint = (f"point {key} at your list (--opts {key} PATH; annotation lists are read relative to the working "
            f"directory, DATA.ROOT only prefixes the video paths inside them) or write it with "
            f"python -m datasets.prepare (DATA.md)")
    if root and not os.path.isabs(path) and os.path.isfile(os.path.join(root, path)):
        hint = f'did you mean {os.path.abspath(os.path.join(root, path))} (inside DATA.ROOT)? {hint}'
    return f'{key} {path} ({purpose}): not found at {describe_path(path)}; {hint}'


def _missing_label_list(path: str) -> Optional[str]:
    if not path or os.path.isfile(path):
        return None
    if path == _C.DATA.LABEL_LIST:  # the original's default names a file it never shipped: class ids only
        return None
    return (f"DATA.LABEL_LIST {path} (the class names, 'id,name' lines): not found at {describe_path(path)}; "
            f"point it at the label list (the published ones are in labels/) or set DATA.LABEL_LIST '' to go "
            f"without class names")


def _first_videos(path: str, count: int = 20) -> List[str]:
    """The first ``count`` video paths of the list ``path`` as written (the head of the file only; a malformed
    line, a JSON list or an unreadable file give [] and are left for the loader to report in full)."""
    if path.endswith('.json'):
        return []
    try:
        with open(path, 'r', encoding='utf-8', errors='replace') as f:
            head = [line for _, line in zip(range(count + 10), f)]
        return [video for video, _ in parse_annotation_lines(head, path)][:count]
    except (OSError, AnnotationError):
        return []


def _missing_videos(config: Any, lists: Iterable[Tuple[str, str]]) -> Optional[str]:
    """A list none of whose first videos exists is read against the wrong DATA.ROOT (or the videos are elsewhere).

    A few missing videos are normal (Kinetics lists name videos that were taken down); all of the first 20
    missing is not, and would otherwise end the run later, after the model is built, as unreadable videos."""
    for key, path in lists:
        root, _ = list_root(config.DATA.ROOT, path)   # DATA.ROOT '': the root recorded in the list's manifest
        videos = _first_videos(path) if os.path.isfile(path) else []
        if not videos or any(os.path.exists(join_root(root, video)) for video in videos):
            continue
        example = join_root(root, videos[0])
        if root and not os.path.isdir(root) and not os.path.isabs(videos[0]):
            what = f'DATA.ROOT {root} (the folder the videos of {key} are listed relative to): no such folder at ' \
                   f'{describe_path(root)}'
        else:
            what = (f'{key} {path}: none of its first {len(videos)} videos exists, e.g. {videos[0]!r} at '
                    f'{describe_path(example)} (DATA.ROOT {root!r})')
        return (f"{what}; set --opts DATA.ROOT to the folder that holds the videos (paths in the list are relative "
                f"to it; '' when the list holds paths relative to the working directory or absolute ones)")
    return None


def run_file_problems(config: Any, generated: Iterable[str] = ()) -> List[str]:
    """One line per file the run cannot use, in the order a user meets them (see the module docstring)."""
    if config.THROUGHPUT_MODE:  # random clips through a randomly initialised model: no file is read
        return []
    skip = {os.path.abspath(p) for p in generated}
    problems: List[Optional[str]] = []
    resume = config.MODEL.RESUME
    if config.EVAL_MODE and not resume:
        problems.append('--eval needs the checkpoint to evaluate: pass --resume CHECKPOINT (a training run keeps '
                        'last.pth and best.pth in its output folder; auto-resume never applies to --eval)')
    elif resume:
        purpose = 'the checkpoint to evaluate' if config.EVAL_MODE else 'the checkpoint to resume training from'
        # a training resume: the entries that need only the config (epoch range, state layouts) too; the
        # trainer checks the rest (updates per epoch, optimizer shapes) before anything is restored
        target = None if config.EVAL_MODE else ResumeTarget(epochs=config.TRAIN.EPOCHS)
        problems.append(_missing_checkpoint('--resume', resume, purpose)
                        or _unloadable_checkpoint('--resume', resume, purpose, target))
    lists = [(key, path) for key, path in lists_read(config) if os.path.abspath(path) not in skip]
    problems += [_missing_list(key, path, config.DATA.ROOT) for key, path in lists]
    if not config.EVAL_MODE and os.path.abspath(config.DATA.LABEL_LIST or '.') not in skip:
        # training stores the names with its results; --eval does without (predictions.csv gets class ids)
        problems.append(_missing_label_list(config.DATA.LABEL_LIST))
    if not any(problems):  # the lists are there: do they name videos that are?
        problems.append(_missing_videos(config, lists))
    if not config.EVAL_MODE and not resume and config.TRAIN.PRETRAINED_PATH and not will_auto_resume(config):
        problems.append(_missing_pretrained(config.TRAIN.PRETRAINED_PATH)
                        or _unusable_pretrained(config.TRAIN.PRETRAINED_PATH))
    return [p for p in problems if p]


def will_auto_resume(config: Any) -> bool:
    """Whether training continues from the run folder's own checkpoints (then the ImageNet file is not read)."""
    if not config.TRAIN.AUTO_RESUME or not os.path.isdir(config.OUTPUT):
        return False
    return any(name == 'last.pth' or EPOCH_CHECKPOINT.fullmatch(name) for name in os.listdir(config.OUTPUT))


def check_run_files(config: Any, generated: Iterable[str] = ()) -> None:
    """Raise ``ConfigError`` (one line) for the first file the run cannot use; the others are named after it."""
    problems = run_file_problems(config, generated)
    if not problems:
        return
    others = [p.split(' (', 1)[0] for p in problems[1:]]
    raise ConfigError(problems[0] + (f' (also missing or unusable: {", ".join(others)})' if others else ''))
