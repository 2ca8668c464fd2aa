"""Focal modulations on channels-last video tokens ``(B, T, H, W, C)``: the released spatio-temporal one and
the single-context ones of the design space (``MODEL.FOCAL.DESIGN``).

``SpatioTemporalFocalModulation`` (design ``parallel``) is the original's. Same parameters, same arithmetic
(spec section 1.6), different data movement:

* tokens stay ``(B, T, H, W, C)``; the original's ``(b t) h w c -> (b h w) t c`` and back rearranges,
  the ``torch.clone`` of the input and the channels-first ``permute().contiguous()`` copies are gone;
* the dense temporal ``Conv1d`` levels and the depthwise spatial levels convolve permuted views of the
  same tensor (see ``models/layers.py``);
* ``f`` and ``f_temporal`` read the same normalised tokens, so they run as one matrix product with their
  weights concatenated on the fly (their parameters and state-dict keys stay separate);
* the frame count is read from the input, so one model handles clips of any length;
* gates and modulators are returned on request instead of being stored on the module.

``FocalModulation`` is one query, one context and one modulator, as in the 2-D FocalNet; its subclasses
differ only in the context aggregation: per-frame depthwise 2-D kernels (``SpatialFocalModulation``, the 2-D
FocalNet's, same parameter names), dense temporal kernels per position (``TemporalFocalModulation``, the
kernels of the released temporal branch) or depthwise 3-D kernels (``JointFocalModulation``).
"""
from __future__ import annotations

import abc
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .layers import (DepthwiseSpatialConv, DepthwiseSpatioTemporalConv, Linear, PointwiseConv1d, PointwiseConv2d,
                     TemporalConv, linear)

Extras = Dict[str, torch.Tensor]


def focal_kernel_sizes(focal_window: int, focal_level: int, focal_factor: int) -> List[int]:
    """Kernel of each focal level, ``focal_factor * l + focal_window``; they must be odd and positive."""
    if focal_level < 1:
        raise ValueError(f"focal_level: expected >= 1, got {focal_level}")
    sizes = [focal_factor * k + focal_window for k in range(focal_level)]
    if any(k < 1 or k % 2 == 0 for k in sizes):
        # 'same' padding k // 2 only keeps the size for odd kernels (the original crashed on even ones)
        raise ValueError(f"focal kernels must be odd and positive: focal_window {focal_window} and "
                         f"focal_factor {focal_factor} give kernel sizes {sizes}")
    return sizes


