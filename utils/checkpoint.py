"""Checkpoints: safe loading, strict weight loading, ImageNet initialisation, atomic saving, RNG state, auto-resume.

Differences from the original (``utils.py`` ``load_checkpoint`` / ``save_checkpoint``, spec 4.7, 5, 7.13, 7.25):

* Loading never executes pickled code. ``torch.load(weights_only=True)`` is tried first; the original's files
  pickle a yacs ``CfgNode`` (and maybe apex ``amp`` state), which ``weights_only`` refuses even when
  allow-listed, so a second route unpickles with a restricted unpickler that admits only tensor rebuilds,
  storages, dtypes, plain containers and the config node (read back as a plain ``dict``). Anything else is
  refused with an error naming the file and the global, before it is imported.
* Weights load strictly: missing, unexpected and differently-shaped keys are listed in one error and the model
  is left untouched. The original used ``strict=False`` and silently swapped a mismatched head for the model's
  own rows ``[:1000]``; to fine-tune on other classes use ``TRAIN.PRETRAINED_PATH`` (:func:`load_pretrained`).
* Checkpoints are written atomically (temporary file in the same folder, fsync, rename, fsync of the folder),
  hold only plain types (they load with ``weights_only=True``: the config is YAML text, RNG states are
  tensors and lists), and carry the RNG states needed for an exact resume.
* Auto-resume looks for ``OUTPUT/last.pth`` (then the newest loadable ``ckpt_epoch_N.pth``) instead of
  "the most recently modified file ending in pth".
"""
from __future__ import annotations

import _codecs
import _compat_pickle
import collections
import functools
import json
import logging
import os
import pickle
import random
import re
import secrets
import types
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch

from models.pretrained import (HEAD_KEYS, PretrainedMismatchError, map_pretrained_state_dict,
                              redraw_head_)

