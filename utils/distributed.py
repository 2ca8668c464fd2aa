"""Process-group set-up and the few collectives the engine needs.

How it differs from the original: the original required ``--local_rank`` from the deprecated
``torch.distributed.launch`` and read RANK / WORLD_SIZE with a default of -1 (which then failed).
Here one entry point serves all launchers:

* ``python main.py ...``: one process, no process group, nothing to configure;
* ``torchrun [--nnodes N --node-rank R --rdzv-endpoint HOST:PORT] --nproc_per_node G main.py ...``:
  RANK / WORLD_SIZE / LOCAL_RANK from the environment;
* ``python -m torch.distributed.launch --nproc_per_node G main.py ...`` (deprecated): the same
  environment, plus ``--local_rank`` / ``--local-rank`` on the command line (accepted by ``main.py``);
* ``srun python main.py ...`` inside a SLURM allocation (one task per GPU): when RANK / WORLD_SIZE are
  absent, SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID give them, MASTER_ADDR is the first host of
  SLURM_JOB_NODELIST and MASTER_PORT is derived from SLURM_JOB_ID (``slurm_launch_env``). Without this,
  ``srun`` started N independent one-process runs that all wrote the same output folder.

Each process uses CUDA device LOCAL_RANK, or device 0 when SLURM bound it to one GPU (``--gpus-per-task=1``,
``--gpu-bind=single``): ``cuda_device_index``.

Backend: NCCL when CUDA is available, gloo otherwise (CPU runs and tests). Every helper below also
works without a process group, where it is the identity. ``raise_together`` makes an error one rank met
every rank's, and ``set_collective_timeout`` shortens the wait for a peer once start-up is over.
"""
from __future__ import annotations

import datetime
import inspect
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

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


class LaunchError(RuntimeError):
    """The launcher's environment does not describe a run (one line, for ``main.py`` to print)."""


# MASTER_PORT = BASE + SLURM_JOB_ID % SPAN, 11000..31999: below Linux's ephemeral ports (32768 and up,
# net.ipv4.ip_local_port_range), which any outgoing connection on the node may hold at the moment rank 0 binds
SLURM_PORT_BASE, SLURM_PORT_SPAN = 11000, 21000


def slurm_port(job_id: str) -> int:
    """The rendezvous port of SLURM job ``job_id``: every task of the job computes the same one, and two jobs
    sharing a node get different ones unless their ids are a multiple of SLURM_PORT_SPAN apart."""
    return SLURM_PORT_BASE + int(job_id) % SLURM_PORT_SPAN


