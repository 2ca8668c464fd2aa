"""Spatio-temporal focal modulation (the original's ``SpatioTemporalFocalModulation``) on channels-last video.

Same parameters, same arithmetic (spec section 1.6), different data movement:

* tokens stay ``(B, T, H, W, C)``; the original's ``(b t) h w c -> (b h w) t c`` and back rearranges,
  the ``torch.clone`` of the input and the channels-first ``permute().contiguous()`` copies are gone;
* the dense temporal ``Conv1d`` levels and the depthwise spatial levels convolve permuted views of the
  same tensor (see ``models/layers.py``);
* ``f`` and ``f_temporal`` read the same normalised tokens, so they run as one matrix product with their
  weights concatenated on the fly (their parameters and state-dict keys stay separate);
* the frame count is read from the input, so one model handles clips of any length;
* gates and modulators are returned on request instead of being stored on the module.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import DepthwiseSpatialConv, PointwiseConv1d, PointwiseConv2d, TemporalConv


class SpatioTemporalFocalModulation(nn.Module):
    """Focal modulation with a spatial branch (per frame) and a temporal branch (per pixel), multiplied.

    Args:
        dim: channels C.
        focal_window: kernel size of the first focal level.
        focal_level: number of focal levels L; level l uses kernel ``focal_factor * l + focal_window``.
        focal_factor: kernel growth per level.
        proj_drop: dropout after the output projection.
        use_postln_in_modulation: LayerNorm before the output projection.
        normalize_modulator: divide both aggregated contexts by L + 1.
    """

    def __init__(self, dim: int, focal_window: int = 3, focal_level: int = 2, focal_factor: int = 2,
                 proj_drop: float = 0., use_postln_in_modulation: bool = False,
                 normalize_modulator: bool = False) -> None:
        super().__init__()
        if focal_level < 1:
            raise ValueError(f"focal_level: expected >= 1, got {focal_level}")
        self.dim = dim
        self.focal_window = focal_window
        self.focal_level = focal_level
        self.focal_factor = focal_factor
        self.use_postln_in_modulation = use_postln_in_modulation
        self.normalize_modulator = normalize_modulator

        # registration order as in the original (state-dict key order)
        self.f = nn.Linear(dim, 2 * dim + (focal_level + 1), bias=True)
        self.h = PointwiseConv2d(dim, dim, kernel_size=1, stride=1, bias=True)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.kernel_sizes = [focal_factor * k + focal_window for k in range(focal_level)]
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            # 'same' padding k // 2 only keeps the size for odd kernels (the original crashed on even ones)
            raise ValueError(f"focal kernels must be odd and positive: focal_window {focal_window} and "
                             f"focal_factor {focal_factor} give kernel sizes {self.kernel_sizes}")
        self.focal_layers = nn.ModuleList([
            nn.Sequential(DepthwiseSpatialConv(dim, dim, kernel_size=k, stride=1, groups=dim, padding=k // 2,
                                               bias=False), nn.GELU())
            for k in self.kernel_sizes])
        self.f_temporal = nn.Linear(dim, dim + (focal_level + 1), bias=True)
        self.h_temporal = PointwiseConv1d(dim, dim, kernel_size=1, stride=1, bias=True)
        self.focal_layers_temporal = nn.ModuleList([
            nn.Sequential(TemporalConv(dim, dim, kernel_size=k, stride=1, padding=k // 2, bias=False), nn.GELU())
            for k in self.kernel_sizes])
        self.ln: Optional[nn.LayerNorm] = nn.LayerNorm(dim) if use_postln_in_modulation else None

    def forward(self, x: torch.Tensor, return_modulators: bool = False
                ) -> torch.Tensor | Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """x: normalised tokens (B, T, H, W, C) -> (B, T, H, W, C) [, gates and modulators]."""
        C, L = self.dim, self.focal_level
        weight = torch.cat((self.f.weight, self.f_temporal.weight))
        bias = torch.cat((self.f.bias, self.f_temporal.bias))
        q, ctx, gates, ctx_t, gates_t = F.linear(x, weight, bias).split((C, C, L + 1, C, L + 1), dim=-1)

        # temporal branch: stacked dense temporal convolutions, gated, plus a clip-level global context
        ctx_all_t = 0
        for level, layer in enumerate(self.focal_layers_temporal):
            ctx_t = layer(ctx_t)
            ctx_all_t = ctx_all_t + ctx_t * gates_t[..., level:level + 1]
        ctx_all_t = ctx_all_t + self.act(ctx_t.mean(1, keepdim=True)) * gates_t[..., L:]

        # spatial branch: stacked depthwise convolutions per frame, gated, plus a frame-level global context
        ctx_all = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[..., level:level + 1]
        ctx_all = ctx_all + self.act(ctx.mean((2, 3), keepdim=True)) * gates[..., L:]

        if self.normalize_modulator:
            ctx_all = ctx_all / (L + 1)
            ctx_all_t = ctx_all_t / (L + 1)

        modulator_t = self.h_temporal(ctx_all_t)
        modulator = self.h(ctx_all)
        out = q * modulator * modulator_t
        if self.ln is not None:
            out = self.ln(out)
        out = self.proj_drop(self.proj(out))
        if not return_modulators:
            return out
        extras = dict(modulator=modulator, modulator_temporal=modulator_t,
                      gates=gates.contiguous(), gates_temporal=gates_t.contiguous())
        return out, extras

    def extra_repr(self) -> str:
        return f'dim={self.dim}, kernel_sizes={self.kernel_sizes}'
