"""``main.py`` for two torchrun ranks on one device (the GPU check's ``ddp`` section).

NCCL refuses two ranks on one GPU, and main.py puts rank ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``. Here every
rank uses device 0 (``LOCAL_RANK=0``) and the process group uses gloo, which all-reduces CUDA tensors
through the host: slower than NCCL, but DistributedDataParallel, ``no_sync`` micro-batches, the per-update
collectives and the sharded evaluation of main.py all run on the GPU as in a multi-GPU job. On a CPU it
is main.py's own 2-rank gloo path. Run by torchrun from the repository root:

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m benchmarks.gpucheck.two_ranks_one_device ARGS
"""
import os
import sys

import torch.distributed as dist


def main() -> int:
    os.environ['LOCAL_RANK'] = '0'
    init_process_group = dist.init_process_group

    def gloo_process_group(*args, **kwargs):
        kwargs['backend'] = 'gloo'
        kwargs.pop('device_id', None)  # NCCL's eager binding to one device; gloo takes none
        return init_process_group(*args, **kwargs)

    dist.init_process_group = gloo_process_group
    import main as training  # the repository root is on sys.path: torchrun -m runs from it
    return training.main(sys.argv[1:])


if __name__ == '__main__':
    sys.exit(main())
