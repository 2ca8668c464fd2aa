"""tools.flops: parameter and MAC counts of one view (the original's get_flops.py figure)."""
import os
import subprocess
import sys

import pytest
import torch

from models import DESIGNS, VideoFocalNet
from models.focal_modulation import (JointFocalModulation, SpatialFocalModulation, SpatioTemporalFocalModulation,
                                     TemporalFocalModulation)
from tools.flops import count_gmacs, count_params, main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modulation_macs(mod, tokens):
    """Convolution + linear MACs of one focal modulation over ``tokens`` tokens."""
    c = mod.dim
    if isinstance(mod, SpatioTemporalFocalModulation):
        total = mod.f.weight.numel() + mod.f_temporal.weight.numel() + 2 * c * c + c * c  # f, f_t, h, h_t, proj
        total += sum(k * k * c for k in mod.kernel_sizes)  # depthwise spatial
        total += sum(k * c * c for k in mod.kernel_sizes)  # dense temporal
        return tokens * total
    per_level = {SpatialFocalModulation: lambda k: k * k * c, TemporalFocalModulation: lambda k: k * c * c,
                 JointFocalModulation: lambda k: k * k * k * c}[type(mod)]
    return tokens * (mod.f.weight.numel() + 2 * c * c + sum(per_level(k) for k in mod.kernel_sizes))  # f, h, proj


def _block_macs(blk, tokens):
    total = _modulation_macs(blk.modulation, tokens)
    if blk.modulation_temporal is not None:  # divided: the temporal sub-layer
        total += _modulation_macs(blk.modulation_temporal, tokens)
    return total + tokens * (blk.mlp.fc1.weight.numel() + blk.mlp.fc2.weight.numel())


def _expected_macs(model, frames, size):
    """Convolution + linear MACs of a tubelet-1 Video-FocalNet of any design, counted by hand."""
    total = 0
    side = size // 4
    total += frames * side * side * model.patch_embed.proj.weight.numel()  # stem conv (3*16*C0 per output)
    for stage in model.layers:
        total += sum(_block_macs(blk, frames * side * side) for blk in stage.blocks)
        if stage.downsample is not None:
            side //= 2
            total += frames * side * side * stage.downsample.proj.weight.numel()
    if model.temporal_encoder is not None:  # factorized: one token per frame
        total += sum(_block_macs(blk, frames) for blk in model.temporal_encoder.blocks)
    total += model.head.weight.numel()
    return total / 1e9


@pytest.mark.parametrize('design', DESIGNS)
def test_count_matches_hand_count(design):
    with torch.device('meta'):
        model = VideoFocalNet(embed_dim=16, depths=[1, 2, 1, 1], num_classes=10, num_frames=4, img_size=64,
                              design=design)
    assert count_gmacs(model, (1, 4, 3, 64, 64)) == pytest.approx(_expected_macs(model, 4, 64), rel=1e-9)
    assert count_params(model) == sum(p.numel() for p in model.parameters())


def test_cli_tiny_config(capsys):
    main(['--cfg', os.path.join(REPO_ROOT, 'configs', 'toy', 'video-focalnet_toy.yaml'),
          '--opts', 'DATA.NUM_FRAMES', '4', 'MODEL.TUBELET_SIZE', '1', 'MODEL.FOCAL.MLP_RATIO', '4.0'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == 'params: 631366'
    assert lines[1].startswith('gmacs_per_view: ')
    assert float(lines[1].split()[1]) == pytest.approx(0.033, abs=5e-4)
    main(['--cfg', os.path.join(REPO_ROOT, 'configs', 'toy', 'video-focalnet_toy.yaml'),
          '--opts', 'DATA.NUM_FRAMES', '4', 'MODEL.TUBELET_SIZE', '1', 'MODEL.FOCAL.DESIGN', 'spatial'])
    spatial = capsys.readouterr().out.splitlines()
    assert int(spatial[0].split()[1]) < 631366  # the temporal branch is gone


def test_cli_video_focalnet_tiny_published_figure():
    """The figure of the original README / get_flops.py: 49.55M parameters, 63.0 GMACs per 8x224^2 view."""
    env = dict(os.environ, OMP_NUM_THREADS='1')  # nothing is computed (meta device); spare busy CI cores
    out = subprocess.run([sys.executable, '-m', 'tools.flops', '--cfg', 'configs/kinetics400/video-focalnet_tiny.yaml'],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True, env=env).stdout
    assert out.splitlines() == ['params: 49553272', 'gmacs_per_view: 63.0']
