"""timm's ``features_only`` for Video-FocalNet: one 5-D feature map per stage.

timm's own feature wrappers (``FeatureListNet``, ``FeatureHookNet``, ``FeatureGetterNet``) handle image features
(``NCHW``/``NHWC``). ``VideoFeatures`` is the video counterpart of ``FeatureGetterNet``: it keeps the stages up
to the last requested one and returns what ``forward_intermediates`` returns for them, as ``(B, C, T', H, W)``
by default (timm's channels-first convention, one dimension more) or ``(B, T', H, W, C)``. ``feature_info``
is a timm ``FeatureInfo``, so ``channels()``, ``reduction()`` and ``module_name()`` work as for image models.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.models._features import FeatureInfo

# feature layouts ``forward_intermediates`` produces: channels first (the default) or the model's channels last
OUTPUT_FORMATS = ('NCTHW', 'NTHWC')


def stage_indices(num_stages: int, out_indices: Optional[Union[int, Sequence[int]]]) -> Tuple[int, ...]:
    """timm's ``out_indices`` as sorted stage indices: None (every stage), n (the last n) or indices (negative
    ones count from the end). Anything else is a ``ValueError`` that names the stages there are."""
    stages = f"the model has {num_stages} stages (indices 0 to {num_stages - 1}), one feature map each"
    if out_indices is None:
        return tuple(range(num_stages))
    if isinstance(out_indices, int):
        if not 0 < out_indices <= num_stages:
            raise ValueError(f"out_indices {out_indices} (the last n stages): {stages}")
        return tuple(range(num_stages - out_indices, num_stages))
    indices = tuple(out_indices)
    bad = [i for i in indices if not isinstance(i, int) or not -num_stages <= i < num_stages]
    if bad or not indices:
        raise ValueError(f"out_indices {indices}: {stages}")
    return tuple(sorted({i % num_stages for i in indices}))


class VideoFeatures(nn.Module):
    """Stage features of a ``VideoFocalNet``: ``forward(clips)`` -> one tensor per index of ``out_indices``.

    Args:
        model: the ``VideoFocalNet``; the stages after the last requested one, its head and (unless ``norm``) its
            final norm are removed from it.
        out_indices: stages to return (see ``stage_indices``); default every stage.
        output_fmt: ``'NCTHW'`` or ``'NTHWC'``.
        norm: apply the model's final norm to the last stage's features.
    """

    def __init__(self, model: nn.Module, out_indices: Optional[Union[int, Sequence[int]]] = None,
                 output_fmt: str = 'NCTHW', norm: bool = False) -> None:
        super().__init__()
        if output_fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output_fmt: expected one of {list(OUTPUT_FORMATS)} (5-D video features), "
                             f"got {output_fmt!r}")
        indices = stage_indices(len(model.layers), out_indices)
        model.prune_intermediate_layers(list(indices), prune_norm=not norm)
        self.model = model
        self.out_indices = indices
        self.output_fmt = output_fmt
        self.norm = norm
        self.feature_info = FeatureInfo(model.feature_info, indices)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(self.out_indices), norm=self.norm,
                                                output_fmt=self.output_fmt, intermediates_only=True,
                                                stop_early=True)
