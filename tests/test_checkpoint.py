"""Checkpoint files: safe loading, strict weight loading, atomic saving, RNG round trip, auto-resume."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn
from yacs.config import CfgNode

from engine.checkpoint import (CheckpointError, UnsafeCheckpointError, capture_rng_state, extract_state_dict,
                               load_checkpoint_file, load_model_weights, restore_rng_state, save_checkpoint)
from engine.resume import find_auto_resume

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TinyNet(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        return self.head(self.norm(self.body(x)))


def _trained_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """One step, so the optimizer state holds tensors (moments / momentum buffers)."""
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    return optimizer


def _original_config() -> CfgNode:
    """A nested, frozen yacs config like the one the original pickled into every checkpoint."""
    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    cfg.MODEL.TYPE = 'videofocalnet_tiny'
    cfg.MODEL.FOCAL = CfgNode()
    cfg.MODEL.FOCAL.FOCAL_LEVELS = [2, 2, 2, 2]
    cfg.TRAIN = CfgNode()
    cfg.TRAIN.BASE_LR = 5e-4
    cfg.freeze()
    return cfg


def _original_checkpoint(model: nn.Module) -> dict:
    """The dict the original's save_checkpoint wrote (spec 4.7), apex amp state included."""
    optimizer = _trained_optimizer(model, torch.optim.AdamW(model.parameters(), lr=0.1))
    return {
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'lr_scheduler': {'t_initial': 100, 'lr_min': 1e-6, 'warmup_lr_init': 1e-6, 'base_values': [0.1],
                         'noise_range_t': None},
        'max_accuracy': 71.25,
        'epoch': 9,
        'config': _original_config(),
        'amp': {'loss_scaler0': {'loss_scale': 65536.0, 'unskipped': 120}},
    }


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_original_format_checkpoint_loads_without_executing_code(tmp_path, zip_format, monkeypatch):
    model = TinyNet()
    path = tmp_path / 'ckpt_epoch_9.pth'
    torch.save(_original_checkpoint(model), path, _use_new_zipfile_serialization=zip_format)
    # torch's own safe route refuses the pickled CfgNode: that is why the restricted unpickler exists
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **k: calls.append(k) or real_load(*a, **k))
    ckpt = load_checkpoint_file(path)
    monkeypatch.undo()
    # zip files are scanned first, so their tensors are read once, by the restricted route only
    assert [c['weights_only'] for c in calls] == ([False] if zip_format else [True, False])
    assert type(ckpt['config']) is dict and type(ckpt['config']['MODEL']['FOCAL']) is dict
    assert ckpt['config']['MODEL']['FOCAL']['FOCAL_LEVELS'] == [2, 2, 2, 2]
    assert ckpt['config']['TRAIN']['BASE_LR'] == 5e-4
    assert ckpt['epoch'] == 9 and ckpt['max_accuracy'] == 71.25
    assert ckpt['amp']['loss_scaler0']['loss_scale'] == 65536.0
    for key, value in model.state_dict().items():
        assert torch.equal(ckpt['model'][key], value)
    # and it evaluates: the weights go into a fresh model strictly
    fresh = TinyNet()
    load_model_weights(fresh, path)
    assert torch.equal(fresh.head.weight, model.head.weight)