def slurm_tasks_on_node(tasks_per_node: str, node_index: int) -> Optional[int]:
    """This node's task count from SLURM's per-node list (``4(x2)`` = 4 on each of 2 nodes, ``2,1``,
    ``3(x2),1``), the node being number ``node_index`` of the list; None when the text is not such a list."""
    counts: List[int] = []
    for part in tasks_per_node.split(','):
        match = re.fullmatch(r'\s*(\d+)(?:\(x(\d+)\))?\s*', part)
        if not match:
            return None
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    if not counts:
        return None
    return counts[node_index] if 0 <= node_index < len(counts) else counts[0]


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[003-005,007],cpu1`` -> ``gpu003``): ``scontrol show
    hostnames`` when scontrol is on PATH (it knows every syntax), else the common forms parsed here."""
    try:
        out = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True, text=True,
                             timeout=60)
        hosts = out.stdout.split()
        if out.returncode == 0 and hosts:
            return hosts[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    match = re.match(r'([^,\[]+)(?:\[([0-9]+))?', nodelist.strip())
    if not match:
        raise LaunchError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot tell its first host (scontrol is not on PATH); "
                          "set MASTER_ADDR to the address of the job's first node")
    return match.group(1) + (match.group(2) or '')


def slurm_launch_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """The torchrun variables that a task started by ``srun`` lacks, derived from SLURM's; ``{}`` otherwise.

    Applies only when RANK and WORLD_SIZE are both absent (torchrun's own values always win, also for
    torchrun started inside a SLURM job) and SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID are all set, as
    ``srun`` sets them for each task, together with SLURM_STEP_ID. The batch script's own shell has the first
    three too (PROCID 0 of NTASKS) but no SLURM_STEP_ID: ``python main.py`` run there without srun stays one
    process instead of waiting for peers that never come. SLURM_STEP_NUM_TASKS (the tasks of this srun
    step) is preferred to SLURM_NTASKS (those of the allocation) for the same reason. LOCAL_WORLD_SIZE (the
    processes on this node) comes from SLURM_STEP_TASKS_PER_NODE, else SLURM_TASKS_PER_NODE or
    SLURM_NTASKS_PER_NODE. Raises ``LaunchError``
    (one line) when a value is malformed or MASTER_ADDR cannot be found."""
    if 'RANK' in environ or 'WORLD_SIZE' in environ:
        return {}
    names = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_STEP_ID')
    if not all(environ.get(name, '') != '' for name in names):
        return {}
    tasks_name = 'SLURM_STEP_NUM_TASKS' if environ.get('SLURM_STEP_NUM_TASKS', '') != '' else 'SLURM_NTASKS'
    values = {}
    for name in ('SLURM_PROCID', tasks_name, 'SLURM_LOCALID'):
        try:
            values[name] = int(environ[name])
        except ValueError:
            raise LaunchError(f"environment variable {name}={environ[name]!r}: expected an integer") from None
    world_size, rank = values[tasks_name], values['SLURM_PROCID']
    if world_size <= 1:
        return {}
    if not 0 <= rank < world_size:
        raise LaunchError(f"SLURM_PROCID={rank} is outside 0..{world_size - 1} ({tasks_name}={world_size})")
    launch = {'RANK': str(rank), 'WORLD_SIZE': str(world_size), 'LOCAL_RANK': str(values['SLURM_LOCALID'])}
    if environ.get('LOCAL_WORLD_SIZE', '') == '':  # what torchrun sets: the loader's worker advice divides by it
        for name in ('SLURM_STEP_TASKS_PER_NODE', 'SLURM_TASKS_PER_NODE', 'SLURM_NTASKS_PER_NODE'):
            node = environ.get('SLURM_NODEID', '0')
            local = slurm_tasks_on_node(environ.get(name, ''), int(node) if node.isdigit() else 0)
            if local:
                launch['LOCAL_WORLD_SIZE'] = str(local)
                break
    if environ.get('MASTER_ADDR', '') == '':
        nodelist = environ.get('SLURM_STEP_NODELIST') or environ.get('SLURM_JOB_NODELIST') or ''
        if not nodelist:
            raise LaunchError(f'srun started {world_size} tasks but neither MASTER_ADDR nor SLURM_JOB_NODELIST is set: '
                              "set MASTER_ADDR to the address of the job's first node")
        launch['MASTER_ADDR'] = first_slurm_host(nodelist)
    if environ.get('MASTER_PORT', '') == '':
        job_id = environ.get('SLURM_JOB_ID', '')
        if not job_id.isdigit():
            raise LaunchError(f"srun started {world_size} tasks but MASTER_PORT is not set and SLURM_JOB_ID="
                              f"{job_id!r} is not a job number to derive it from: set MASTER_PORT")
        launch['MASTER_PORT'] = str(slurm_port(job_id))
    return launch


def cuda_device_index(local_rank: int, visible: int, visible_env: Optional[str] = None) -> int:
    """The CUDA device this process uses, among the ``visible`` ones.

    One process per GPU sees either all GPUs of the node (torchrun, ``srun`` without GPU binding: device
    ``local_rank``) or only its own (``srun --gpus-per-task=1`` or ``--gpu-bind=single/closest``, where SLURM
    sets CUDA_VISIBLE_DEVICES per task while SLURM_LOCALID still runs 0..N-1: device 0). Anything else means
    the processes and the GPUs do not pair up: ``LaunchError`` naming CUDA_VISIBLE_DEVICES."""
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    shown = 'unset' if visible_env is None else repr(visible_env)
    raise LaunchError(f'LOCAL_RANK {local_rank} but {visible} CUDA device(s) are visible (CUDA_VISIBLE_DEVICES '
                      f'{shown}): expected either one device per process or at least LOCAL_RANK + 1 devices; '
                      'launch at most one process per GPU, or bind one GPU per task (srun --gpus-per-task=1)')


def init_distributed(local_rank: Optional[int] = None, timeout_min: float = 30.0) -> DistInfo:
    """Start the process group when launched by torchrun / torch.distributed.launch / srun.

    Args:
        local_rank: ``--local_rank`` of the deprecated launcher; the LOCAL_RANK variable wins when set.
        timeout_min: collective timeout during start-up (a rank stuck this long, e.g. on a broken video share,
            fails loudly instead of hanging forever); ``set_collective_timeout`` shortens it afterwards.

    Raises:
        LaunchError: an srun task whose rendezvous address cannot be found (``slurm_launch_env``).
    """
    os.environ.update(slurm_launch_env(os.environ))  # for init_method env:// and for code that reads RANK
    world_size = _env_int('WORLD_SIZE', 1)
    rank = _env_int('RANK', 0)
    local_rank = _env_int('LOCAL_RANK', local_rank if local_rank is not None else 0)
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        index = cuda_device_index(local_rank, torch.cuda.device_count(), os.environ.get('CUDA_VISIBLE_DEVICES'))
        torch.cuda.set_device(index)
        device = torch.device('cuda', index)
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


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """The training model under DDP, as the trainer uses it.

    ``device_ids`` is the device's own index, not LOCAL_RANK: a task bound to one GPU sees it as device 0
    (``cuda_device_index``). Gradients are views into DDP's all-reduce buckets (``gradient_as_bucket_view``),
    which saves one copy of the gradients (about 0.6 GiB for the B model)."""
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None,
                                   gradient_as_bucket_view=True, **no_buffer_sync_kwargs())


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


# gloo reports a timeout or a vanished peer as a plain RuntimeError with its own wording
_GLOO_PEER_FAILURES = ('Timed out waiting', 'Connection closed by peer', 'Connection reset by peer')


def is_collective_failure(error: BaseException) -> bool:
    """True when ``error`` says that a collective failed because a peer died or did not answer in time."""
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(words in str(error) for words in _GLOO_PEER_FAILURES))


class PeerFailedError(RuntimeError):
    """Another rank stopped on an error; this rank stops with it (``kind`` is that error's class name, so that
    every rank can end with the same exit code)."""

    def __init__(self, rank: int, kind: str, message: str) -> None:
        super().__init__(f'rank {rank} stopped: {message}')
        self.rank, self.kind = rank, kind


def raise_together(error: Optional[BaseException]) -> None:
    """Call on every rank once the ranks know (from a collective they all made) that at least one of them has
    an error: ``error`` is this rank's (or None). The rank that has one raises it; the others raise
    :class:`PeerFailedError` naming the first failing rank and its message. Without this, an error raised on
    one rank alone leaves the others waiting in their next collective until the process-group timeout."""
    own = None if error is None else (type(error).__name__, ' '.join(str(error).split())[:2000])
    reports = all_gather_object(own)
    if error is not None:
        raise error
    for rank, report in enumerate(reports):
        if report is not None:
            raise PeerFailedError(rank, report[0], report[1])
    raise RuntimeError('raise_together: called although no rank has an error')


def set_collective_timeout(minutes: float) -> None:
    """The timeout of the default process group's collectives from now on: start-up keeps a long one (rank 0
    may generate data or check a large checkpoint while the others wait), the run after it a short one, so that
    a peer that died or hangs ends the job in minutes. A no-op without a process group or where torch offers
    no way to change it."""
    setter = getattr(dist, 'set_timeout', None) or getattr(dist.distributed_c10d, '_set_pg_timeout', None)
    if is_dist() and setter is not None:
        setter(datetime.timedelta(minutes=minutes))


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