def _gated_sum(levels: nn.ModuleList, ctx: torch.Tensor, gates: torch.Tensor, act: nn.Module,
               dims: Tuple[int, ...]) -> torch.Tensor:
    """sum_l levels[l](...levels[0](ctx)) * gates[..., l] + act(mean over ``dims`` of the last level) * gates[..., L].

    Levels are stacked (each convolves the previous level's output); each gate is one scalar per token,
    broadcast over channels. ``addcmul`` does each multiply-add in one pass.
    """
    ctx = levels[0](ctx)
    ctx_all = ctx * gates[..., 0:1]
    for level in range(1, len(levels)):
        ctx = levels[level](ctx)
        ctx_all = torch.addcmul(ctx_all, ctx, gates[..., level:level + 1])
    return torch.addcmul(ctx_all, act(ctx.mean(dims, keepdim=True)), gates[..., len(levels):])


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
        self.kernel_sizes = focal_kernel_sizes(focal_window, focal_level, focal_factor)
        self.dim = dim
        self.focal_window = focal_window
        self.focal_level = focal_level
        self.focal_factor = focal_factor
        self.use_postln_in_modulation = use_postln_in_modulation
        self.normalize_modulator = normalize_modulator

        # registration order as in the original (state-dict key order)
        self.f = Linear(dim, 2 * dim + (focal_level + 1), bias=True)
        self.h = PointwiseConv2d(dim, dim, kernel_size=1, stride=1, bias=True)
        self.act = nn.GELU()
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.focal_layers = nn.ModuleList([
            nn.Sequential(DepthwiseSpatialConv(dim, dim, kernel_size=k, stride=1, groups=dim, padding=k // 2,
                                               bias=False), nn.GELU())
            for k in self.kernel_sizes])
        self.f_temporal = Linear(dim, dim + (focal_level + 1), bias=True)
        self.h_temporal = PointwiseConv1d(dim, dim, kernel_size=1, stride=1, bias=True)
        self.focal_layers_temporal = nn.ModuleList([
            nn.Sequential(TemporalConv(dim, dim, kernel_size=k, stride=1, padding=k // 2, bias=False), nn.GELU())
            for k in self.kernel_sizes])
        self.ln: Optional[nn.LayerNorm] = nn.LayerNorm(dim) if use_postln_in_modulation else None

    def forward(self, x: torch.Tensor, return_modulators: bool = False
                ) -> torch.Tensor | Tuple[torch.Tensor, Extras]:
        """x: normalised tokens (B, T, H, W, C) -> (B, T, H, W, C) [, gates and modulators]."""
        C, L = self.dim, self.focal_level
        weight = torch.cat((self.f.weight, self.f_temporal.weight))
        bias = torch.cat((self.f.bias, self.f_temporal.bias))
        q, ctx, gates, ctx_t, gates_t = linear(x, weight, bias).split((C, C, L + 1, C, L + 1), dim=-1)

        # temporal branch: stacked dense temporal convolutions, gated, plus a clip-level global context
        # (mean over time); spatial branch: stacked depthwise convolutions per frame, gated, plus a
        # frame-level global context (mean over space)
        ctx_all_t = _gated_sum(self.focal_layers_temporal, ctx_t, gates_t, self.act, dims=(1,))
        ctx_all = _gated_sum(self.focal_layers, ctx, gates, self.act, dims=(2, 3))

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


class FocalModulation(nn.Module, abc.ABC):
    """One focal modulation: ``proj(q * h(sum_l gate_l * ctx_l + gate_L * global ctx))`` (FocalNet's).

    Subclasses choose the context aggregation (``_context_conv``: the convolution of one focal level,
    ``_pointwise``: the modulator map ``h``, ``GLOBAL_DIMS``: the token dims the global context averages).
    Registration order and names are the 2-D FocalNet's (``f``, ``h``, ``proj``, ``focal_layers``, ``ln``),
    so a spatial one takes the ImageNet tensors as they are.

    Args: as ``SpatioTemporalFocalModulation``.
    """

    GLOBAL_DIMS: Tuple[int, ...] = (2, 3)

    def __init__(self, dim: int, focal_window: int = 3, focal_level: int = 2, focal_factor: int = 2,
                 proj_drop: float = 0., use_postln_in_modulation: bool = False,
                 normalize_modulator: bool = False) -> None:
        super().__init__()
        self.kernel_sizes = focal_kernel_sizes(focal_window, focal_level, focal_factor)
        self.dim = dim
        self.focal_level = focal_level
        self.normalize_modulator = normalize_modulator
        self.f = Linear(dim, 2 * dim + (focal_level + 1), bias=True)
        self.h = self._pointwise(dim)
        self.act = nn.GELU()
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.focal_layers = nn.ModuleList([nn.Sequential(self._context_conv(dim, k), nn.GELU())
                                           for k in self.kernel_sizes])
        self.ln: Optional[nn.LayerNorm] = nn.LayerNorm(dim) if use_postln_in_modulation else None

    @staticmethod
    @abc.abstractmethod
    def _context_conv(dim: int, kernel_size: int) -> nn.Module:
        """The convolution of one focal level (each design's own); abstract, so the base cannot be built."""

    @staticmethod
    def _pointwise(dim: int) -> nn.Module:
        return PointwiseConv2d(dim, dim, kernel_size=1, stride=1, bias=True)

    def forward(self, x: torch.Tensor, return_modulators: bool = False
                ) -> torch.Tensor | Tuple[torch.Tensor, Extras]:
        """x: normalised tokens (B, T, H, W, C) -> (B, T, H, W, C) [, gates and modulator]."""
        C, L = self.dim, self.focal_level
        q, ctx, gates = self.f(x).split((C, C, L + 1), dim=-1)
        ctx_all = _gated_sum(self.focal_layers, ctx, gates, self.act, dims=self.GLOBAL_DIMS)
        if self.normalize_modulator:
            ctx_all = ctx_all / (L + 1)
        modulator = self.h(ctx_all)
        out = q * modulator
        if self.ln is not None:
            out = self.ln(out)
        out = self.proj_drop(self.proj(out))
        if not return_modulators:
            return out
        return out, dict(modulator=modulator, gates=gates.contiguous())

    def extra_repr(self) -> str:
        return f'dim={self.dim}, kernel_sizes={self.kernel_sizes}'


class SpatialFocalModulation(FocalModulation):
    """The 2-D FocalNet's modulation applied to every frame: depthwise k x k kernels, global context per frame."""

    GLOBAL_DIMS = (2, 3)

    @staticmethod
    def _context_conv(dim: int, kernel_size: int) -> nn.Module:
        return DepthwiseSpatialConv(dim, dim, kernel_size=kernel_size, stride=1, groups=dim,
                                    padding=kernel_size // 2, bias=False)


class TemporalFocalModulation(FocalModulation):
    """Focal modulation along time at every position, with its own query: the released temporal branch's
    dense ``C x C x k`` kernels and kernel-1 ``h``; global context = mean over the clip."""

    GLOBAL_DIMS = (1,)

    @staticmethod
    def _context_conv(dim: int, kernel_size: int) -> nn.Module:
        return TemporalConv(dim, dim, kernel_size=kernel_size, stride=1, padding=kernel_size // 2, bias=False)

    @staticmethod
    def _pointwise(dim: int) -> nn.Module:
        return PointwiseConv1d(dim, dim, kernel_size=1, stride=1, bias=True)


class JointFocalModulation(FocalModulation):
    """One spatio-temporal context: depthwise k x k x k kernels over (time, height, width), global context =
    mean over the whole clip."""

    GLOBAL_DIMS = (1, 2, 3)

    @staticmethod
    def _context_conv(dim: int, kernel_size: int) -> nn.Module:
        return DepthwiseSpatioTemporalConv(dim, dim, kernel_size=kernel_size, stride=1, groups=dim,
                                           padding=kernel_size // 2, bias=False)
