"""Straightforward reference implementation of the original Video-FocalNet (numerical ground truth).

This file follows the original's order of operations exactly (spec section 1.6): frames folded into the
batch, an explicit copy of the normalised tokens for the temporal branch, ``(b t) h w c -> (b h w) t c``
rearranges (written with reshape/permute, no einops), a dense ``Conv1d`` per temporal focal level on
``(B*H*W, C, T)``, levels stacked sequentially, GELU global context, ``q * modulator * modulator_temporal``.
It has the same state-dict keys as the released checkpoints. It is deliberately *not* optimised: the tests
compare ``models/`` against it for every option, and ``benchmarks/model.py`` uses it as the baseline.

Differences from the original (none changes a number): no einops, no tensors stored on modules, the
per-block H/W are passed as arguments instead of being assigned onto the block, and the combination of a
convolutional stem with tubelets (which the original cannot build) is given the natural Conv3d form.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """timm's DropPath on dim 0 (here: frames, as in the original)."""
    if p == 0. or not training:
        return x
    keep = 1 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class RefModulation(nn.Module):
    def __init__(self, dim, focal_window, focal_level, focal_factor=2, proj_drop=0.,
                 use_postln_in_modulation=False, normalize_modulator=False, num_frames=8):
        super().__init__()
        self.focal_level = focal_level
        self.use_postln_in_modulation = use_postln_in_modulation
        self.normalize_modulator = normalize_modulator
        self.num_frames = num_frames

        self.f = nn.Linear(dim, 2 * dim + (focal_level + 1), bias=True)
        self.h = nn.Conv2d(dim, dim, kernel_size=1, stride=1, bias=True)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.focal_layers = nn.ModuleList()
        for k in range(focal_level):
            ks = focal_factor * k + focal_window
            self.focal_layers.append(nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size=ks, stride=1, groups=dim, padding=ks // 2, bias=False),
                nn.GELU()))
        self.f_temporal = nn.Linear(dim, dim + (focal_level + 1), bias=True)
        self.h_temporal = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=True)
        self.focal_layers_temporal = nn.ModuleList()
        for k in range(focal_level):
            ks = focal_factor * k + focal_window
            self.focal_layers_temporal.append(nn.Sequential(
                nn.Conv1d(dim, dim, kernel_size=ks, stride=1, padding=ks // 2, bias=False),
                nn.GELU()))
        if use_postln_in_modulation:
            self.ln = nn.LayerNorm(dim)

    def forward(self, x):
        """x: (B*T, H, W, C) -> (B*T, H, W, C)."""
        BT, H, W, C = x.shape
        t = self.num_frames
        b = BT // t
        L = self.focal_level

        # temporal branch: '(b t) h w c -> (b h w) t c'
        x_temporal = x.clone()
        x_temporal = x_temporal.reshape(b, t, H, W, C).permute(0, 2, 3, 1, 4).reshape(b * H * W, t, C)
        x_temporal = self.f_temporal(x_temporal).permute(0, 2, 1).contiguous()
        ctx_temporal, gates_temporal = torch.split(x_temporal, (C, L + 1), 1)
        ctx_all_temporal = 0
        for level in range(L):
            ctx_temporal = self.focal_layers_temporal[level](ctx_temporal)
            ctx_all_temporal = ctx_all_temporal + ctx_temporal * gates_temporal[:, level:level + 1]
        ctx_global_temporal = self.act(ctx_temporal.mean(2, keepdim=True))
        ctx_all_temporal = ctx_all_temporal + ctx_global_temporal * gates_temporal[:, L:]

        # spatial branch
        x = self.f(x).permute(0, 3, 1, 2).contiguous()
        q, ctx, gates = torch.split(x, (C, C, L + 1), 1)
        ctx_all = 0
        for level in range(L):
            ctx = self.focal_layers[level](ctx)
            ctx_all = ctx_all + ctx * gates[:, level:level + 1]
        ctx_global = self.act(ctx.mean(2, keepdim=True).mean(3, keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, L:]

        if self.normalize_modulator:
            ctx_all = ctx_all / (L + 1)
            ctx_all_temporal = ctx_all_temporal / (L + 1)

        modulator_temporal = self.h_temporal(ctx_all_temporal)
        # '(b h w) c t -> (b t) c h w'
        modulator_temporal = modulator_temporal.reshape(b, H, W, C, t).permute(0, 4, 3, 1, 2).reshape(BT, C, H, W)
        modulator = self.h(ctx_all)
        x_out = q * modulator * modulator_temporal
        x_out = x_out.permute(0, 2, 3, 1).contiguous()
        if self.use_postln_in_modulation:
            x_out = self.ln(x_out)
        x_out = self.proj(x_out)
        x_out = self.proj_drop(x_out)
        return x_out


class RefBlock(nn.Module):
    def __init__(self, dim, mlp_ratio=4., drop=0., drop_path=0., focal_level=2, focal_window=3, focal_factor=2,
                 use_layerscale=False, layerscale_value=1e-4, use_postln=False, use_postln_in_modulation=False,
                 normalize_modulator=False, num_frames=8):
        super().__init__()
        self.use_postln = use_postln
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = RefModulation(dim, focal_window, focal_level, focal_factor, drop,
                                        use_postln_in_modulation, normalize_modulator, num_frames)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = RefMlp(dim, int(dim * mlp_ratio), drop)
        self.gamma_1 = 1.0
        self.gamma_2 = 1.0
        if use_layerscale:
            self.gamma_1 = nn.Parameter(layerscale_value * torch.ones(dim))
            self.gamma_2 = nn.Parameter(layerscale_value * torch.ones(dim))

    def forward(self, x, H, W):
        B, L, C = x.shape
        shortcut = x
        x = x if self.use_postln else self.norm1(x)
        x = x.view(B, H, W, C)
        x = self.modulation(x).view(B, H * W, C)
        x = x if not self.use_postln else self.norm1(x)
        x = shortcut + _drop_path(self.gamma_1 * x, self.drop_path, self.training)
        y = self.norm2(self.mlp(x)) if self.use_postln else self.mlp(self.norm2(x))
        x = x + _drop_path(self.gamma_2 * y, self.drop_path, self.training)
        return x


class RefPatchEmbed(nn.Module):
    def __init__(self, patch_size=4, in_chans=3, embed_dim=96, use_conv_embed=False, norm=True, is_stem=False,
                 tubelet_size=1):
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        if use_conv_embed:
            k, s, p = (7, 4, 2) if is_stem else (3, 2, 1)
        else:
            k, s, p = patch_size, patch_size, 0
        if tubelet_size == 1:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=k, stride=s, padding=p)
        else:
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet_size, k, k),
                                  stride=(tubelet_size, s, s), padding=(0, p, p))
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x):
        H, W = x.shape[-2:]
        if W % self.patch_size != 0:
            x = F.pad(x, (0, self.patch_size - W % self.patch_size))
        if H % self.patch_size != 0:
            x = F.pad(x, (0, 0, 0, self.patch_size - H % self.patch_size))
        if self.tubelet_size == 1:
            x = self.proj(x)
        else:
            # (B, T, C, H, W) -> (B, C, T, H, W) -> conv3d -> (B*T', C, H', W')
            x = self.proj(x.permute(0, 2, 1, 3, 4))
            x = x.permute(0, 2, 1, 3, 4).reshape(-1, x.shape[1], x.shape[3], x.shape[4])
        H, W = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, H, W


