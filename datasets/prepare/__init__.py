"""Prepare one of the paper's datasets from its official annotation files: ``python -m datasets.prepare``.

Usage::

    python -m datasets.prepare DATASET --annotations PATH --videos DIR [--out data/DATASET]
        [--labels FILE] [--root DIR] [--overwrite]

    python -m datasets.prepare folder --videos DIR --out OUT [--val-fraction 0.2] [--test-fraction 0.1] [--seed 0]

DATASET is ``kinetics400``, ``kinetics600``, ``ssv2``, ``diving48`` or ``activitynet``. The official
annotation files are read as distributed (``sources``), class names become ids through the published list
in ``labels/`` (so the ids match the released heads), every listed video is looked up under ``--videos``
(``videos``), and ``--out`` receives ``train.csv`` and ``val.csv`` (Diving-48: ``test.csv``, the V2 test
split the config evaluates on), ``missing_<split>.txt`` and ``manifest.json`` (``outputs``). Per split
it prints how many videos were listed, found and missing. Exit status 2, with one line saying what is
wrong and nothing written, for unknown class names, a split with no video found, a video stored twice or
in two splits, malformed annotation files, or an output folder holding other lists (``--overwrite``).

``folder`` makes a dataset of your own videos from a folder of class subfolders (``folder``: class ids
in sorted name order, ``labels.csv``, a stratified train/val/test split or the ``train/``, ``val/`` (and
``test/``) folders given).

``check_list(path)`` / ``describe_list(path)`` (``manifest``) describe an annotation file for the log of
``main.py`` and compare it with the manifest beside it.
"""
from .build import DATASETS, Prepared, PreparedSplit, prepare
from .manifest import ListCheck, check_list, describe_list, read_manifest
from .sources import PrepareError

__all__ = ['DATASETS', 'Prepared', 'PreparedSplit', 'prepare', 'ListCheck', 'check_list', 'describe_list',
           'read_manifest', 'PrepareError']
