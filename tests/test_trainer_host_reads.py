"""What a training update asks of the host: one read of the device per update (not per micro-batch), the same
numbers as before, the ETA line in words and the progress bar rules. In-process on the CPU with the tiny config."""
import io
import sys

import pytest
import torch

from utils import distributed as du
from utils.progress import ProgressBar

READS = ('item', 'cpu', 'tolist', '__float__')
TRAINER_STEP_FUNCTIONS = {'train_one_epoch', 'forward_backward', 'unscale_and_clip', 'optimizer_step'}


@pytest.fixture
def trainer(tiny_config):
    from engine.trainer import Trainer
    from models import build_model
    config = tiny_config.clone()
    config.defrost()
    config.TRAIN.ACCUMULATION_STEPS = 2
    config.DATA.BATCH_SIZE = 2
    config.PRINT_FREQ = 1
    config.freeze()
    torch.manual_seed(0)
    trainer = Trainer(config, du.DistInfo(), build_model(config))
    yield trainer
    trainer.preemption.uninstall()
    trainer.tb.close()


def test_one_host_read_per_update_not_per_micro_batch(trainer, monkeypatch):
    """Every ``.item()`` / ``.cpu()`` / ``.tolist()`` / ``float(tensor)`` made by the update's own code is
    counted (on a GPU each waits for the device); the loader and the per-epoch summary are not."""
    counts = {}
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename.endswith('trainer.py') and caller.co_name in TRAINER_STEP_FUNCTIONS:
                counts[(caller.co_name, _name)] = counts.get((caller.co_name, _name), 0) + 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counting)
    trainer.train_one_epoch(0, 0)
    updates = trainer.updates_per_epoch
    assert updates >= 2 and trainer.accum == 2
    assert counts == {('train_one_epoch', 'tolist'): updates}


def test_normalisation_constants_are_made_once_per_device():
    from datasets.transforms import _normalization_constants, normalize_clip
    clip = torch.randint(0, 256, (1, 2, 3, 4, 4), dtype=torch.uint8)
    first = _normalization_constants(clip.device)
    out = normalize_clip(clip)
    assert _normalization_constants(clip.device)[0] is first[0]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255
    torch.testing.assert_close(out, (clip.float() - mean) / std)


def test_eta_line_counts_validation_from_the_second_epoch(trainer):
    trainer.config.defrost()
    trainer.config.TRAIN.EPOCHS = 5
    trainer.config.freeze()
    upe = trainer.updates_per_epoch
    trainer._time_last_epoch(100.0)                      # epoch 0 starts
    # during epoch 0 the time after the updates is unknown: updates only
    assert trainer._remaining_seconds(0, 0, 2.0) == ((upe - 1) * 2.0, (upe - 1) * 2.0 + 4 * upe * 2.0)
    trainer._epoch_timing['train_seconds'] = 30.0         # epoch 0 trained for 30 s ...
    trainer._time_last_epoch(150.0)                      # ... and epoch 1 starts 50 s after it: 20 s validation
    epoch_eta, run_eta = trainer._remaining_seconds(1, upe - 1, 2.0)
    assert epoch_eta == 20.0                             # the last update of epoch 1: its validation is left
    assert run_eta == 20.0 + 3 * (upe * 2.0 + 20.0)


def test_log_line_says_epoch_eta_and_run_eta(trainer, caplog):
    import logging
    with caplog.at_level(logging.INFO, logger='engine.trainer'):
        trainer.train_one_epoch(0, 0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Train:')]
    assert lines and all('epoch ETA ' in line and 'run ETA ' in line for line in lines)
    assert ' eta ' not in lines[0]


def test_progress_bar_only_on_a_terminal(monkeypatch):
    class Stream(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty
    for out_tty, err_tty, drawn in ((True, True, True), (False, True, False), (True, False, False)):
        err = Stream(err_tty)
        monkeypatch.setattr(sys, 'stdout', Stream(out_tty))
        monkeypatch.setattr(sys, 'stderr', err)
        bar = ProgressBar(10, desc='train 0', initial=4, unit='clips', unit_scale=8, tty_only=True)
        bar.update()
        bar.clear()
        bar.close()
        assert bool(err.getvalue()) == drawn
        if drawn:
            assert 'train 0 [' in err.getvalue() and '5/10' in err.getvalue() and 'clips/s' in err.getvalue()
            assert '\r\033[K' in err.getvalue()       # cleared before a log line
    bar = ProgressBar(10, enabled=False)
    bar.update()
    assert bar.done == 1


def test_host_to_device_pins_and_copies_without_blocking(monkeypatch):
    """On a GPU the copy goes through pinned memory with non_blocking=True (a pageable copy waits for the GPU);
    on the CPU it is a plain ``to``. Mixup's NumPy draws use it."""
    from datasets.transforms import host_to_device
    calls = []

    class Pinned:
        def to(self, device, non_blocking=False):
            calls.append(('to', device, non_blocking))
            return 'copied'
    monkeypatch.setattr(torch.Tensor, 'pin_memory', lambda self: calls.append(('pin',)) or Pinned())
    assert host_to_device(torch.zeros(2), torch.device('cuda', 0)) == 'copied'
    assert calls == [('pin',), ('to', torch.device('cuda', 0), True)]
    calls.clear()
    out = host_to_device(torch.ones(2), torch.device('cpu'))
    assert calls == [] and out.device.type == 'cpu'
