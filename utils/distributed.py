"""Process-group set-up and the few collectives the engine needs.

How it differs from the original: the original required ``--local_rank`` from the deprecated
``torch.distributed.launch`` and read RANK / WORLD_SIZE with a default of -1 (which then failed).
Here one entry point serves all launchers:

* ``python main.py ...``: one process, no process group, nothing to configure;
* ``torchrun [--nnodes N --node-rank R --rdzv-endpoint HOST:PORT] --nproc_per_node G main.py ...``:
  RANK / WORLD_SIZE / LOCAL_RANK from the environment;
* ``python -m torch.distributed.launch --nproc_per_node G main.py ...`` (deprecated): the same
  environment, plus ``--local_rank`` / ``--local-rank`` on the command line (accepted by ``main.py``).

Backend: NCCL when CUDA is available, gloo otherwise (CPU runs and tests). Every helper below also
works without a process group, where it is the identity.
"""
from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistInfo:
    """Where this process runs."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')
    backend: str = ''

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: Optional[int] = None) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == '':
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from None


def init_distributed(local_rank: Optional[int] = None, timeout_min: float = 30.0) -> DistInfo:
    """Start the process group when launched by torchrun / torch.distributed.launch.

    Args:
        local_rank: ``--local_rank`` of the deprecated launcher; the LOCAL_RANK variable wins when set.
        timeout_min: collective timeout (a rank stuck this long, e.g. on a broken video share, fails
            loudly instead of hanging forever).
    """
    world_size = _env_int('WORLD_SIZE', 1)
    rank = _env_int('RANK', 0)
    local_rank = _env_int('LOCAL_RANK', local_rank if local_rank is not None else 0)
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                               "are visible: launch at most one process per GPU")
        torch.cuda.set_device(local_rank)
        device = torch.device('cuda', local_rank)
    else:
        device = torch.device('cpu')
    if world_size <= 1:
        return DistInfo(0, 1, local_rank, device, '')
    backend = 'nccl' if use_cuda else 'gloo'
    kwargs = {'backend': backend, 'init_method': 'env://', 'world_size': world_size, 'rank': rank,
              'timeout': datetime.timedelta(minutes=timeout_min)}
    if use_cuda:
        kwargs['device_id'] = device
    dist.init_process_group(**kwargs)
    return DistInfo(rank, world_size, local_rank, device, backend)


def no_buffer_sync_kwargs() -> dict:
    """DDP keyword that stops buffer broadcasts before every forward (the original's ``broadcast_buffers=False``;
    Video-FocalNet has no buffers that training updates). torch 2.14 renamed it ``forward_sync_buffers``."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {'forward_sync_buffers': False} if 'forward_sync_buffers' in params else {'broadcast_buffers': False}


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (and return it)."""
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` without a process group)."""
    if not is_dist():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
