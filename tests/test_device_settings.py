"""The switches a GPU run depends on, checked on the CPU: TF32, and what TRAIN.COMPILE does under DDP."""
import subprocess
import sys

import pytest
import torch

from utils.env import configure_determinism


def _flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)


def test_tf32_on_unless_deterministic():
    saved = _flags() + (torch.are_deterministic_algorithms_enabled(),)
    mkldnn = getattr(getattr(torch.backends, 'mkldnn', None), 'matmul', None)
    cpu_precision = getattr(mkldnn, 'fp32_precision', None)
    try:
        configure_determinism(False)
        assert _flags() == (True, True, True, False)
        configure_determinism(True)
        assert _flags() == (False, False, False, True)
        configure_determinism(False)
        # CPU matmuls keep full fp32 (oneDNN is not told it may use reduced precision)
        assert getattr(mkldnn, 'fp32_precision', None) == cpu_precision
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
         torch.backends.cudnn.deterministic) = saved[:4]
        torch.use_deterministic_algorithms(saved[4])


def test_compiled_ddp_with_checkpointing_turns_the_ddp_optimizer_off(monkeypatch):
    import torch._dynamo
    from engine.compile import configure_ddp_compile
    monkeypatch.setattr(torch._dynamo.config, 'optimize_ddp', True)
    assert configure_ddp_compile(distributed=False, checkpointing=True) is True       # one process: unchanged
    assert configure_ddp_compile(distributed=True, checkpointing=False) is True       # no checkpointing: unchanged
    assert configure_ddp_compile(distributed=True, checkpointing=True) is False
    assert torch._dynamo.config.optimize_ddp is False


_DDP_COMPILE_WORKER = '''
import sys, torch, torch.distributed as dist
sys.path.insert(0, {repo!r})
from engine.compile import compile_for_training
from engine.defaults import get_default_config
from models import VideoFocalNet
dist.init_process_group('gloo')
torch.manual_seed(0)
model = VideoFocalNet(img_size=32, num_frames=4, num_classes=5, embed_dim=32, depths=[1, 1, 1, 1]).train()
# small buckets: several gradient buckets, as every published model size has at the default 25 MB
ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.05)
config = get_default_config()   # TRAIN.SELECTIVE_CHECKPOINT is on by default
compiled = compile_for_training(ddp, config, distributed=True, backend='aot_eager')
torch.manual_seed(1 + dist.get_rank())
compiled(torch.randn(2, 4, 3, 32, 32)).sum().backward()
grad = model.head.weight.grad.clone()
others = [torch.zeros_like(grad) for _ in range(2)]
dist.all_gather(others, grad)
assert torch.equal(others[0], others[1]), 'gradients differ between ranks'
print('compiled ddp ok', flush=True)
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_compiled_ddp_with_selective_checkpointing_trains_on_two_ranks(tmp_path):
    """The DDP optimizer raises on checkpointed graphs with several buckets (an AssertionError in torch 2.14,
    a higher-order-op error in earlier releases); with it switched off one compiled step runs on 2 gloo ranks."""
    from engine_helpers import REPO, env, free_port
    script = tmp_path / 'worker.py'
    script.write_text(_DDP_COMPILE_WORKER.format(repo=REPO))
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr',
                           '127.0.0.1', '--master_port', str(free_port()), str(script)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('compiled ddp ok') == 2