__all__ = [
    'CheckpointError', 'UnsafeCheckpointError', 'PretrainedMismatchError', 'load_checkpoint_file',
    'extract_state_dict', 'unwrap_model', 'load_model_weights', 'load_pretrained', 'save_checkpoint',
    'capture_rng_state', 'restore_rng_state', 'find_auto_resume',
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
# Prefixes added by DistributedDataParallel / DataParallel and by torch.compile's OptimizedModule.
_WRAPPER_PREFIXES = ('module.', '_orig_mod.')
# Number of offending keys quoted per category in an error message (the counts are always given).
_MAX_QUOTED = 4


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read, or its content does not fit what is asked of it."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint's pickle asks for a global that is not on the allow-list (nothing was executed)."""


# ------------------------------------------------------------------------------------------------------------
# Safe loading
# ------------------------------------------------------------------------------------------------------------
class _PickledConfigNode(dict):
    """Stand-in for a pickled ``yacs.config.CfgNode``: its items are kept, its internal flags dropped."""

    def __setstate__(self, state: Any) -> None:
        # yacs keeps only bookkeeping in __dict__ (frozen flag, deprecated / renamed keys, new_allowed).
        pass


class _PickledNamespace(dict):
    """Stand-in for a pickled ``argparse.Namespace`` (e.g. timm's ``args``): its attributes become items."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


_MAPPING_STAND_INS = {
    ('yacs.config', 'CfgNode'): _PickledConfigNode,
    ('argparse', 'Namespace'): _PickledNamespace,
}


@functools.lru_cache(maxsize=1)
def _allowed_globals() -> Dict[tuple, Any]:
    """Globals a checkpoint may reference: what tensors, storages and plain containers need, nothing callable
    beyond torch's own tensor-rebuild functions (the same set ``torch.load(weights_only=True)`` admits)."""
    allowed: Dict[tuple, Any] = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('builtins', 'set'): set,
        ('builtins', 'frozenset'): frozenset,
        ('builtins', 'bytearray'): bytearray,
        ('builtins', 'complex'): complex,
        ('_codecs', 'encode'): _codecs.encode,  # how protocol 2 pickles bytes
        ('torch', 'Tensor'): torch.Tensor,
        ('torch', 'Size'): torch.Size,
        ('torch', 'device'): torch.device,
        ('torch.nn.parameter', 'Parameter'): torch.nn.Parameter,
        ('torch.storage', 'TypedStorage'): torch.storage.TypedStorage,
        ('torch.storage', 'UntypedStorage'): torch.storage.UntypedStorage,
        ('torch.serialization', '_get_layout'): torch.serialization._get_layout,
        ('torch._tensor', '_rebuild_from_type_v2'): torch._tensor._rebuild_from_type_v2,
    }
    for name in ('_rebuild_tensor', '_rebuild_tensor_v2', '_rebuild_tensor_v3', '_rebuild_parameter',
                 '_rebuild_parameter_with_state', '_rebuild_device_tensor_from_cpu_tensor'):
        if hasattr(torch._utils, name):
            allowed[('torch._utils', name)] = getattr(torch._utils, name)
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            allowed[('torch', name)] = value
    # numpy scalars (e.g. an accuracy stored as numpy.float64): rebuilt from a dtype and raw bytes.
    allowed[('numpy', 'dtype')] = np.dtype
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed[(module, 'scalar')] = np._core.multiarray.scalar if hasattr(np, '_core') \
            else np.core.multiarray.scalar
    for name in dir(getattr(np, 'dtypes', None) or ()):
        if name.endswith('DType'):
            allowed[('numpy.dtypes', name)] = getattr(np.dtypes, name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` admits only the allow-list above; everything else raises before import."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles written by Python 2-era code use old module names ('__builtin__', 'copy_reg').
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        allowed = _allowed_globals()
        if key in allowed:
            return allowed[key]
        if key in _MAPPING_STAND_INS:
            return _MAPPING_STAND_INS[key]
        raise UnsafeCheckpointError(
                f"the pickle asks for the global '{module}.{name}', which is not a tensor, container or "
                f"config node")


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) needs a module-like object with an Unpickler class and a load function.
_restricted_pickle = types.ModuleType('restricted_pickle')
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = _restricted_load
_restricted_pickle.__doc__ = 'pickle replacement that only admits tensors, containers and config nodes'


def _plain_mappings(obj: Any) -> Any:
    """Turn the config stand-ins (dict subclasses) into plain dicts, recursing through containers."""
    if isinstance(obj, (_PickledConfigNode, _PickledNamespace)):
        return {k: _plain_mappings(v) for k, v in obj.items()}
    if type(obj) is dict:
        return {k: _plain_mappings(v) for k, v in obj.items()}
    if type(obj) is collections.OrderedDict:
        return collections.OrderedDict((k, _plain_mappings(v)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_plain_mappings(v) for v in obj)
    return obj


def _reason(error: BaseException) -> str:
    """Short one-line description of a loading error: its type and first sentence."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ''
    if len(text) > 120 and '. ' in text:
        text = text[:text.index('. ')]
    return f'{type(error).__name__}: {text[:200]}' if text else type(error).__name__


def _unreadable(path: str, error: BaseException) -> CheckpointError:
    return CheckpointError(f'{path}: not a readable PyTorch checkpoint (truncated, corrupt or another format; '
                           f'{_reason(error)})')


_SAFETENSORS_DTYPES = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8,
    'BOOL': torch.bool,
}


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file (the format timm weights are published in) without the safetensors package.

    Layout: 8-byte little-endian header length, JSON header ``{name: {dtype, shape, data_offsets}}``, raw data.
    """
    with open(path, 'rb') as f:
        data = f.read()
    header_len = int.from_bytes(data[:8], 'little')
    try:
        header = json.loads(data[8:8 + header_len])
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f'{path}: unreadable safetensors header ({_reason(e)})') from None
    body = memoryview(data)[8 + header_len:]
    tensors: Dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        dtype = _SAFETENSORS_DTYPES.get(info.get('dtype'))
        if dtype is None:
            raise CheckpointError(f"{path}: tensor '{name}' has unsupported safetensors dtype {info.get('dtype')!r}")
        start, end = info['data_offsets']
        if end > len(body):
            raise CheckpointError(f"{path}: truncated safetensors file (tensor '{name}' ends past the data)")
        raw = torch.frombuffer(bytearray(body[start:end]), dtype=torch.uint8) if end > start \
            else torch.empty(0, dtype=torch.uint8)
        tensors[name] = raw.view(dtype).reshape(info['shape'])
    return tensors


def _is_safetensors(path: str) -> bool:
    with open(path, 'rb') as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') < os.path.getsize(path)


def _is_torchscript_archive(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith('constants.pkl') for n in archive.namelist())


def _has_globals_outside_weights_only(path: str) -> bool:
    """True when a zip checkpoint's pickle names globals ``weights_only`` refuses (e.g. the original's yacs
    config); scanned without loading any tensor, so such files are not read twice. False when unsure."""
    try:
        return bool(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy format, TorchScript, corrupt: let torch.load report it
        return False


def _torch_load(path: str, map_location: Any, mmap: bool) -> Any:
    """``torch.load`` with ``weights_only=True``, then, when that refuses, with the restricted unpickler."""
    if not _has_globals_outside_weights_only(path):
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            pass  # either a global outside torch's allow-list (legacy format) or not a pickle at all
        except Exception as e:  # truncated zip, wrong magic number, TorchScript archive, ...
            raise _unreadable(path, e) from None
    if _is_torchscript_archive(path):
        raise CheckpointError(f'{path}: is a TorchScript archive, not a checkpoint (load it with torch.jit.load)')
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap,
                         pickle_module=_restricted_pickle)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(
            f'{path}: refused to load: {e}; the file may be malicious (nothing in it was executed)') from None
    except Exception as e:
        raise _unreadable(path, e) from None
    return _plain_mappings(obj)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def load_checkpoint_file(path: PathLike, map_location: Any = 'cpu', mmap: bool = False) -> Dict[str, Any]:
    """Load a checkpoint without ever executing pickled code.

    Reads this project's checkpoints, the original's (with their pickled yacs config, returned as a plain
    ``dict`` under ``'config'``), bare state dicts (returned as ``{'model': state_dict}``), timm / microsoft
    FocalNet files and ``.safetensors`` files.

    Args:
        path: checkpoint file.
        map_location: passed to ``torch.load`` (default: CPU).
        mmap: memory-map tensor data instead of reading it (zip-format files only; used to check a file cheaply).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle references a global outside the allow-list (e.g. ``os.system``).
        CheckpointError: truncated, corrupt, or not a checkpoint (not a dict).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if os.path.isdir(path):
        raise CheckpointError(f'{path}: is a folder, expected a checkpoint file')
    if os.path.getsize(path) == 0:
        raise CheckpointError(f'{path}: empty file, not a checkpoint')
    obj = _read_safetensors(path) if _is_safetensors(path) else _torch_load(path, map_location, mmap)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{path}: expected a checkpoint dict or a state dict, found {type(obj).__name__}')
    if 'model' not in obj and _is_state_dict(obj):
        return {'model': obj}
    return obj if type(obj) is dict else dict(obj)


# ------------------------------------------------------------------------------------------------------------
# Loading weights into a model
# ------------------------------------------------------------------------------------------------------------
def _strip_wrapper_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def extract_state_dict(checkpoint: Mapping[str, Any], key: str = 'model',
                       source: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """Return the state dict stored under ``key`` (``'state_dict'`` is accepted for ``'model'``; an entry
    that holds its weights under ``'model'``, like the EMA's, is unwrapped), with the ``module.`` (DDP) and
    ``_orig_mod.`` (torch.compile) prefixes removed."""
    if key in checkpoint:
        state = checkpoint[key]
    elif key == 'model' and 'state_dict' in checkpoint:
        state = checkpoint['state_dict']
    else:
        raise CheckpointError(f"{source}: no '{key}' entry (found: {', '.join(map(str, list(checkpoint)[:10]))})")
    if isinstance(state, Mapping) and not _is_state_dict(state) and _is_state_dict(state.get('model')):
        state = state['model']  # an EMA entry: {'model': state_dict, 'decay': ..., 'num_updates': ...}
    if not _is_state_dict(state):
        raise CheckpointError(f"{source}: entry '{key}' is not a state dict of tensors")
    return {_strip_wrapper_prefixes(k): v for k, v in state.items()}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, '_orig_mod', None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _quote(items: List[str]) -> str:
    shown = ', '.join(items[:_MAX_QUOTED])
    return shown + (f', ... ({len(items) - _MAX_QUOTED} more)' if len(items) > _MAX_QUOTED else '')


def _checkpoint_and_source(path_or_dict: Union[PathLike, Mapping[str, Any]]) -> tuple:
    """``(checkpoint dict, name for messages)`` from a file or an already loaded checkpoint / state dict."""
    if not isinstance(path_or_dict, Mapping):
        source = os.fspath(path_or_dict)
        return load_checkpoint_file(source), source
    checkpoint = dict(path_or_dict)
    if 'model' not in checkpoint and _is_state_dict(checkpoint):
        checkpoint = {'model': checkpoint}
    return checkpoint, '<checkpoint dict>'


def load_model_weights(model: torch.nn.Module, path_or_dict: Union[PathLike, Mapping[str, Any]],
                       strict: bool = True, state_key: str = 'model') -> Dict[str, Any]:
    """Load model weights for evaluation, fine-tuning or resuming.

    Args:
        model: the model (may be wrapped in DDP or compiled).
        path_or_dict: checkpoint file, or an already loaded checkpoint dict.
        strict: every model key present with the same shape and no surplus keys; otherwise raise and leave
            the model untouched. With ``strict=False`` matching keys are loaded and the rest is logged.
        state_key: checkpoint entry holding the weights (``'model'``; e.g. ``'ema'`` for EMA weights).

    Returns:
        The whole checkpoint dict (optimizer, scheduler, epoch ... for the caller to restore).
    """
    checkpoint, source = _checkpoint_and_source(path_or_dict)
    state = extract_state_dict(checkpoint, state_key, source)
    target = unwrap_model(model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f'{len(missing)} missing ({_quote(missing)})')
        if unexpected:
            problems.append(f'{len(unexpected)} unexpected ({_quote(unexpected)})')
        if mismatched:
            problems.append(f'{len(mismatched)} with other shapes (' + _quote(
                [f'{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}' for k in mismatched]) + ')')
        hint = ''
        if set(mismatched) <= set(HEAD_KEYS) and not missing and not unexpected:
            hint = ' Only the head differs: to fine-tune on other classes, use TRAIN.PRETRAINED_PATH / --pretrained.'
        message = f'{source}: weights do not match the model: ' + '; '.join(problems) + '.' + hint
        if strict:
            raise CheckpointError(message)
        _logger.warning('%s Loading the %d matching tensors only (strict=False).', message,
                        len(own) - len(missing) - len(mismatched))
        state = {k: v for k, v in state.items() if k in own and k not in mismatched}
    target.load_state_dict(state, strict=strict)
    _logger.info('loaded %d tensors from %s', len(state), source)
    return checkpoint


def load_pretrained(model: torch.nn.Module, path: Union[PathLike, Mapping[str, Any]], config: Any = None,
                    logger: Optional[logging.Logger] = None) -> Dict[str, Any]:
    """Initialise a Video-FocalNet from ImageNet FocalNet-SRF weights or from another video checkpoint.

    Spatial tensors are copied (renamed/reshaped from timm's layout when needed), the stem is inflated over
    the tubelet (repeat / ts, bias kept), temporal tensors stay at their init (they are copied from a video
    checkpoint), and the head is re-drawn (weight and bias, trunc-normal std 0.02, like the original) unless
    the source is a video checkpoint with the same number of classes. Every check happens before the first
    copy: a mismatch (e.g. an LRF checkpoint into an SRF model) raises and leaves the model unchanged.

    Args:
        model: the model to initialise (may be wrapped in DDP or compiled).
        path: checkpoint file (``.pth`` / ``.bin`` / ``.safetensors``) or an already loaded checkpoint dict.
        config: the run's config, only used to name the model in the log.
        logger: where to log the summary (default: this module's logger).

    Returns:
        Report dict: ``source``, ``layout`` ('focalnet2d' | 'timm' | 'video') and the key lists ``loaded``,
        ``inflated``, ``skipped`` (source keys not used: its head), ``left_at_init`` (temporal keys) and
        ``reinitialised`` (head keys re-drawn).
    """
    log = logger or _logger
    checkpoint, source = _checkpoint_and_source(path)
    state = extract_state_dict(checkpoint, 'model', source)
    target = unwrap_model(model)
    own = target.state_dict()
    tensors, report = map_pretrained_state_dict(state, {k: v.shape for k, v in own.items()}, source)
    with torch.no_grad():
        for key, value in tensors.items():
            own[key].copy_(value)
        head = getattr(target, 'head', None)
        if report['reinitialised'] and isinstance(head, torch.nn.Linear):
            redraw_head_(head.weight, head.bias)
        elif report['reinitialised']:
            for key in report['reinitialised']:
                redraw_head_(own[key], None)
    report = dict(source=source, **report)
    name = getattr(getattr(config, 'MODEL', None), 'NAME', '') or type(target).__name__
    log.info('initialised %s from %s (%s layout): %d tensors loaded, %d inflated over the tubelet, '
             '%d temporal left at init, head re-drawn: %s, skipped from the checkpoint: %s',
             name, source, report['layout'], len(report['loaded']), len(report['inflated']),
             len(report['left_at_init']), bool(report['reinitialised']), ', '.join(report['skipped']) or 'none')
    return report


# ------------------------------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------------------------------
_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.Size, torch.dtype,
                 torch.device)


def _check_plain(obj: Any, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` could not read back (numpy arrays, CfgNodes, ...)."""
    kind = type(obj)
    if kind in (dict, collections.OrderedDict):
        for k, v in obj.items():
            _check_plain(k, f'{where} key {k!r}')
            _check_plain(v, f'{where}[{k!r}]')
    elif kind in (list, tuple, set, frozenset):
        for i, v in enumerate(obj):
            _check_plain(v, f'{where}[{i}]')
    elif not (kind in _PLAIN_LEAVES or isinstance(obj, torch.Tensor)):
        raise CheckpointError(
            f'cannot save {where}: a {kind.__module__}.{kind.__qualname__}; checkpoints hold only tensors and '
            f'plain Python values so that they load with weights_only=True')


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(folder: str, base: str) -> str:
    return os.path.join(folder, f'.{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp')


def _remove_stale_temp_files(folder: str, base: str) -> None:
    """Delete temporaries of ``base`` left by a process that was killed mid-write (and is no longer alive)."""
    pattern = re.compile(rf'\.{re.escape(base)}\.(\d+)\.[0-9a-f]+\.tmp')
    for name in os.listdir(folder):
        match = pattern.fullmatch(name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # still running: maybe writing right now
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        try:
            os.remove(os.path.join(folder, name))
            _logger.info('removed %s, left by an interrupted checkpoint write', name)
        except FileNotFoundError:
            pass


def save_checkpoint(path: PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: the file is either the previous one or the complete new one.

    The data goes to a temporary file in the same folder, is flushed and fsynced, then renamed over ``path``
    (``os.replace``) and the folder is fsynced. A failure while writing removes the temporary file; one left by
    a killed process is removed on the next save. ``state`` may hold only tensors and plain Python values.
    """
    path = os.fspath(path)
    _check_plain(dict(state), 'state')
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    _remove_stale_temp_files(folder, base)
    tmp = _temp_name(folder, base)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


# ------------------------------------------------------------------------------------------------------------
# RNG state
# ------------------------------------------------------------------------------------------------------------
def capture_rng_state() -> Dict[str, Any]:
    """RNG states of Python, numpy (legacy global generator), torch CPU and every CUDA device, as tensors and
    plain values (so a checkpoint holding them loads with ``weights_only=True``)."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: Dict[str, Any] = {
        'python': [py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss],
        'numpy': [str(np_kind), torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured; entries that are absent are left alone.

    CUDA states are restored only when the number of visible devices matches (otherwise logged).
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f'RNG state: expected a dict from capture_rng_state(), found {type(state).__name__}')
    if 'python' in state:
        version, internal, gauss = state['python']
        random.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
    if 'numpy' in state:
        kind, keys, pos, has_gauss, gauss = state['numpy']
        np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    if 'torch' in state:
        torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        if len(state['cuda']) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])
        else:
            _logger.warning('not restoring CUDA RNG states: saved for %d devices, %d visible',
                            len(state['cuda']), torch.cuda.device_count())


# ------------------------------------------------------------------------------------------------------------
# Auto-resume
# ------------------------------------------------------------------------------------------------------------
_EPOCH_CHECKPOINT = re.compile(r'ckpt_epoch_(\d+)\.pth')


def _loadable_checkpoint(path: str) -> Optional[str]:
    """None when ``path`` is a complete checkpoint with a 'model' entry, else the reason it is not."""
    try:
        try:
            checkpoint = load_checkpoint_file(path, mmap=True)  # checks structure without reading tensor data
        except CheckpointError as e:
            if 'mmap' not in str(e):
                raise
            checkpoint = load_checkpoint_file(path)  # legacy (non-zip) format cannot be memory-mapped
    except (CheckpointError, OSError) as e:
        return str(e).replace(f'{path}: ', '')
    if 'model' not in checkpoint:
        return "no 'model' entry"
    return None


def find_auto_resume(output_dir: PathLike, logger: Optional[logging.Logger] = None) -> Optional[str]:
    """Checkpoint to resume from in ``output_dir``: ``last.pth`` if it loads, else the loadable
    ``ckpt_epoch_N.pth`` with the largest N, else None. Corrupt files are logged and passed over."""
    log = logger or _logger
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return None
    last = os.path.join(output_dir, 'last.pth')
    epochs = sorted(((int(m.group(1)), name) for name in os.listdir(output_dir)
                     if (m := _EPOCH_CHECKPOINT.fullmatch(name))), reverse=True)
    candidates = ([last] if os.path.exists(last) else []) + [os.path.join(output_dir, n) for _, n in epochs]
    for candidate in candidates:
        problem = _loadable_checkpoint(candidate)
        if problem is None:
            if candidate != last:
                log.warning('auto-resume: %s', 'last.pth is not usable, falling back to ' + candidate
                            if os.path.exists(last) else 'no last.pth, using ' + candidate)
            log.info('auto-resume from %s', candidate)
            return candidate
        log.warning('auto-resume: skipping %s (%s)', candidate, problem)
    return None
