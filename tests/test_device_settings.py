"""The switches a GPU run depends on, checked on the CPU: TF32, and what TRAIN.COMPILE does under DDP."""
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
