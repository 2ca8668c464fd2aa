"""Parameters and multiply-accumulates of one view: ``python -m tools.flops --cfg FILE [--opts KEY VALUE ...]``.

Prints ``params: <int>`` and ``gmacs_per_view: <float>`` (10^9 multiply-accumulates for one
``(1, DATA.NUM_FRAMES, 3, DATA.IMG_SIZE, DATA.IMG_SIZE)`` clip). The original's ``get_flops.py`` used thop,
which counts convolutions and linear layers and prints MACs under the label "gflops"; here
``torch.utils.flop_counter`` counts the same operations (convolutions and matrix products; norms, GELU,
means and element-wise products are not counted) and the FLOP total is halved to MACs. The model is built
on the ``meta`` device, so nothing is allocated or computed and the count takes well under a second.
Unlike the original, the clip length is the config's ``DATA.NUM_FRAMES`` (8 in every shipped config)
instead of being forced to 8.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, input_shape: Sequence[int]) -> float:
    """10^9 multiply-accumulates of one forward pass on an input of ``input_shape`` (conv + matmul ops).

    The input is allocated on the model's device (use the ``meta`` device for a free count).
    """
    device = next(model.parameters()).device
    x = torch.zeros(tuple(input_shape), device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2e9


def main(argv: Optional[Sequence[str]] = None) -> int:
    from models import build_model
    from engine.config import load_config

    parser = argparse.ArgumentParser(prog='python -m tools.flops', description=__doc__.splitlines()[0])
    parser.add_argument('--cfg', required=True, metavar='FILE', help='config file')
    parser.add_argument('--opts', nargs='+', default=[], metavar='KEY VALUE', help='config overrides')
    args = parser.parse_args(argv)
    try:
        config = load_config(args.cfg, args.opts)
        with torch.device('meta'):
            model = build_model(config)
    except ValueError as e:  # ConfigError: a bad --cfg / --opts
        from tools._common import user_error
        return user_error(e)
    frames, size = config.DATA.NUM_FRAMES, config.DATA.IMG_SIZE
    gmacs = count_gmacs(model, (1, frames, model.in_chans, size, size))
    print(f"params: {count_params(model)}")
    print(f"gmacs_per_view: {round(gmacs, 3)}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
