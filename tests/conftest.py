"""Shared fixtures: the golden data (``tests/assets``), tiny videos, a tiny toy dataset and a tiny config on it.

Paths are made from this file's location, so the tests pass from any working directory. The end-to-end
helpers (subprocess runs of ``main.py``, tiny-model options) are in ``engine_helpers.py``.
"""
import os

import pytest
import torch

from engine_helpers import TOY_CFG, make_tiny_data, tiny_opts
from video_helpers import write_video_dir

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')


@pytest.fixture(scope='session')
def assets_dir() -> str:
    """``tests/assets``: reference vectors, released state-dict layouts, the original's yaml files."""
    return ASSETS


@pytest.fixture(scope='session')
def toy_data(tmp_path_factory) -> str:
    """A tiny toy dataset (16 training, 7 validation clips), made once per session; its root folder."""
    return make_tiny_data(str(tmp_path_factory.mktemp('toy') / 'data'))


@pytest.fixture
def tiny_config(toy_data, tmp_path):
    """The toy config with the tiny-model options of ``engine_helpers.tiny_opts`` on ``toy_data``."""
    from engine.config import load_config
    return load_config(TOY_CFG, tiny_opts(toy_data), output=str(tmp_path / 'out'))


@pytest.fixture(scope='module')
def video_dir(tmp_path_factory):
    """Seven tiny H.264/VP9 videos of 20-45 frames (3 classes), plus every kind of unreadable file
    (``video_helpers.write_video_dir``)."""
    return write_video_dir(tmp_path_factory.mktemp('videos'))


@pytest.fixture(scope='module')
def one_torch_thread():
    """One intra-op thread for a module of tiny-model tests: a second thread only adds synchronisation (and
    stalls when other processes occupy the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
