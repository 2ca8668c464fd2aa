"""Safe loading of checkpoint files: nothing pickled is ever executed.

A leaf below ``models/`` and ``engine/`` (both read checkpoint files); ``engine.checkpoint`` re-exports it.

Differences from the original (``utils.py`` ``load_checkpoint``, spec 4.7, 7.13, 7.25):
``torch.load(weights_only=True)`` is tried first; the original's files pickle a yacs ``CfgNode`` (and maybe
apex ``amp`` state), which ``weights_only`` refuses even when allow-listed, so a second route unpickles with a
restricted unpickler that admits only tensor rebuilds, storages, dtypes, plain containers and the config node
(read back as a plain ``dict``). Anything else is refused with an error naming the file and the global, before
it is imported. ``.safetensors`` files (timm's release format) are read without the safetensors package.

Damage is found before anything is used: the CRC-32 of every member of a zip-format file is checked (``torch.load``
does not check them, so a flipped bit in the weights loaded and evaluated), a safetensors header must give every
tensor a dtype, a shape and ``data_offsets`` that hold exactly that many bytes, and the training-state scalars
(``epoch``, ``epoch_step``, ``max_accuracy``) must be numbers. Each problem is one ``CheckpointError`` line naming
the file.
"""
from __future__ import annotations

import _codecs
import _compat_pickle
import collections
import functools
import json
import math
import numbers
import os
import pickle
import types
import warnings
import zipfile
from typing import Any, Dict, Mapping, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read, or its content does not fit what is asked of it."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint's pickle asks for a global that is not on the allow-list (nothing was executed)."""


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
    if not isinstance(header, dict):
        raise CheckpointError(f'{path}: safetensors header is a {type(header).__name__}, expected a mapping')
    body = memoryview(data)[8 + header_len:]
    tensors: Dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        start, end, shape, dtype = _safetensors_entry(path, name, info, len(body))
        raw = torch.frombuffer(bytearray(body[start:end]), dtype=torch.uint8) if end > start \
            else torch.empty(0, dtype=torch.uint8)
        tensors[name] = raw.view(dtype).reshape(shape)
    return tensors


def _safetensors_entry(path: str, name: str, info: Any, data_size: int) -> tuple:
    """``(start, end, shape, dtype)`` of one header entry, checked: a crafted or damaged header is one error
    naming the tensor, never a ``KeyError`` or a reshape ``RuntimeError``."""
    where = f"{path}: safetensors tensor '{name}'"
    if not isinstance(info, dict):
        raise CheckpointError(f'{where}: header entry is a {type(info).__name__}, expected a mapping')
    dtype = _SAFETENSORS_DTYPES.get(info.get('dtype'))
    if dtype is None:
        raise CheckpointError(f"{where}: unsupported or missing dtype {info.get('dtype')!r}")
    offsets, shape = info.get('data_offsets'), info.get('shape')
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(v) for v in offsets)):
        raise CheckpointError(f'{where}: data_offsets {offsets!r}, expected [start, end] byte offsets')
    if not (isinstance(shape, list) and all(_is_count(v) for v in shape)):
        raise CheckpointError(f'{where}: shape {shape!r}, expected a list of sizes')
    start, end = offsets
    if not start <= end <= data_size:
        raise CheckpointError(f'{where}: data_offsets [{start}, {end}] lie outside the {data_size} data bytes '
                              f'(truncated or crafted file)')
    expected = math.prod(shape) * (torch.finfo(dtype).bits if dtype.is_floating_point
                                   else torch.iinfo(dtype).bits if dtype != torch.bool else 8) // 8
    if end - start != expected:
        raise CheckpointError(f'{where}: shape {shape} of {info["dtype"]} needs {expected} bytes, data_offsets '
                              f'hold {end - start}')
    return start, end, shape, dtype


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def verify_zip_crc(path: str) -> None:
    """Check the CRC-32 of every member of a zip-format checkpoint (``torch.save``'s default format).

    ``torch.load`` reads members without checking their CRC, so a flipped bit in a tensor loads silently. Reading
    the file once costs about what loading it costs (tens of milliseconds per 100 MB from the page cache).

    Raises:
        CheckpointError: a member's data does not match its CRC, or the archive's directory is damaged.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                with archive.open(member) as f:   # ZipExtFile checks the CRC when the member is read to its end
                    while f.read(1 << 24):
                        pass
    except zipfile.BadZipFile as e:
        detail = str(e)
        if 'CRC' in detail:
            name = detail.split('file ', 1)[-1].strip()
            raise CheckpointError(f'{path}: corrupt checkpoint: the CRC-32 of member {name} does not match its data '
                                  f'(a damaged copy or a flipped bit); nothing was loaded') from None
        raise CheckpointError(f'{path}: corrupt zip checkpoint ({detail})') from None
    except (OSError, EOFError, ValueError, NotImplementedError) as e:
        raise CheckpointError(f'{path}: corrupt zip checkpoint ({_reason(e)})') from None


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
            with warnings.catch_warnings():  # a plain pickle of protocol > 2: the fallback below reads it
                warnings.filterwarnings('ignore', message='Detected pickle protocol')
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
    if _is_safetensors(path):
        obj = _read_safetensors(path)
    else:
        if zipfile.is_zipfile(path):
            verify_zip_crc(path)
        obj = _torch_load(path, map_location, mmap)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{path}: expected a checkpoint dict or a state dict, found {type(obj).__name__}')
    if 'model' not in obj and _is_state_dict(obj):
        return {'model': obj}
    _check_training_scalars(path, obj)
    return obj if type(obj) is dict else dict(obj)


# entries a resume turns into numbers: a crafted file with e.g. epoch '3' is refused here, not in int() later
_TRAINING_SCALARS = {'epoch': numbers.Integral, 'epoch_step': numbers.Integral, 'max_accuracy': numbers.Real}


def _check_training_scalars(path: str, checkpoint: Mapping[str, Any]) -> None:
    for key, kind in _TRAINING_SCALARS.items():
        value = checkpoint.get(key)
        if value is None:
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        valid = isinstance(value, kind) and not isinstance(value, bool)
        if valid and kind is numbers.Real:
            valid = math.isfinite(value)
        if not valid:
            expected = 'an integer' if kind is numbers.Integral else 'a finite number'
            raise CheckpointError(f"{path}: entry '{key}' is {value!r} ({type(value).__name__}), expected {expected}")