class _Evil:
    """Unpickling this would run ``os.system('touch <marker>')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('where', ['top', 'in_config'])
def test_malicious_checkpoint_is_refused_and_not_executed(tmp_path, where):
    marker = tmp_path / 'PWNED'
    state = {'model': TinyNet().state_dict()}
    if where == 'top':
        state['payload'] = _Evil(marker)
    else:  # hidden inside an otherwise legitimate original-style config
        cfg = _original_config()
        dict.__setitem__(cfg.TRAIN, 'EXTRA', _Evil(marker))  # an attacker writes the pickle, not yacs
        state['config'] = cfg
    path = tmp_path / 'evil.pth'
    torch.save(state, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint_file(path)
    message = str(info.value)
    assert str(path) in message and "'posix.system'" in message and '\n' not in message
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        load_model_weights(TinyNet(), path)
    assert not marker.exists()


def test_refuses_arbitrary_classes(tmp_path):
    path = tmp_path / 'obj.pth'
    torch.save({'model': TinyNet().state_dict(), 'module': TinyNet()}, path)  # a pickled nn.Module
    with pytest.raises(UnsafeCheckpointError, match='test_checkpoint.TinyNet'):
        load_checkpoint_file(path)


def test_bare_state_dict_and_prefixes(tmp_path):
    model = TinyNet()
    path = tmp_path / 'bare.pth'
    # what DDP + torch.compile produce: module._orig_mod.<key>
    torch.save({f'module._orig_mod.{k}': v for k, v in model.state_dict().items()}, path)
    ckpt = load_checkpoint_file(path)
    assert list(ckpt) == ['model']
    fresh = TinyNet()
    load_model_weights(fresh, path)
    assert torch.equal(fresh.body.weight, model.body.weight)
    # 'state_dict' key (lightning / timm train script style)
    assert set(extract_state_dict({'state_dict': model.state_dict()})) == set(model.state_dict())


def test_wrapped_destination_model():
    model = TinyNet()
    compiled_like = nn.Module()
    compiled_like._orig_mod = TinyNet()  # what torch.compile's OptimizedModule exposes
    load_model_weights(compiled_like, {'model': model.state_dict()})
    assert torch.equal(compiled_like._orig_mod.head.bias, model.head.bias)


def test_numpy_scalar_in_original_checkpoint(tmp_path):
    path = tmp_path / 'np.pth'
    torch.save({'model': TinyNet().state_dict(), 'max_accuracy': np.float64(80.5), 'config': _original_config()},
               path)
    assert load_checkpoint_file(path)['max_accuracy'] == 80.5


@pytest.mark.parametrize('kind', ['missing', 'folder', 'empty', 'text', 'truncated', 'list'])
def test_unreadable_files_give_one_line_errors(tmp_path, kind):
    path = tmp_path / 'x.pth'
    if kind == 'folder':
        path = tmp_path
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'text':
        path.write_text('model: not a checkpoint\n')
    elif kind == 'truncated':
        torch.save(_original_checkpoint(TinyNet()), path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == 'list':
        torch.save([torch.zeros(2)], path)
    expected = FileNotFoundError if kind == 'missing' else CheckpointError
    with pytest.raises(expected) as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value) and '\n' not in str(info.value)


def test_safetensors_file(tmp_path):
    """timm publishes weights as .safetensors: read without the safetensors package."""
    import json
    tensors = {'a.weight': torch.randn(3, 2), 'b.bias': torch.arange(4, dtype=torch.int64),
               'c': torch.randn(2).to(torch.bfloat16)}
    names = {torch.float32: 'F32', torch.int64: 'I64', torch.bfloat16: 'BF16'}
    header, blobs, offset = {'__metadata__': {'format': 'pt'}}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes()
        header[name] = {'dtype': names[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path = tmp_path / 'model.safetensors'
    path.write_bytes(len(head).to_bytes(8, 'little') + head + b''.join(blobs))
    ckpt = load_checkpoint_file(path)
    for name, t in tensors.items():
        assert torch.equal(ckpt['model'][name], t)


# ---------------------------------------------------------------------------------------------------------
# strict weight loading
# ---------------------------------------------------------------------------------------------------------
def test_strict_loading_lists_problems_and_leaves_model_untouched():
    source = TinyNet(classes=7).state_dict()
    source['extra.weight'] = torch.zeros(1)
    del source['norm.bias']
    model = TinyNet(classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_model_weights(model, {'model': source})
    message = str(info.value)
    assert '1 missing (norm.bias)' in message
    assert '1 unexpected (extra.weight)' in message
    assert 'head.weight: checkpoint [7, 6] vs model [5, 6]' in message and '2 with other shapes' in message
    assert '\n' not in message
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f'{key} changed by a failed strict load'


def test_head_only_mismatch_points_to_pretrained_and_never_slices():
    model = TinyNet(classes=5)
    with pytest.raises(CheckpointError, match='TRAIN.PRETRAINED_PATH'):
        load_model_weights(model, {'model': TinyNet(classes=1000).state_dict()})


def test_non_strict_loads_matching_tensors_only():
    source = TinyNet(classes=7)
    model = TinyNet(classes=5)
    head_before = model.head.weight.clone()
    load_model_weights(model, {'model': source.state_dict()}, strict=False)
    assert torch.equal(model.body.weight, source.body.weight)
    assert torch.equal(model.head.weight, head_before)


def test_ema_weights_by_state_key():
    ema = TinyNet()
    ckpt = {'model': TinyNet().state_dict(), 'ema': {'model': ema.state_dict(), 'decay': 0.999, 'num_updates': 3}}
    model = TinyNet()
    load_model_weights(model, ckpt, state_key='ema')
    assert torch.equal(model.body.weight, ema.body.weight)


# ---------------------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------------------
def _our_state(model: nn.Module, epoch: int) -> dict:
    optimizer = _trained_optimizer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    return {
        'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'lr_scheduler': {'step': 10},
        'scaler': {'scale': 65536.0, 'growth_factor': 2.0, '_growth_tracker': 0}, 'ema': None,
        'epoch': epoch, 'step': 10 * (epoch + 1), 'max_accuracy': 55.5,
        'config': 'MODEL:\n  TYPE: videofocalnet_tiny\n', 'rng': capture_rng_state(),
    }


def test_saved_checkpoint_loads_with_weights_only(tmp_path):
    model = TinyNet()
    path = tmp_path / 'sub' / 'last.pth'
    save_checkpoint(path, _our_state(model, epoch=3))
    raw = torch.load(path, map_location='cpu', weights_only=True)  # plain types only
    assert raw['epoch'] == 3 and isinstance(raw['config'], str)
    assert torch.equal(raw['model']['head.weight'], model.head.weight)
    assert raw['optimizer']['state'][0]['momentum_buffer'].shape == model.body.weight.shape
    assert os.listdir(path.parent) == ['last.pth']
    assert load_checkpoint_file(path)['step'] == 40


@pytest.mark.parametrize('bad', ['numpy_array', 'cfgnode', 'numpy_float'])
def test_save_refuses_what_weights_only_cannot_read(tmp_path, bad):
    value = {'numpy_array': np.zeros(3), 'cfgnode': _original_config(), 'numpy_float': np.float64(1.0)}[bad]
    with pytest.raises(CheckpointError, match=r"state\['extra'\]"):
        save_checkpoint(tmp_path / 'last.pth', {'model': {}, 'extra': value})
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'last.pth'
    model = TinyNet()
    save_checkpoint(path, _our_state(model, epoch=1))
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        import io
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[:buffer.tell() // 2])
        raise OSError('disk full (simulated)')

    monkeypatch.setattr(torch, 'save', half_then_fail)
    with pytest.raises(OSError, match='simulated'):
        save_checkpoint(path, _our_state(TinyNet(), epoch=2))
    monkeypatch.setattr(torch, 'save', real_save)
    assert os.listdir(tmp_path) == ['last.pth']
    ckpt = load_checkpoint_file(path)
    assert ckpt['epoch'] == 1 and torch.equal(ckpt['model']['body.weight'], model.body.weight)


_KILLED_WRITER = textwrap.dedent('''
    import io, os, sys, time, torch
    sys.path.insert(0, {root!r})
    from engine.checkpoint import save_checkpoint
    real_save = torch.save
    def slow_save(obj, f, *a, **k):
        buffer = io.BytesIO(); real_save(obj, buffer)
        f.write(buffer.getvalue()[:buffer.tell() // 2]); f.flush()
        open({ready!r}, 'w').close()
        time.sleep(60)
    torch.save = slow_save
    save_checkpoint({path!r}, {{'model': {{'w': torch.zeros(1000)}}, 'epoch': 2}})
''')


def test_killed_write_keeps_previous_file_and_next_save_cleans_up(tmp_path):
    path, ready = tmp_path / 'last.pth', tmp_path.parent / f'{tmp_path.name}.ready'
    save_checkpoint(path, {'model': {'w': torch.ones(1000)}, 'epoch': 1})
    script = _KILLED_WRITER.format(root=REPO_ROOT, ready=str(ready), path=str(path))
    proc = subprocess.Popen([sys.executable, '-c', script], env={**os.environ, 'OMP_NUM_THREADS': '1'})
    try:
        deadline = time.time() + 60
        while not ready.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert ready.exists(), 'the writer never reached the middle of its write'
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    leftovers = [n for n in os.listdir(tmp_path) if n != 'last.pth']
    assert len(leftovers) == 1 and leftovers[0].endswith('.tmp')  # a SIGKILL leaves its half-written temp
    ckpt = load_checkpoint_file(path)
    assert ckpt['epoch'] == 1 and torch.equal(ckpt['model']['w'], torch.ones(1000))
    assert find_auto_resume(tmp_path) == str(path)
    save_checkpoint(path, {'model': {'w': torch.full((1000,), 3.0)}, 'epoch': 3})
    assert os.listdir(tmp_path) == ['last.pth']  # the dead writer's temp file is gone
    assert load_checkpoint_file(path)['epoch'] == 3


# ---------------------------------------------------------------------------------------------------------
# RNG state
# ---------------------------------------------------------------------------------------------------------
def _draws():
    return (random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()),
            torch.rand(3).tolist(), torch.randn(2).tolist())


def test_rng_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    random.gauss(0, 1)
    state = capture_rng_state()
    expected = _draws()
    save_checkpoint(tmp_path / 'rng.pth', {'rng': state})
    _draws()
    _draws()
    restore_rng_state(torch.load(tmp_path / 'rng.pth', weights_only=True)['rng'])
    assert _draws() == expected


def test_restore_rng_rejects_garbage():
    with pytest.raises(CheckpointError, match='RNG state'):
        restore_rng_state([1, 2, 3])


# ---------------------------------------------------------------------------------------------------------
# auto-resume
# ---------------------------------------------------------------------------------------------------------
def test_find_auto_resume(tmp_path, caplog):
    assert find_auto_resume(tmp_path / 'absent') is None
    assert find_auto_resume(tmp_path) is None
    for epoch in (2, 10, 9):
        save_checkpoint(tmp_path / f'ckpt_epoch_{epoch}.pth', {'model': {'w': torch.zeros(1)}, 'epoch': epoch})
    # no last.pth (e.g. written by an older run): the highest epoch by number, not by name
    assert find_auto_resume(tmp_path) == str(tmp_path / 'ckpt_epoch_10.pth')
    save_checkpoint(tmp_path / 'last.pth', {'model': {'w': torch.zeros(1)}, 'epoch': 11})
    assert find_auto_resume(tmp_path) == str(tmp_path / 'last.pth')

    data = (tmp_path / 'last.pth').read_bytes()
    (tmp_path / 'last.pth').write_bytes(data[:len(data) // 3])
    (tmp_path / 'ckpt_epoch_10.pth').write_bytes(b'garbage')
    with caplog.at_level('WARNING', logger='engine.resume'):
        assert find_auto_resume(tmp_path) == str(tmp_path / 'ckpt_epoch_9.pth')
    log = caplog.text
    assert 'last.pth' in log and 'ckpt_epoch_10.pth' in log and 'falling back to' in log


# ---------------------------------------------------------------------------------------------------------
# the epoch commit: disk full, metrics.jsonl, completing an interrupted save, best.pth, start decisions
# ---------------------------------------------------------------------------------------------------------
def test_disk_full_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno
    from engine.checkpoint.saving import DiskFullError
    path = tmp_path / 'last.pth'
    save_checkpoint(path, {'model': {'w': torch.ones(1000)}, 'epoch': 1})

    def no_space(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 partial')
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', no_space)
    with pytest.raises(DiskFullError) as info:
        save_checkpoint(path, {'model': {'w': torch.zeros(2**20)}, 'epoch': 2})
    monkeypatch.undo()
    message = str(info.value)
    assert message.startswith(f'{tmp_path}: no space left') and '\n' not in message
    assert '5.0 MB needed' in message and ' free)' in message  # 4 MiB of tensors + the margin
    assert os.listdir(tmp_path) == ['last.pth'] and load_checkpoint_file(path)['epoch'] == 1


def _statvfs(free_bytes, free_inodes):
    """An ``os.statvfs`` result with ``free_bytes`` / ``free_inodes`` available (4 KiB blocks)."""
    return os.statvfs_result((4096, 4096, 10**6, free_bytes // 4096, free_bytes // 4096, 10**6, free_inodes,
                              free_inodes, 0, 255))


@pytest.mark.parametrize('case', ['short_write', 'no_inodes'])
def test_disk_full_as_torch_reports_it_and_without_inodes(tmp_path, monkeypatch, case):
    """torch.save reports a full disk as RuntimeError "unexpected pos" (the errno is lost), and a disk without free
    inodes fails at the creation of the temporary file with bytes to spare: both one line that says which, the
    previous file intact, no temporary left, and never "about 0.0 MB needed"."""
    import errno
    from engine.checkpoint.saving import DiskFullError, write_metrics
    path = tmp_path / 'last.pth'
    save_checkpoint(path, {'model': {'w': torch.ones(1000)}, 'epoch': 1})
    before = path.read_bytes()
    if case == 'short_write':
        def short_write(obj, f, *args, **kwargs):
            f.write(b'PK\x03\x04 partial')
            raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662')
        monkeypatch.setattr(torch, 'save', short_write)
        monkeypatch.setattr(os, 'statvfs', lambda folder: _statvfs(64 * 1024, 100))
        with pytest.raises(DiskFullError) as info:
            save_checkpoint(path, {'model': {'w': torch.zeros(2**20)}, 'epoch': 2})
        message = str(info.value)
        assert message.startswith(f'{tmp_path}: no space left on the device (about 5.0 MB needed, 64.0 KB free)')
    else:
        real_open = os.open

        def no_inode(name, flags, *args):
            if flags & os.O_CREAT:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
            return real_open(name, flags, *args)
        monkeypatch.setattr(os, 'open', no_inode)
        monkeypatch.setattr(os, 'statvfs', lambda folder: _statvfs(2**30, 0))
        with pytest.raises(DiskFullError) as info:
            write_metrics(str(tmp_path), [{'epoch': 0}])
        message = str(info.value)
        assert message.startswith(f'{tmp_path}: no free inodes left on the device') and '1.0 GB is free' in message
        assert 'needed' not in message
    monkeypatch.undo()
    assert '\n' not in message and 'intact' in message
    assert os.listdir(tmp_path) == ['last.pth'] and path.read_bytes() == before


def test_disk_full_on_a_real_small_file_system(tmp_path):
    """The same on a 64 KiB tmpfs with 8 inodes (needs root; skipped elsewhere): torch's own error and the
    kernel's ENOSPC, not simulated ones."""
    import subprocess
    from engine.checkpoint.saving import DiskFullError, write_metrics
    mount = tmp_path / 'small'
    mount.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k,nr_inodes=8', 'tmpfs', str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip('cannot mount a tmpfs here (not root)')
    try:
        save_checkpoint(mount / 'last.pth', {'model': {'w': torch.ones(10)}, 'epoch': 1})
        with pytest.raises(DiskFullError, match=r'no space left on the device \(about 1\.4 MB needed, '):
            save_checkpoint(mount / 'last.pth', {'model': {'w': torch.zeros(100000)}, 'epoch': 2})
        assert load_checkpoint_file(mount / 'last.pth')['epoch'] == 1 and os.listdir(mount) == ['last.pth']
        for i in range(10):  # use up the inodes
            try:
                (mount / f'f{i}').touch()
            except OSError:
                break
        with pytest.raises(DiskFullError, match='no free inodes left on the device') as info:
            write_metrics(str(mount), [{'epoch': 1}])
        assert 'needed' not in str(info.value)
    finally:
        subprocess.run(['umount', str(mount)], check=True)


