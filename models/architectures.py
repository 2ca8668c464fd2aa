"""The one table of published Video-FocalNet sizes and the design space, read by ``models.build``, the timm
registry (``models.registry``) and ``hubconf.py``.

Kept free of torch imports so that configuration code can read the choice lists cheaply.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

# Published sizes (spec 1.1): stage-0 width and blocks per stage. Everything else (focal level 2, window 3,
# MLP ratio 4, patch 4, 8 frames, tubelet 1) is the ``VideoFocalNet`` default.
ARCHITECTURES: Dict[str, Dict[str, Any]] = {
    'tiny': dict(embed_dim=96, depths=(2, 2, 6, 2)),
    'small': dict(embed_dim=96, depths=(2, 2, 18, 2)),
    'base': dict(embed_dim=128, depths=(2, 2, 18, 2)),
}


def describe(size: str) -> str:
    """One line for docstrings: 'width 96, depths 2-2-6-2'."""
    arch = ARCHITECTURES[size]
    return f"width {arch['embed_dim']}, depths {'-'.join(str(d) for d in arch['depths'])}"


# The design space of the paper (``MODEL.FOCAL.DESIGN``, the ``design`` argument of ``VideoFocalNet``);
# ``parallel`` is the released Video-FocalNet. See README "Design space" for what each one is.
DESIGNS: Tuple[str, ...] = ('parallel', 'spatial', 'factorized', 'divided', 'joint')
DEFAULT_DESIGN = 'parallel'
