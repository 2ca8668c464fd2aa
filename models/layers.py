"""Building blocks of Video-FocalNet that work on channels-last video tokens ``(B, T, H, W, C)``.

The original keeps tokens as ``(B*T, H*W, C)`` and permutes to channels-first for every convolution and back.
Here every layer takes and returns the same channels-last 5-D layout, and convolutions run on a *permuted
view* of it: ``(B*T, C, H, W)`` for spatial kernels and ``(B, C, T, H*W)`` for temporal ones. Both views are
exactly PyTorch's ``channels_last`` memory format, so oneDNN/cuDNN convolve them without a copy. The
subclasses below keep the parameter names and shapes of the original's ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear``
modules (and their default initialisation), so checkpoints load unchanged; only their ``forward`` differs.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F


def fx_traced(x: torch.Tensor) -> bool:
    """True when ``x`` is a symbolic ``torch.fx`` value: the model is being traced (torchvision's
    ``create_feature_extractor``, timm's FX features), not run.

    Symbolic tracing cannot branch on a tensor's device, rank or size: the code below takes its generic path
    then, which computes the same values (it is what the graph records). torch.export and torch.compile pass
    real or fake tensors, so they keep the fast paths and the checks. An ``isinstance`` test, because it runs
    for every layer of every forward.
    """
    if torch.jit.is_scripting():
        # TorchScript cannot compile the Proxy type; a scripted layer is never traced symbolically
        return False
    return isinstance(x, torch.fx.Proxy)


def _as_nchw(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) -> (N, C, H, W) view: channels_last memory format when ``x`` is contiguous."""
    return x.permute(0, 3, 1, 2)


def _as_nhwc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W, C) view (contiguous when ``x`` is channels_last)."""
    return x.permute(0, 2, 3, 1)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear`` over the last dim of channels-last tokens ``(B, T, H, W, C)``.

    On CPU it runs as a 1x1 convolution of the channels_last view, which PyTorch hands to oneDNN; on the
    AMD EPYC machine of the benchmarks that is 1.3-2.4x faster than the MKL GEMM behind ``F.linear``
    (same result up to float rounding). On other devices, for other input ranks, or while ``torch.fx`` traces,
    it is ``F.linear``.
    """
    if fx_traced(x) or x.device.type != 'cpu' or x.ndim != 5:
        return F.linear(x, weight, bias)
    B, T, H, W, C = x.shape
    y = F.conv2d(_as_nchw(x.reshape(B * T, H, W, C)), weight[:, :, None, None], bias)
    return _as_nhwc(y).reshape(B, T, H, W, weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and initialisation) that applies ``linear`` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class TemporalConv(nn.Conv1d):
    """Dense temporal convolution (the original's ``Conv1d`` on ``(B*H*W, C, T)``) on ``(B, T, H, W, C)``.

    The ``(C_out, C_in, k)`` weight is used as a ``(k, 1)`` 2-D kernel on the ``(B, C, T, H*W)`` view of the
    tokens, which is in channels_last format: the same computation without the
    ``(b t) h w c -> (b h w) c t`` rearrange and its copies. (A ``(k, 1, 1)`` Conv3d would do too, but
    PyTorch sends 1x1-spatial 3-D kernels to a slow non-oneDNN path when running single-threaded.)
    Zero padding along time keeps the length, as in the original.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H, W, C = x.shape
        y = F.conv2d(_as_nchw(x.reshape(B, T, H * W, C)), self.weight.unsqueeze(-1), self.bias,
                     padding=(self.padding[0], 0))
        return _as_nhwc(y).reshape(B, T, H, W, self.out_channels)


class DepthwiseSpatialConv(nn.Conv2d):
    """Depthwise spatial convolution of every frame (the original's ``Conv2d(groups=C)``) on ``(B, T, H, W, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H, W, C = x.shape
        y = F.conv2d(_as_nchw(x.reshape(B * T, H, W, C)), self.weight, self.bias, padding=self.padding,
                     groups=self.groups)
        return _as_nhwc(y).reshape(B, T, H, W, self.out_channels)


class DepthwiseSpatioTemporalConv(nn.Conv3d):
    """Depthwise 3-D convolution over (time, height, width) of ``(B, T, H, W, C)`` tokens (the ``joint`` design).

    Runs on the ``(B, C, T, H, W)`` view, which is channels_last_3d for contiguous tokens.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv3d(x.permute(0, 4, 1, 2, 3), self.weight, self.bias, padding=self.padding, groups=self.groups)
        return y.permute(0, 2, 3, 4, 1)


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 ``Conv2d`` (the original's ``h``) applied as a linear map over the channels of ``(..., C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight.flatten(1), self.bias)


class PointwiseConv1d(nn.Conv1d):
    """A kernel-1 ``Conv1d`` (the original's ``h_temporal``) applied as a linear map over the channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight.flatten(1), self.bias)


class Mlp(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout (timm's ``Mlp``, same parameter names).

    Args:
        dim: input and output channels.
        hidden_dim: hidden channels.
        drop: dropout probability after the activation and after the output projection.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


DROP_PATH_MODES = ('video', 'frame')


class DropPath(nn.Module):
    """Stochastic depth on ``(B, T, H, W, C)`` tokens; kept samples are rescaled by ``1 / (1 - p)`` (as timm).

    Args:
        drop_prob: probability of dropping the residual branch.
        mode: ``'video'`` draws one keep/drop decision per clip (all frames of a clip share it);
            ``'frame'`` draws one per frame, which is what the original does because its batch dimension
            is ``B*T`` frames.
    """

    def __init__(self, drop_prob: float = 0., mode: str = 'video') -> None:
        super().__init__()
        if mode not in DROP_PATH_MODES:
            raise ValueError(f"drop_path_mode: expected one of {list(DROP_PATH_MODES)}, got {mode!r}")
        if not 0. <= drop_prob < 1.:
            raise ValueError(f"drop_path: expected a probability in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1. - self.drop_prob
        lead = 1 if self.mode == 'video' else 2
        # out-of-place ops only: this runs inside (selectively) checkpointed, possibly compiled regions
        mask = torch.bernoulli(x.new_full(x.shape[:lead] + (1,) * (x.ndim - lead), keep))
        return x * (mask / keep)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}, mode={self.mode!r}'


class PatchEmbed(nn.Module):
    """Patch embedding of the stem and of the downsamplers between stages (the original's ``PatchEmbed``).

    Input ``(B, T, C_in, H, W)`` for the stem (``is_stem=True``), ``(B, T, H, W, C_in)`` tokens otherwise;
    output ``(B, T', H', W', C_out)`` tokens. Inputs whose H or W is not a multiple of ``patch_size`` are
    zero-padded at the bottom/right first, as in the original.

    Args:
        patch_size: stride of the embedding (4 for the stem, 2 for downsamplers).
        in_chans: input channels.
        embed_dim: output channels.
        use_conv_embed: overlapping convolutions (7x7 stride 4 pad 2 for the stem, 3x3 stride 2 pad 1
            for downsamplers) instead of non-overlapping patches.
        norm: LayerNorm after the projection.
        is_stem: the first embedding of the network (reads pixels).
        tubelet_size: frames merged into one token (stem only); > 1 uses a Conv3d with temporal kernel and
            stride ``tubelet_size``. With ``use_conv_embed`` the original could not build this combination;
            here it is the Conv3d with the overlapping spatial kernel.
    """

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, use_conv_embed: bool = False,
                 norm: bool = True, is_stem: bool = False, tubelet_size: int = 1) -> None:
        super().__init__()
        if tubelet_size > 1 and not is_stem:
            raise ValueError("tubelet_size > 1 is only meaningful for the stem")
        self.patch_size = patch_size
        self.is_stem = is_stem
        self.tubelet_size = tubelet_size
        if use_conv_embed:
            kernel, stride, padding = (7, 4, 2) if is_stem else (3, 2, 1)
        else:
            kernel, stride, padding = patch_size, patch_size, 0
        if tubelet_size == 1:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel, stride=stride, padding=padding)
        else:
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet_size, kernel, kernel),
                                  stride=(tubelet_size, stride, stride), padding=(0, padding, padding))
        self.norm: Optional[nn.LayerNorm] = nn.LayerNorm(embed_dim) if norm else None

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        pad_w = (-W) % self.patch_size
        pad_h = (-H) % self.patch_size
        # a zero pad would copy every frame; under FX the sizes are symbolic, so the traced graph always pads
        if fx_traced(x) or pad_w or pad_h:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_stem:
            B, T = x.shape[:2]
            if self.tubelet_size == 1:
                # frames folded into the batch; channels_last makes the conv output channels-last directly
                x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last)
                x = self.proj(self._pad(x))
                x = x.permute(0, 2, 3, 1).reshape(B, T, x.shape[2], x.shape[3], x.shape[1])
            else:
                x = self.proj(self._pad(x.transpose(1, 2)))
                x = x.permute(0, 2, 3, 4, 1)  # (B, C, T', H', W') -> (B, T', H', W', C)
        else:
            B, T, H, W, C = x.shape
            x = x.reshape(B * T, H, W, C).permute(0, 3, 1, 2)  # channels_last view, no copy
            x = self.proj(self._pad(x))
            x = x.permute(0, 2, 3, 1).reshape(B, T, x.shape[2], x.shape[3], x.shape[1])
        if self.norm is not None:
            x = self.norm(x)
        return x