def test_read_jsonl_skips_a_torn_last_line_with_a_warning(tmp_path, caplog):
    from utils.jsonl import read_jsonl
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"epoch": 0, "val_acc1": 50.0}\n{"epoch": 1, "val_ac')
    with caplog.at_level('WARNING'):
        assert read_jsonl(str(path)) == [{'epoch': 0, 'val_acc1': 50.0}]
    assert 'metrics.jsonl:2: skipping a torn last line' in caplog.text
    path.write_text('{"epoch": 0}\n{"epo\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match=r'metrics.jsonl:2: '):
        read_jsonl(str(path))  # damage in the middle is not a torn write: an error
    assert read_jsonl(str(tmp_path / 'absent.jsonl')) == []


def _epoch_state(epoch, acc, is_best, epoch_step=0, fill=None):
    record = {'epoch': epoch, 'train_loss': 1.0, 'val_acc1': acc, 'max_accuracy': acc}
    return {'model': {'w': torch.full((3,), float(epoch if fill is None else fill))}, 'epoch': epoch,
            'epoch_step': epoch_step, 'max_accuracy': acc, 'epoch_record': record, 'is_best': is_best}


def test_complete_epoch_files_finishes_a_save_killed_after_the_commit(tmp_path, caplog):
    from engine.checkpoint import write_checkpoint
    from engine.checkpoint.saving import complete_epoch_files, read_metrics, write_metrics
    out = str(tmp_path)
    write_checkpoint(out, ['last.pth', 'ckpt_epoch_0.pth', 'best.pth'], _epoch_state(0, 40.0, True))
    write_metrics(out, [_epoch_state(0, 40.0, True)['epoch_record']])
    # epoch 1 committed (last.pth), killed before ckpt_epoch_1, best.pth and its metrics line; a torn line of
    # a later epoch (an older writer) is in the file
    state = _epoch_state(1, 60.0, True)
    write_checkpoint(out, ['last.pth'], state)
    with open(tmp_path / 'metrics.jsonl', 'a') as f:
        f.write('{"epoch": 2, "tra')
    with caplog.at_level('WARNING'):
        redone = complete_epoch_files(out, os.path.join(out, 'last.pth'), state, total_epochs=5, save_freq=1)
    assert redone == ['metrics.jsonl line of epoch 1', 'ckpt_epoch_1.pth', 'best.pth']
    assert 'torn last line' in caplog.text
    assert [r['epoch'] for r in read_metrics(out)] == [0, 1]
    assert load_checkpoint_file(tmp_path / 'best.pth')['epoch'] == 1
    assert load_checkpoint_file(tmp_path / 'ckpt_epoch_1.pth')['epoch'] == 1
    assert complete_epoch_files(out, os.path.join(out, 'last.pth'), state, 5, 1) == []  # idempotent


def test_complete_epoch_files_never_replaces_a_better_best(tmp_path):
    """A fallback to an older checkpoint that was best in its time: best.pth holds a higher accuracy since."""
    from engine.checkpoint import write_checkpoint
    from engine.checkpoint.saving import complete_epoch_files, read_metrics, write_metrics
    out = str(tmp_path)
    write_checkpoint(out, ['best.pth'], _epoch_state(3, 80.0, True))
    write_metrics(out, [{'epoch': e} for e in range(5)])
    older = _epoch_state(1, 60.0, True)
    write_checkpoint(out, ['last.pth'], older)
    assert complete_epoch_files(out, os.path.join(out, 'last.pth'), older, 5, 1) == \
        ['3 metrics.jsonl line(s) of epochs after 1 dropped', 'ckpt_epoch_1.pth']
    assert load_checkpoint_file(tmp_path / 'best.pth')['epoch'] == 3
    assert [r['epoch'] for r in read_metrics(out)] == [0, 1]
    # a mid-epoch checkpoint publishes nothing: its weights are not those of an epoch end
    mid = _epoch_state(1, 60.0, True, epoch_step=2)
    os.remove(tmp_path / 'ckpt_epoch_1.pth')
    write_checkpoint(out, ['last.pth'], mid)
    assert complete_epoch_files(out, os.path.join(out, 'last.pth'), mid, 5, 1) == []
    assert not (tmp_path / 'ckpt_epoch_1.pth').exists()


def test_resume_position_maps_clips_consumed(caplog):
    from engine.resume import resume_position
    ckpt = {'epoch_step': 3, 'world_size': 2, 'batch_size': 4, 'accumulation_steps': 2}  # 3 x 16 = 48 clips
    same = dict(world_size=2, batch_size=4, accumulation_steps=2, updates_per_epoch=10)
    assert resume_position(ckpt, **same) == 3
    assert resume_position(ckpt, world_size=1, batch_size=4, accumulation_steps=2, updates_per_epoch=20) == 6
    assert resume_position(ckpt, world_size=4, batch_size=4, accumulation_steps=1, updates_per_epoch=10) == 3
    with caplog.at_level('WARNING', logger='engine.resume'):
        assert resume_position(ckpt, world_size=4, batch_size=4, accumulation_steps=2, updates_per_epoch=5) == 1
    assert '16 clips are trained on twice' in caplog.text  # 48 = 1 x 32 + 16
    assert resume_position(ckpt, world_size=8, batch_size=4, accumulation_steps=1, updates_per_epoch=1) == 1
    assert resume_position({'epoch_step': 3}, **same) == 3  # older checkpoints: as saved
    assert resume_position(dict(ckpt, epoch_step=0), world_size=1, batch_size=1, accumulation_steps=1,
                           updates_per_epoch=5) == 0


def test_decide_start(tmp_path):
    from engine.config import load_config
    from engine.resume import decide_start, move_aside
    toy = os.path.join(REPO_ROOT, 'configs', 'toy', 'video-focalnet_toy.yaml')
    cfg = load_config(toy, ['OUTPUT', str(tmp_path), 'TAG', 'r'])
    assert decide_start(cfg)['path'] == '' and decide_start(cfg)['error'] == ''  # an empty folder: start
    os.makedirs(cfg.OUTPUT)
    save_checkpoint(os.path.join(cfg.OUTPUT, 'best.pth'), _epoch_state(4, 71.5, True))
    refused = decide_start(cfg)['error']
    assert 'best.pth (best.pth: epoch 4, top-1 71.50%)' in refused and 'TRAIN.ALLOW_START_OVER' in refused
    assert '\n' not in refused
    allowed = decide_start(load_config(toy, ['OUTPUT', str(tmp_path), 'TAG', 'r', 'TRAIN.ALLOW_START_OVER', 'True']))
    assert allowed['error'] == '' and allowed['move_aside'] == ['best.pth'] and allowed['best']['accuracy'] is None
    folder = move_aside(cfg.OUTPUT, allowed['move_aside'])
    assert os.listdir(folder) == ['best.pth'] and not os.path.exists(os.path.join(cfg.OUTPUT, 'best.pth'))
    save_checkpoint(os.path.join(cfg.OUTPUT, 'best.pth'), _epoch_state(4, 71.5, True))
    save_checkpoint(os.path.join(cfg.OUTPUT, 'last.pth'), _epoch_state(6, 70.0, False))
    resumed = decide_start(cfg)
    assert resumed['name'] == 'last.pth' and resumed['best']['accuracy'] == 71.5 and resumed['best']['epoch'] == 4


def test_start_over_moves_everything_the_earlier_run_wrote(tmp_path):
    """TRAIN.ALLOW_START_OVER: the final test's eval_results.json / predictions.csv, eval/ and tensorboard/ of the
    earlier run go aside with its checkpoints (the new run would write over them); run.lock and the folders of
    earlier start-overs stay."""
    from engine.config import load_config
    from engine.resume import decide_start, move_aside
    toy = os.path.join(REPO_ROOT, 'configs', 'toy', 'video-focalnet_toy.yaml')
    cfg = load_config(toy, ['OUTPUT', str(tmp_path), 'TAG', 'r', 'TRAIN.ALLOW_START_OVER', 'True'])
    os.makedirs(os.path.join(cfg.OUTPUT, 'eval', 'best_4x3'))
    os.makedirs(os.path.join(cfg.OUTPUT, 'tensorboard'))
    os.makedirs(os.path.join(cfg.OUTPUT, 'previous-20260101-000000'))
    save_checkpoint(os.path.join(cfg.OUTPUT, 'best.pth'), _epoch_state(4, 71.5, True))
    written = ['config.yaml', 'environment.json', 'eval_results.json', 'log_rank0.txt', 'metrics.jsonl',
               'predictions.csv', 'run.lock', 'eval/best_4x3/eval_results.json', 'tensorboard/events.out.tfevents.1']
    for name in written:
        with open(os.path.join(cfg.OUTPUT, name), 'w') as f:
            f.write(f'old run: {name}\n')
    moved = decide_start(cfg)['move_aside']
    assert moved == ['best.pth', 'config.yaml', 'environment.json', 'eval', 'eval_results.json', 'log_rank0.txt',
                     'metrics.jsonl', 'predictions.csv', 'tensorboard']
    folder = move_aside(cfg.OUTPUT, moved)
    assert sorted(os.listdir(cfg.OUTPUT)) == sorted(['previous-20260101-000000', os.path.basename(folder), 'run.lock'])
    for name in [n for n in written if n != 'run.lock']:
        assert open(os.path.join(folder, name)).read() == f'old run: {name}\n'


def test_resume_state_problem_names_the_entry():
    """The checks auto-resume and --resume run on a checkpoint's resume entries: a valid one passes, each damage
    is named by its entry (a crafted mixup state cannot make the check call anything but a bit generator)."""
    from engine.meters import AverageMeter
    from engine.resume import ResumeTarget, resume_state_problem
    meter = AverageMeter()
    meter.update(2.5)
    sums = {'loss': meter.state_dict(), 'grad_norm': meter.state_dict(), 'step_time': meter.state_dict(),
            'data_time': meter.state_dict(), 'unreadable': [0.0, 4.0]}
    good = {'epoch': 0, 'epoch_step': 1, 'rng': capture_rng_state(), 'epoch_meters': [sums],
            'mixup': {'bit_generator': np.random.PCG64().state}, 'world_size': 1, 'batch_size': 4,
            'accumulation_steps': 1}
    target = ResumeTarget(epochs=3, updates_per_epoch=4, world_size=1, batch_size=4, accumulation_steps=1)
    assert resume_state_problem(good, target) is None
    # 2 updates of 4 clips are 8 clips: more than an epoch of 4 updates of 1 clip
    smaller = ResumeTarget(epochs=3, updates_per_epoch=4, world_size=1, batch_size=1, accumulation_steps=1)
    assert resume_state_problem(dict(good, epoch_step=2), smaller).startswith('epoch_step 2: more than the 4')
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    seeded = dict(good, mixup={'bit_generator': {'bit_generator': 'seed', 'state': 1}})
    assert "mixup: not a numpy generator state (unknown bit generator 'seed')" in resume_state_problem(seeded, target)
    assert np.random.rand() == expected  # np.random.seed was not called
    damaged = {
        'epoch_meters': [dict(sums, loss={'val': 1.0, 'sum': float('nan'), 'count': 1})],
        'rng': dict(good['rng'], cuda='x'),
        'max_accuracy': float('inf'),
    }
    named = {'epoch_meters': 'epoch_meters[0] loss: ', 'rng': "rng 'cuda'", 'max_accuracy': 'max_accuracy inf'}
    for key, value in damaged.items():
        assert named[key] in resume_state_problem(dict(good, **{key: value}), target), key