class RefLayer(nn.Module):
    def __init__(self, dim, out_dim, depth, mlp_ratio, drop, drop_path: Sequence[float], downsample: bool,
                 focal_level, focal_window, focal_factor, use_conv_embed, use_layerscale, layerscale_value,
                 use_postln, use_postln_in_modulation, normalize_modulator, num_frames):
        super().__init__()
        self.blocks = nn.ModuleList([
            RefBlock(dim, mlp_ratio, drop, drop_path[i], focal_level, focal_window, focal_factor, use_layerscale,
                     layerscale_value, use_postln, use_postln_in_modulation, normalize_modulator, num_frames)
            for i in range(depth)])
        if downsample:
            self.downsample = RefPatchEmbed(2, dim, out_dim, use_conv_embed, norm=True, is_stem=False)
        else:
            self.downsample = None

    def forward(self, x, H, W):
        for blk in self.blocks:
            x = blk(x, H, W)
        if self.downsample is not None:
            x = x.transpose(1, 2).reshape(x.shape[0], -1, H, W)
            x, H, W = self.downsample(x)
        return x, H, W


class ReferenceVideoFocalNet(nn.Module):
    """The original ``VideoFocalNet`` (same constructor names; frame count fixed at build time)."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=400, embed_dim=96,
                 depths: Sequence[int] = (2, 2, 6, 2), mlp_ratio=4., drop_rate=0., drop_path_rate=0.1,
                 patch_norm=True, focal_levels: Sequence[int] = (2, 2, 2, 2),
                 focal_windows: Sequence[int] = (3, 3, 3, 3), focal_factors: Sequence[int] = (2, 2, 2, 2),
                 use_conv_embed=False, use_layerscale=False, layerscale_value=1e-4, use_postln=False,
                 use_postln_in_modulation=False, normalize_modulator=False, num_frames=8, tubelet_size=1):
        super().__init__()
        self.num_layers = len(depths)
        dims: List[int] = [embed_dim * (2 ** i) for i in range(self.num_layers)]
        self.num_classes = num_classes
        self.num_features = dims[-1]
        self.tubelet_size = tubelet_size
        self.num_frames = num_frames // tubelet_size
        self.patch_embed = RefPatchEmbed(patch_size, in_chans, dims[0], use_conv_embed, norm=patch_norm,
                                         is_stem=True, tubelet_size=tubelet_size)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(RefLayer(
                dims[i], dims[i + 1] if i < self.num_layers - 1 else None, depths[i], mlp_ratio, drop_rate,
                dpr[sum(depths[:i]):sum(depths[:i + 1])], i < self.num_layers - 1, focal_levels[i],
                focal_windows[i], focal_factors[i], use_conv_embed, use_layerscale, layerscale_value, use_postln,
                use_postln_in_modulation, normalize_modulator, self.num_frames))
        self.norm = nn.LayerNorm(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02, a=-2., b=2.)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward_features(self, x):
        if self.tubelet_size == 1:
            x = x.reshape(-1, *x.shape[2:])  # 'b t c h w -> (b t) c h w'
        x, H, W = self.patch_embed(x)
        x = self.pos_drop(x)
        for layer in self.layers:
            x, H, W = layer(x, H, W)
        x = self.norm(x)
        x = self.avgpool(x.transpose(1, 2))
        return torch.flatten(x, 1)

    def forward(self, x):
        B = x.shape[0]
        x = self.forward_features(x)
        x = x.view(B, self.num_frames, -1).mean(dim=1)
        return self.head(x)
