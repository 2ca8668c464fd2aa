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


def test_compiled_ddp_with_checkpointing_keeps_the_ddp_optimizer_where_torch_handles_it(monkeypatch):
    import torch._dynamo
    from engine.compile import configure_ddp_compile, torch_release
    monkeypatch.setattr(torch._dynamo.config, 'optimize_ddp', True)
    assert torch_release('2.14.1+cu130') == (2, 14) and torch_release('2.9.0a0') == (2, 9)
    assert configure_ddp_compile(distributed=True, checkpointing=True, version='2.14.1') is True
    assert configure_ddp_compile(distributed=True, checkpointing=True, version='3.0.0') is True
    assert configure_ddp_compile(distributed=False, checkpointing=True, version='2.3.0') is True   # one process
    assert configure_ddp_compile(distributed=True, checkpointing=False, version='2.3.0') is True   # no checkpointing
    assert configure_ddp_compile(distributed=True, checkpointing=True, version='2.3.0') is False  # an older release
    assert torch._dynamo.config.optimize_ddp is False


_DDP_COMPILE_WORKER = '''
import sys, torch, torch.distributed as dist
sys.path.insert(0, {repo!r})
import torch._dynamo
from torch._dynamo.backends.registry import lookup_backend
from engine.compile import compile_for_training
from engine.defaults import get_default_config
from models import VideoFocalNet
dist.init_process_group('gloo')
torch.manual_seed(0)
kwargs = dict(img_size=32, num_frames=4, num_classes=5, embed_dim=32, depths=[1, 1, 1, 1], drop_path_rate=0.0)
model, reference = VideoFocalNet(**kwargs).train(), VideoFocalNet(**kwargs).train()
reference.load_state_dict(model.state_dict())
# 1 MB buckets (the size of DDP's first bucket): several buckets for this 8 MB model, as every published size
# has at the default 25 MB
ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=1, gradient_as_bucket_view=True)
eager = torch.nn.parallel.DistributedDataParallel(reference, bucket_cap_mb=1, gradient_as_bucket_view=True)
graphs = []
aot_eager = lookup_backend('aot_eager')
def counting_backend(graph, example_inputs):
    graphs.append(graph)
    return aot_eager(graph, example_inputs)
config = get_default_config()   # TRAIN.SELECTIVE_CHECKPOINT is on by default
compiled = compile_for_training(ddp, config, distributed=True, backend=counting_backend)
assert torch._dynamo.config.optimize_ddp, 'the DDP optimizer was switched off'
torch.manual_seed(1 + dist.get_rank())
clips = torch.randn(2, 4, 3, 32, 32)
compiled(clips).sum().backward()
eager(clips).sum().backward()
assert len(graphs) > 1, f'one graph: not split at the gradient buckets'
for (name, p), q in zip(model.named_parameters(), reference.parameters()):
    assert torch.equal(p.grad, q.grad), f'{{name}}: compiled gradient differs from eager DDP'
print(f'compiled ddp ok: {{len(graphs)}} graphs', flush=True)
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_compiled_ddp_with_selective_checkpointing_overlaps_all_reduce_on_two_ranks(tmp_path):
    """On the pinned torch, the DDP optimizer splits the selectively checkpointed graph at the gradient buckets
    (so each bucket's all-reduce overlaps the backward pass) and the gradients equal eager DDP's."""
    from engine_helpers import REPO, env, free_port
    script = tmp_path / 'worker.py'
    script.write_text(_DDP_COMPILE_WORKER.format(repo=REPO))
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr',
                           '127.0.0.1', '--master_port', str(free_port()), str(script)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('compiled ddp ok') == 2


# ----------------------------------------------------------------------------------------------- GPU binding
@pytest.fixture
def simulated_gpus(monkeypatch):
    """``torch.cuda`` as a node shows it: ``simulated_gpus(n)`` makes n devices visible (set_device is recorded)."""
    chosen = []

    def make(count: int):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)
        monkeypatch.setattr(torch.cuda, 'set_device', chosen.append)
        return chosen
    for name in ('RANK', 'WORLD_SIZE', 'SLURM_STEP_ID'):
        monkeypatch.delenv(name, raising=False)
    return make


@pytest.mark.parametrize('local_rank, visible, index', [(3, 8, 3), (0, 8, 0), (3, 1, 0), (7, 1, 0), (0, 1, 0)])
def test_each_process_binds_its_own_gpu(simulated_gpus, monkeypatch, local_rank, visible, index):
    """All GPUs visible (torchrun, srun without binding): device LOCAL_RANK; one GPU per task (srun
    --gpus-per-task=1, --gpu-bind=single): device 0, on every rank, not an error on every rank but 0."""
    from utils.distributed import init_distributed
    chosen = simulated_gpus(visible)
    monkeypatch.setenv('LOCAL_RANK', str(local_rank))
    info = init_distributed()
    assert info.device == torch.device('cuda', index) and chosen == [index] and info.local_rank == local_rank


def test_processes_and_gpus_that_do_not_pair_up_are_one_line_naming_cuda_visible_devices(simulated_gpus,
                                                                                         monkeypatch):
    from utils.distributed import LaunchError, init_distributed
    simulated_gpus(2)
    monkeypatch.setenv('LOCAL_RANK', '3')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,5')
    with pytest.raises(LaunchError) as error:
        init_distributed()
    message = str(error.value)
    assert "CUDA_VISIBLE_DEVICES '4,5'" in message and 'LOCAL_RANK 3' in message and '\n' not in message


def test_ddp_gets_the_bound_device_and_bucket_view_gradients(monkeypatch):
    """device_ids is the device's index (0 for a task bound to one GPU whose LOCAL_RANK is 3), and the gradients
    are views into DDP's buckets (one gradient copy less)."""
    from utils import distributed as du
    made = []
    monkeypatch.setattr(du, 'DistributedDataParallel', lambda module, **kwargs: made.append(kwargs) or module)
    du.wrap_ddp(torch.nn.Linear(2, 2), torch.device('cuda', 0))
    du.wrap_ddp(torch.nn.Linear(2, 2), torch.device('cpu'))
    assert [m['device_ids'] for m in made] == [[0], None]
    assert all(m['gradient_as_bucket_view'] for m in made)


# ----------------------------------------------------------------------------------------------- validation loader
def test_validation_workers_start_once_for_every_validation(tiny_config, monkeypatch):
    """Two validations with EMA (four passes over the validation loader) fork the workers once, not four times."""
    from torch.utils.data import dataloader
    from engine.trainer import Trainer
    from models import build_model
    from utils import distributed as du
    starts = []
    original = dataloader._MultiProcessingDataLoaderIter.__init__

    def counting(self, loader, *args, **kwargs):
        starts.append(loader)
        original(self, loader, *args, **kwargs)
    monkeypatch.setattr(dataloader._MultiProcessingDataLoaderIter, '__init__', counting)
    config = tiny_config.clone()
    config.defrost()
    config.DATA.NUM_WORKERS, config.TRAIN.EMA, config.TRAIN.EMA_EVAL = 1, True, True
    config.freeze()
    torch.manual_seed(0)
    trainer = Trainer(config, du.DistInfo(), build_model(config))
    try:
        first, second = trainer.validate(0), trainer.validate(1)
        assert first == second  # the same weights give the same numbers through the reused workers
        assert [loader is trainer.val_loader for loader in starts] == [True]
    finally:
        trainer.preemption.uninstall()
        trainer.tb.close()
