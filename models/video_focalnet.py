"""Video-FocalNet (Wasim et al., ICCV 2023): spatio-temporal focal modulation for video recognition.

Numerically the original ``classification/videofocalnet.py`` (fp32 outputs equal to within float rounding,
checked against a reference implementation in ``tests/``), with the same constructor arguments and the same
state-dict keys and shapes as the released checkpoints. Differences from the original:

* Layout: tokens are kept channels-last as ``(B, T, H, W, C)`` end to end; convolutions run on permuted
  views (channels_last / channels_last_3d memory format). No ``torch.clone``, no einops rearranges,
  no ``permute().contiguous()`` round trips. ``f`` and ``f_temporal`` run as one matrix product.
* The frame count is taken from the input: a model built for 8 frames runs 16-frame clips too
  (any multiple of ``tubelet_size``). ``num_frames`` only records the clip length it was built for.
* Nothing is stored on modules during ``forward``; ``forward(x, return_modulators=True)`` returns the
  gates and modulators of every block instead (for visualisation).
* ``drop_rate`` is honoured (the original never forwarded ``MODEL.DROP_RATE``) with the original's meaning:
  dropout after the stem (``pos_drop``), in the MLPs and after each modulation's projection. Dropout
  before the head, which the original did not have, is a separate ``head_drop_rate`` (default 0).
* ``drop_path_mode='video'`` (default) draws stochastic depth once per clip; ``'frame'`` reproduces the
  original, which drew it independently for every frame because frames were folded into the batch.
* Gradient checkpointing works (``set_grad_checkpointing``; the original's flag was never forwarded),
  using non-reentrant ``torch.utils.checkpoint``. By default, training uses *selective* activation
  checkpointing: only the outputs of convolutions and matrix products are kept for the backward pass and
  the cheap element-wise ops are recomputed (``selective_checkpoint=False`` turns it off).
* On CPU, the linear layers run as 1x1 convolutions of the channels-last tokens (oneDNN), which is
  faster than the MKL GEMM behind ``nn.Linear`` on the AMD CPUs we measured; same parameters.
* ``no_weight_decay()`` returns the names of all norm weights, biases and layerscale gammas (the original
  returned ``{''}`` as a *keyword*, which matched every parameter, so nothing decayed).
* Per-stage ``focal_factors`` can be set (the original fixed 2); embedding width, depths, MLP ratio,
  patch size, input channels and patch norm come from the caller instead of being hard-wired.
* ``use_conv_embed`` together with ``tubelet_size > 1`` builds (a Conv3d with the overlapping spatial
  kernel); the original crashed on that combination.
"""
from __future__ import annotations

import functools
import logging
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .focal_modulation import SpatioTemporalFocalModulation
from .layers import DROP_PATH_MODES, DropPath, Mlp, PatchEmbed

_logger = logging.getLogger(__name__)

Modulators = Dict[str, Dict[str, torch.Tensor]]

# Outputs of these ops are kept for the backward pass under selective checkpointing; everything else
# (GELU, LayerNorm, gating products and sums, means, copies) is recomputed from them.
_EXPENSIVE_OPS = frozenset({
    torch.ops.aten.convolution.default, torch.ops.aten.mm.default, torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default, torch.ops.aten.baddbmm.default})


