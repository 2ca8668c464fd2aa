"""The paper's design-space study in miniature: every ``MODEL.FOCAL.DESIGN`` trained on the toy data.

    python -m benchmarks.design_space --prepare-toy data/toy   # once, unless the main command made it already
    python -m benchmarks.design_space --data data/toy          # every design, one after the other (--jobs N: N at once)

Each design is trained by the project's own command line (``main.py --cfg configs/toy/video-focalnet_toy.yaml``,
run as a subprocess) with one recipe and one seed, changing only ``MODEL.FOCAL.DESIGN``; ``MODEL.TUBELET_SIZE 1``
so that the stem sees single frames and only the model body can mix them. ``best.pth`` is chosen on
``val.csv`` (validated after every epoch with ``--val-clips`` clips x 3 crops, the test's crops; the toy
config's 4 x 3 validation would cost about as much as the training) and then tested once on ``test.csv``
with 4 x 3 views (``main.py --eval``). The toy's classes are time-reversal pairs (the same motion forwards
and backwards), so a model that does not order frames can tell the pair but not the direction: at most
about 50% top-1, chance being 12.5%.

The data folder must hold ``train.csv``, ``val.csv``, ``test.csv`` and ``labels.csv`` (paths relative to the
folder). The main command's toy data (``data/toy``, written by ``python main.py --cfg configs/toy/video-focalnet_toy.yaml``
or ``--prepare-toy DIR``, i.e. ``datasets.toy``) is such a folder: ``test.csv`` is its held-out split.

Printed: one line per design while running, then a Markdown table (design, parameters, GMACs of one view as
``tools.flops`` counts them, test top-1 4x3, training wall time including the per-epoch validation).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from models.architectures import DESIGNS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOY_CONFIG = os.path.join(REPO, 'configs', 'toy', 'video-focalnet_toy.yaml')
SPLIT_FILES = ('train.csv', 'val.csv', 'test.csv', 'labels.csv')


def prepare_toy(out_dir: str, seed: int = 0) -> None:
    """The toy dataset of ``seed`` (train, val and the held-out test split) in ``out_dir``."""
    from datasets.toy import ensure_toy_dataset

    ensure_toy_dataset(out_dir, seed=seed)
    print(f'toy data: {out_dir} (seed {seed}: train.csv, val.csv, test.csv, labels.csv)')


def check_data(data: str) -> None:
    missing = [name for name in SPLIT_FILES if not os.path.isfile(os.path.join(data, name))]
    if missing:
        raise SystemExit(f'design_space: {data} lacks {", ".join(missing)} (expected {", ".join(SPLIT_FILES)}; '
                         f'--prepare-toy DIR writes such a folder)')


def data_opts(data: str, val_file: str) -> List[str]:
    return ['DATA.ROOT', data, 'DATA.TRAIN_FILE', os.path.join(data, 'train.csv'),
            'DATA.VAL_FILE', os.path.join(data, val_file), 'DATA.LABEL_LIST', os.path.join(data, 'labels.csv')]


def run_main(args: Sequence[str], log_path: str, threads: Optional[int] = None) -> float:
    """Run ``main.py`` with ``args``; stdout/stderr go to ``log_path``. Returns the wall time in seconds."""
    env = dict(os.environ)
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    start = time.perf_counter()
    with open(log_path, 'w') as log:
        proc = subprocess.run([sys.executable, os.path.join(REPO, 'main.py'), *args], cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f'design_space: main.py failed (exit {proc.returncode}), see {log_path}')
    return elapsed


def find_one(root: str, name: str) -> str:
    found = glob.glob(os.path.join(root, '**', name), recursive=True)
    if len(found) != 1:
        raise SystemExit(f'design_space: expected one {name} under {root}, found {len(found)}')
    return found[0]


def count(design: str, model_opts: Sequence[str]) -> Dict[str, float]:
    """Parameters and GMACs of one view of the toy model of ``design`` (as ``python -m tools.flops``)."""
    import torch

    from models import build_model
    from engine.config import load_config
    from tools.flops import count_gmacs, count_params

    config = load_config(TOY_CONFIG, list(model_opts) + ['MODEL.FOCAL.DESIGN', design])
    with torch.device('meta'):
        model = build_model(config)
    size = config.DATA.IMG_SIZE
    return dict(params=count_params(model),
                gmacs=count_gmacs(model, (1, config.DATA.NUM_FRAMES, model.in_chans, size, size)))


def run_design(design: str, data: str, out: str, recipe: Sequence[str],
               threads: Optional[int] = None) -> Dict[str, object]:
    train_dir, test_dir = os.path.join(out, design, 'train'), os.path.join(out, design, 'test')
    os.makedirs(train_dir)
    os.makedirs(test_dir)
    opts = [*recipe, 'MODEL.FOCAL.DESIGN', design]
    train_time = run_main(['--cfg', TOY_CONFIG, '--output', train_dir, '--tag', design,
                           '--opts', *opts, *data_opts(data, 'val.csv'), 'TRAIN.FINAL_TEST', 'False',
                           'TRAIN.AUTO_RESUME', 'False'], os.path.join(out, design, 'train.log'), threads)
    best = find_one(train_dir, 'best.pth')
    run_main(['--cfg', TOY_CONFIG, '--eval', '--resume', best, '--output', test_dir, '--tag', design,
              '--opts', *opts, *data_opts(data, 'test.csv'), 'TEST.NUM_CLIP', '4', 'TEST.NUM_CROP', '3'],
             os.path.join(out, design, 'test.log'), threads)
    with open(find_one(test_dir, 'eval_results.json')) as f:
        results = json.load(f)
    return dict(design=design, acc1=results['acc1'], num_videos=results['num_videos'],
                best_epoch=results.get('epoch'), train_s=train_time)


def markdown_table(rows: Sequence[Dict[str, object]]) -> str:
    lines = ['| design | params | GMACs / view | test top-1 (4x3) | best epoch | train time |',
             '|---|---|---|---|---|---|']
    for r in rows:
        minutes, seconds = divmod(int(round(r['train_s'])), 60)
        lines.append(f"| `{r['design']}` | {r['params']:,} | {r['gmacs']:.3f} | {r['acc1']:.1f}% "
                     f"({r['num_videos']} videos) | {r['best_epoch']} | {minutes} min {seconds:02d} s |")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data', help='folder with train.csv, val.csv, test.csv, labels.csv')
    parser.add_argument('--prepare-toy', metavar='DIR', help='write a toy folder with a held-out test.csv, then exit')
    parser.add_argument('--designs', nargs='+', default=list(DESIGNS), choices=DESIGNS)
    parser.add_argument('--epochs', type=int, default=20, help='TRAIN.EPOCHS, the same for every design')
    parser.add_argument('--frames', type=int, default=8, help='DATA.NUM_FRAMES')
    parser.add_argument('--size', type=int, default=64, help='DATA.IMG_SIZE and DATA.INPUT_SIZE')
    parser.add_argument('--val-clips', type=int, default=1,
                        help='TEST.NUM_CLIP of the per-epoch validation (x 3 crops, the final test\'s crops); '
                             'the test is always 4 x 3')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None,
                        help='OMP_NUM_THREADS of the runs (default: torch\'s); on a machine shared with other jobs '
                             '1 is several times faster than 2 (measured: 1.1 s vs 12 s per toy training step)')
    parser.add_argument('--jobs', type=int, default=1,
                        help='designs trained at once (one main.py process each; use with --threads 1)')
    parser.add_argument('--out', default=os.path.join(REPO, 'output', 'design_space', time.strftime('%Y%m%d-%H%M%S')),
                        help='new folder for the runs (logs, checkpoints)')
    parser.add_argument('--opts', nargs='+', default=[], metavar='KEY VALUE',
                        help='further config overrides, applied to every design')
    args = parser.parse_args(argv)
    if args.prepare_toy:
        prepare_toy(args.prepare_toy)
        return 0
    if not args.data:
        parser.error('--data (or --prepare-toy) is required')
    data = os.path.abspath(args.data)
    check_data(data)
    if os.path.exists(args.out):
        parser.error(f'--out {args.out} exists; choose a new folder')
    recipe = ['MODEL.TUBELET_SIZE', '1', 'TRAIN.EPOCHS', str(args.epochs), 'DATA.NUM_FRAMES', str(args.frames),
              'DATA.IMG_SIZE', str(args.size), 'DATA.INPUT_SIZE', str(args.size), 'SEED', str(args.seed),
              'TEST.NUM_CLIP', str(args.val_clips), 'TEST.NUM_CROP', '3', *args.opts]
    print(f'recipe (every design): configs/toy/video-focalnet_toy.yaml + {" ".join(recipe)}; threads '
          f'{args.threads or "default"}; runs in {args.out}', flush=True)
    rows: List[Dict[str, object]] = []

    def one(design: str) -> None:
        row = {**run_design(design, data, args.out, recipe, args.threads), **count(design, recipe)}
        rows.append(row)
        print(f"{design}: {row['params']:,} params, {row['gmacs']:.3f} GMACs, test top-1 {row['acc1']:.1f}% "
              f"(best epoch {row['best_epoch']}), trained in {row['train_s']:.0f} s", flush=True)
        ordered = sorted(rows, key=lambda r: args.designs.index(r['design']))
        with open(os.path.join(args.out, 'design_space.json'), 'w') as f:  # after every design: partial runs count
            json.dump(dict(recipe=recipe, jobs=args.jobs, threads=args.threads, rows=ordered), f, indent=2)

    # --jobs N trains N designs at once (each its own main.py process): on a small CPU, N single-thread runs
    # use the cores better than one run after the other; the train times then include the neighbours' load
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in [pool.submit(one, design) for design in args.designs]:
            future.result()
    print(markdown_table(sorted(rows, key=lambda r: args.designs.index(r['design']))))
    return 0


if __name__ == '__main__':
    sys.exit(main())
