"""Command line of ``python -m datasets.prepare`` (see the package docstring)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from utils.os_errors import write_error_reason

from .build import DATASETS, prepare, summary_lines
from .outputs import render, write_outputs
from .sources import PrepareError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m datasets.prepare',
        description="Write train/val annotation lists of a dataset from its official annotation files.",
        epilog="Your own videos in class subfolders: python -m datasets.prepare folder --videos DIR --out OUT "
               "(see python -m datasets.prepare folder --help).")
    parser.add_argument('dataset', choices=sorted(DATASETS))
    parser.add_argument('--annotations', required=True, metavar='PATH',
                        help='the official annotation folder (Kinetics: or one CSV with a split column; '
                             'ActivityNet: or activity_net.v1-3.min.json)')
    parser.add_argument('--videos', required=True, metavar='DIR', help='folder holding the videos, any layout')
    parser.add_argument('--out', metavar='DIR', help='output folder (default: data/DATASET)')
    parser.add_argument('--labels', metavar='FILE', help='id,name label list (default: the published one in labels/)')
    parser.add_argument('--root', default='', metavar='DIR',
                        help="write paths relative to DIR (then set DATA.ROOT DIR); default: paths under --videos "
                             "as given, for DATA.ROOT ''")
    parser.add_argument('--overwrite', action='store_true', help='replace output files that hold other lists')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == 'folder':   # a folder of class subfolders: its own arguments (folder.py)
        from .folder import main as folder_main
        return folder_main(argv[1:])
    args = build_parser().parse_args(argv)
    out = args.out or os.path.join('data', args.dataset)
    try:
        prepared = prepare(args.dataset, args.annotations, args.videos, labels=args.labels, root=args.root)
        print(f"{args.dataset}: {prepared.video_files} video files under {args.videos}, "
              f"{prepared.num_classes} classes in {prepared.labels_path}")
        for line in summary_lines(prepared, out):
            print(line)
        files = render(prepared, args.annotations, args.videos, args.root)
        written, unchanged = write_outputs(out, files, overwrite=args.overwrite)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. --out read-only, on a full disk, or under a file: one line, no traceback
        print(f"error: {err.filename or out}: {write_error_reason(err)} (writing the lists to --out {out}; "
              f"nothing was written)", file=sys.stderr)
        return 2
    if written:
        lists = ', '.join(f"{s.file} ({len(s.rows)} videos)" for s in prepared.splits)
        print(f"wrote {', '.join(written)} in {out}: {lists}")
    else:
        print(f"{out}: already up to date, nothing written")
    return 0