def _keep_matmul_outputs(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _EXPENSIVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


_selective_checkpoint_context = functools.partial(create_selective_checkpoint_contexts, _keep_matmul_outputs)


class VideoFocalNetBlock(nn.Module):
    """Pre-LN (or post-LN) residual block: focal modulation, then an MLP.

    Args:
        dim: channels C.
        mlp_ratio: MLP hidden width relative to C.
        drop: dropout in the MLP and after the modulation's projection.
        drop_path: stochastic depth probability of both residual branches.
        drop_path_mode: ``'video'`` or ``'frame'`` (see ``DropPath``).
        focal_level, focal_window, focal_factor: focal modulation settings.
        use_layerscale: learnable per-channel scales ``gamma_1``/``gamma_2`` on both branches.
        layerscale_value: their initial value.
        use_postln: normalise the branch outputs instead of their inputs.
        use_postln_in_modulation: LayerNorm inside the modulation, before its projection.
        normalize_modulator: divide aggregated contexts by ``focal_level + 1``.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4., drop: float = 0., drop_path: float = 0.,
                 drop_path_mode: str = 'video', focal_level: int = 2, focal_window: int = 3, focal_factor: int = 2,
                 use_layerscale: bool = False, layerscale_value: float = 1e-4, use_postln: bool = False,
                 use_postln_in_modulation: bool = False, normalize_modulator: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.use_postln = use_postln
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = SpatioTemporalFocalModulation(
            dim, focal_window=focal_window, focal_level=focal_level, focal_factor=focal_factor, proj_drop=drop,
            use_postln_in_modulation=use_postln_in_modulation, normalize_modulator=normalize_modulator)
        self.drop_path = DropPath(drop_path, drop_path_mode) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        if use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, return_modulators: bool = False
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
        """x: (B, T, H, W, C) -> (B, T, H, W, C) [, gates and modulators of this block]."""
        y = self.modulation(x if self.use_postln else self.norm1(x), return_modulators)
        extras = None
        if return_modulators:
            y, extras = y
        if self.use_postln:
            y = self.norm1(y)
        if self.gamma_1 is not None:
            y = self.gamma_1 * y
        x = x + self.drop_path(y)

        y = self.norm2(self.mlp(x)) if self.use_postln else self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = self.gamma_2 * y
        x = x + self.drop_path(y)
        return (x, extras) if return_modulators else x


class VideoFocalNetStage(nn.Module):
    """A stage (the original's ``BasicLayer``): ``depth`` blocks, then an optional 2x spatial downsampler.

    In training, each block runs in one of three modes: plain autograd; *selective* checkpointing (the
    default), which keeps only the outputs of convolutions and matrix products and recomputes the
    element-wise ops in the backward pass (about 40% less activation memory for about 5% more time,
    identical results); or full gradient checkpointing (only the block input is kept, the whole block is
    recomputed).

    Args:
        dim: channels of the blocks.
        out_dim: channels after the downsampler (``None``: no downsampler, last stage).
        depth: number of blocks.
        drop_path: stochastic depth probability per block.
        use_conv_embed: overlapping 3x3 convolution in the downsampler.
        block_kwargs: forwarded to every ``VideoFocalNetBlock``.
    """

    def __init__(self, dim: int, out_dim: Optional[int], depth: int, drop_path: Sequence[float],
                 use_conv_embed: bool = False, **block_kwargs) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.selective_checkpointing = True
        self.blocks = nn.ModuleList([
            VideoFocalNetBlock(dim, drop_path=drop_path[i], **block_kwargs) for i in range(depth)])
        self.downsample = (PatchEmbed(patch_size=2, in_chans=dim, embed_dim=out_dim, use_conv_embed=use_conv_embed,
                                      norm=True, is_stem=False) if out_dim is not None else None)

    def forward(self, x: torch.Tensor, modulators: Optional[Modulators] = None, prefix: str = '') -> torch.Tensor:
        for j, blk in enumerate(self.blocks):
            if modulators is not None:
                x, modulators[f'{prefix}blocks.{j}'] = blk(x, return_modulators=True)
            elif self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            elif self.selective_checkpointing and torch.is_grad_enabled():
                # respect_saved_tensors_hooks: kept outputs go through hooks such as save_on_cpu, like any
                # other saved tensor
                x = checkpoint(blk, x, use_reentrant=False, context_fn=_selective_checkpoint_context,
                               respect_saved_tensors_hooks=True)
            else:
                x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


def _per_stage(name: str, value: Union[int, Sequence[int]], num_stages: int) -> List[int]:
    if isinstance(value, int):
        return [value] * num_stages
    value = list(value)
    if len(value) != num_stages:
        raise ValueError(f"{name}: expected one value per stage ({num_stages}), got {value}")
    return value


class VideoFocalNet(nn.Module):
    """Video-FocalNet classifier. Input ``(B, T, C_in, H, W)`` float, output ``(B, num_classes)`` logits.

    Args:
        img_size: input size the model is built for (used for documentation/FLOP counting; any size works).
        patch_size: stem stride.
        in_chans: input channels.
        num_classes: classes of the head (0: no head, ``forward`` returns pooled features).
        embed_dim: channels of the first stage; stage i has ``embed_dim * 2**i``.
        depths: blocks per stage.
        mlp_ratio: MLP hidden width relative to the block width.
        drop_rate: dropout after the stem, in MLPs and after modulation projections (the original's).
        drop_path_rate: stochastic depth, linearly increasing from 0 to this over all blocks.
        patch_norm: LayerNorm after the stem.
        use_checkpoint: gradient checkpointing of every block (see ``set_grad_checkpointing``).
        selective_checkpoint: selective activation checkpointing of every block in training (see
            ``set_selective_checkpointing``; less memory, same results, a little more time).
        focal_levels: focal levels per stage.
        focal_windows: first-level kernel per stage.
        focal_factors: kernel growth per level, per stage (the original fixed 2).
        use_conv_embed: overlapping convolutions in the stem and downsamplers.
        use_layerscale: learnable per-channel residual scales.
        layerscale_value: their initial value.
        use_postln: post-LN blocks.
        use_postln_in_modulation: LayerNorm inside the modulation.
        normalize_modulator: divide aggregated contexts by ``focal_level + 1``.
        num_frames: clip length (input frames) the model is built for; forward accepts any multiple of
            ``tubelet_size``.
        tubelet_size: frames merged into one token by the stem.
        drop_path_mode: ``'video'`` (one stochastic-depth draw per clip) or ``'frame'`` (the original).
        head_drop_rate: dropout on the pooled features before the head (not in the original).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 400,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), mlp_ratio: float = 4.,
                 drop_rate: float = 0., drop_path_rate: float = 0.1, patch_norm: bool = True,
                 use_checkpoint: bool = False, focal_levels: Union[int, Sequence[int]] = (2, 2, 2, 2),
                 focal_windows: Union[int, Sequence[int]] = (3, 3, 3, 3),
                 focal_factors: Union[int, Sequence[int]] = (2, 2, 2, 2), use_conv_embed: bool = False,
                 use_layerscale: bool = False, layerscale_value: float = 1e-4, use_postln: bool = False,
                 use_postln_in_modulation: bool = False, normalize_modulator: bool = False, num_frames: int = 8,
                 tubelet_size: int = 1, drop_path_mode: str = 'video', selective_checkpoint: bool = True,
                 head_drop_rate: float = 0.) -> None:
        super().__init__()
        depths = list(depths)
        num_stages = len(depths)
        if num_stages < 1 or any(d < 0 for d in depths):
            raise ValueError(f"depths: expected a non-empty list of block counts, got {depths}")
        focal_levels = _per_stage('focal_levels', focal_levels, num_stages)
        focal_windows = _per_stage('focal_windows', focal_windows, num_stages)
        focal_factors = _per_stage('focal_factors', focal_factors, num_stages)
        if tubelet_size < 1 or num_frames % tubelet_size:
            raise ValueError(f"num_frames ({num_frames}) must be a positive multiple of tubelet_size ({tubelet_size})")
        if drop_path_mode not in DROP_PATH_MODES:
            raise ValueError(f"drop_path_mode: expected one of {list(DROP_PATH_MODES)}, got {drop_path_mode!r}")

        dims = [embed_dim * 2 ** i for i in range(num_stages)]
        self.img_size = img_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_layers = num_stages
        self.embed_dim = dims
        self.num_features = dims[-1]
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.drop_rate = drop_rate

        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=dims[0],
                                      use_conv_embed=use_conv_embed, norm=patch_norm, is_stem=True,
                                      tubelet_size=tubelet_size)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            start = sum(depths[:i])
            self.layers.append(VideoFocalNetStage(
                dims[i], dims[i + 1] if i < num_stages - 1 else None, depths[i], dpr[start:start + depths[i]],
                use_conv_embed=use_conv_embed, mlp_ratio=mlp_ratio, drop=drop_rate, drop_path_mode=drop_path_mode,
                focal_level=focal_levels[i], focal_window=focal_windows[i], focal_factor=focal_factors[i],
                use_layerscale=use_layerscale, layerscale_value=layerscale_value, use_postln=use_postln,
                use_postln_in_modulation=use_postln_in_modulation, normalize_modulator=normalize_modulator))
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        self.set_grad_checkpointing(use_checkpoint)
        self.set_selective_checkpointing(selective_checkpoint)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # as the original: Linear ~ N(0, 0.02) cut at +-2 (timm's absolute cut-offs), LayerNorm 1/0;
        # convolutions keep PyTorch's default (kaiming-uniform) initialisation
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02, a=-2., b=2.)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # --- timm-style API -------------------------------------------------------------------------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in the backward pass instead of keeping its activations."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def set_selective_checkpointing(self, enable: bool = True) -> None:
        """Keep only convolution/matmul outputs of each block for backward, recompute element-wise ops.

        Applies when full gradient checkpointing is off; results are identical either way.
        """
        for stage in self.layers:
            stage.selective_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names of the parameters that should not be decayed: norm weights, all biases, layerscale gammas."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs (0: no head)."""
        self.num_classes = num_classes
        like = self.norm.weight
        self.head = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
                     if num_classes > 0 else nn.Identity())
        self._init_weights(self.head)

    # --- forward ----------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[2] != self.in_chans:
            raise ValueError(f"VideoFocalNet expects input of shape (B, T, {self.in_chans}, H, W), "
                             f"got {tuple(x.shape)}")
        if x.shape[1] % self.tubelet_size:
            raise ValueError(f"VideoFocalNet: the number of frames ({x.shape[1]}) must be a multiple of "
                             f"tubelet_size ({self.tubelet_size})")

    def forward_tokens(self, x: torch.Tensor, modulators: Optional[Modulators] = None) -> torch.Tensor:
        """(B, T, C_in, H, W) -> last-stage tokens (B, T', H', W', C_last), before the final norm."""
        self._check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        for i, stage in enumerate(self.layers):
            x = stage(x, modulators, prefix=f'layers.{i}.')
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C_in, H, W) -> (B, num_features): normalised, pooled over space, averaged over frames."""
        return self._pool(self.forward_tokens(x))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        # original order: mean over the tokens of each frame, then over frames
        return self.norm(x).mean((2, 3)).mean(1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features (B, num_features) -> logits (B, num_classes)."""
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor, return_modulators: bool = False
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, Modulators]]:
        """Logits for clips ``x`` of shape (B, T, C_in, H, W).

        With ``return_modulators=True`` also returns ``{'layers.i.blocks.j': dict(modulator, modulator_temporal,
        gates, gates_temporal)}``: modulators (B, T', H', W', C), gates (B, T', H', W', L+1),
        T' = T // tubelet_size. Gradient checkpointing is bypassed in that mode.
        """
        modulators: Optional[Modulators] = {} if return_modulators else None
        logits = self.forward_head(self._pool(self.forward_tokens(x, modulators)))
        return (logits, modulators) if return_modulators else logits
