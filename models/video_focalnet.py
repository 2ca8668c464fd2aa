"""Video-FocalNet (Wasim et al., ICCV 2023): spatio-temporal focal modulation for video recognition.

Numerically the original ``classification/videofocalnet.py`` (fp32 outputs equal to within float rounding,
checked against a reference implementation in ``tests/``), with the same constructor arguments and the same
state-dict keys and shapes as the released checkpoints. Differences from the original:

* Layout: tokens are kept channels-last as ``(B, T, H, W, C)`` end to end; convolutions run on permuted
  views (channels_last / channels_last_3d memory format). No ``torch.clone``, no einops rearranges,
  no ``permute().contiguous()`` round trips. ``f`` and ``f_temporal`` run as one matrix product.
* The frame count is taken from the input: a model built for 8 frames runs 16-frame clips too
  (any multiple of ``tubelet_size``). ``num_frames`` only records the clip length it was built for.
* Nothing is stored on modules during ``forward``; ``forward_with_modulators(x)`` returns the gates and
  modulators of every block instead (for visualisation).
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

Beyond the original: ``design`` selects one of the paper's design-space variants (``parallel``, the released
model, by default; ``spatial``, ``factorized``, ``divided``, ``joint``), all built from the same stem, stages,
MLPs and head; and the timm model API: ``forward_features`` returns the final normalised tokens
``(B, T', H', W', C)``, ``forward_head`` pools and classifies, ``group_matcher`` (layer-wise LR decay),
``feature_info``, ``forward_intermediates`` and ``prune_intermediate_layers`` (stage features),
``head_hidden_size``, ``reset_classifier(num_classes, global_pool)``. ``forward`` takes the clips only, and its
input checks step aside while ``torch.fx`` traces, so torchvision's ``create_feature_extractor`` works.
"""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .architectures import DEFAULT_DESIGN, DESIGNS
from .focal_modulation import (JointFocalModulation, SpatialFocalModulation, SpatioTemporalFocalModulation,
                               TemporalFocalModulation)
from .layers import DROP_PATH_MODES, DropPath, Mlp, PatchEmbed, fx_traced

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

# Kept outputs go through saved-tensor hooks such as save_on_cpu, like any other saved tensor. Only where
# checkpoint() has the keyword: older releases (the GPU machines' torch 2.11) pass unknown keywords on to the
# block, whose forward then fails with a TypeError.
_RESPECT_HOOKS = ({'respect_saved_tensors_hooks': True}
                  if 'respect_saved_tensors_hooks' in inspect.signature(checkpoint).parameters else {})


# Token mixer of a block, by name: the focal modulation(s) between ``norm1`` and the MLP. ``divided`` is a
# spatial modulation followed by a temporal one, each its own residual sub-layer; ``temporal`` is used by the
# factorized design's temporal encoder only.
TOKEN_MIXERS = ('parallel', 'spatial', 'divided', 'joint', 'temporal')
_MODULATIONS = {'parallel': SpatioTemporalFocalModulation, 'spatial': SpatialFocalModulation,
                'divided': SpatialFocalModulation, 'joint': JointFocalModulation,
                'temporal': TemporalFocalModulation}
# The token mixer of the stages of each design (``factorized`` adds a temporal encoder after them).
STAGE_MIXER = {'parallel': 'parallel', 'spatial': 'spatial', 'factorized': 'spatial', 'divided': 'divided',
               'joint': 'joint'}

# Pooling of the final tokens before the head (timm's ``global_pool``): ``'avg'`` averages each frame's tokens,
# then the frames (the original's); ``''`` pools nothing, so the head (if any) applies to every token.
GLOBAL_POOLS = ('avg', '')


def _check_global_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool: expected one of {list(GLOBAL_POOLS)}, got {global_pool!r}")
    return global_pool


class VideoFocalNetBlock(nn.Module):
    """Pre-LN (or post-LN) residual block: focal modulation, then an MLP.

    Args:
        dim: channels C.
        mlp_ratio: MLP hidden width relative to C.
        drop: dropout in the MLP and after the modulation's projection.
        drop_path: stochastic depth probability of every residual branch.
        drop_path_mode: ``'video'`` or ``'frame'`` (see ``DropPath``).
        focal_level, focal_window, focal_factor: focal modulation settings.
        use_layerscale: learnable per-channel scales ``gamma_1``/``gamma_2`` (and ``gamma_temporal``) on the branches.
        layerscale_value: their initial value.
        use_postln: normalise the branch outputs instead of their inputs.
        use_postln_in_modulation: LayerNorm inside the modulation, before its projection.
        normalize_modulator: divide aggregated contexts by ``focal_level + 1``.
        token_mixer: one of ``TOKEN_MIXERS`` (``'parallel'``: the released block). ``'divided'`` adds
            ``norm_temporal`` and ``modulation_temporal`` (a ``TemporalFocalModulation``) as a second residual
            sub-layer after the spatial one.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4., drop: float = 0., drop_path: float = 0.,
                 drop_path_mode: str = 'video', focal_level: int = 2, focal_window: int = 3, focal_factor: int = 2,
                 use_layerscale: bool = False, layerscale_value: float = 1e-4, use_postln: bool = False,
                 use_postln_in_modulation: bool = False, normalize_modulator: bool = False,
                 token_mixer: str = 'parallel') -> None:
        super().__init__()
        if token_mixer not in TOKEN_MIXERS:
            raise ValueError(f"token_mixer: expected one of {list(TOKEN_MIXERS)}, got {token_mixer!r}")
        modulation_kwargs = dict(focal_window=focal_window, focal_level=focal_level, focal_factor=focal_factor,
                                 proj_drop=drop, use_postln_in_modulation=use_postln_in_modulation,
                                 normalize_modulator=normalize_modulator)
        self.dim = dim
        self.use_postln = use_postln
        self.token_mixer = token_mixer
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = _MODULATIONS[token_mixer](dim, **modulation_kwargs)
        if token_mixer == 'divided':
            self.norm_temporal = nn.LayerNorm(dim)
            self.modulation_temporal = TemporalFocalModulation(dim, **modulation_kwargs)
        else:
            self.norm_temporal = self.modulation_temporal = None
        self.drop_path = DropPath(drop_path, drop_path_mode) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        if use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
        else:
            self.gamma_1 = self.gamma_2 = None
        self.gamma_temporal = (nn.Parameter(torch.full((dim,), float(layerscale_value)))
                               if use_layerscale and token_mixer == 'divided' else None)

    def _residual(self, x: torch.Tensor, norm: nn.LayerNorm, branch: nn.Module, gamma: Optional[torch.Tensor],
                  extras: Optional[Dict[str, torch.Tensor]] = None, suffix: str = '') -> torch.Tensor:
        """x + drop_path(gamma * branch(norm(x))) (pre-LN) or x + drop_path(gamma * norm(branch(x))) (post-LN);
        a modulation branch reports its gates and modulator into ``extras`` (names + ``suffix``)."""
        y = x if self.use_postln else norm(x)
        if extras is not None:
            y, found = branch(y, return_modulators=True)
            extras.update({name + suffix: value for name, value in found.items()})
        else:
            y = branch(y)
        if self.use_postln:
            y = norm(y)
        if gamma is not None:
            y = gamma * y
        return x + self.drop_path(y)

    def forward(self, x: torch.Tensor, return_modulators: bool = False
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
        """x: (B, T, H, W, C) -> (B, T, H, W, C) [, gates and modulators of this block]."""
        extras: Optional[Dict[str, torch.Tensor]] = {} if return_modulators else None
        # the temporal encoder's modulation is temporal: its extras carry the temporal names
        x = self._residual(x, self.norm1, self.modulation, self.gamma_1, extras,
                           '_temporal' if self.token_mixer == 'temporal' else '')
        if self.modulation_temporal is not None:
            x = self._residual(x, self.norm_temporal, self.modulation_temporal, self.gamma_temporal, extras,
                               '_temporal')
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

    def forward_blocks(self, x: torch.Tensor, modulators: Optional[Modulators] = None,
                       prefix: str = '') -> torch.Tensor:
        """The blocks only (the stage's features at its own resolution, before the downsampler)."""
        for j, blk in enumerate(self.blocks):
            if modulators is not None:
                x, modulators[f'{prefix}blocks.{j}'] = blk(x, return_modulators=True)
            elif fx_traced(x):
                # checkpointing changes memory, not values; the traced graph keeps the blocks' own nodes
                x = blk(x)
            elif self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            elif self.selective_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False, context_fn=_selective_checkpoint_context,
                               **_RESPECT_HOOKS)
            else:
                x = blk(x)
        return x

    def forward(self, x: torch.Tensor, modulators: Optional[Modulators] = None, prefix: str = '') -> torch.Tensor:
        x = self.forward_blocks(x, modulators, prefix)
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
        design: one of ``DESIGNS`` (``MODEL.FOCAL.DESIGN``): ``'parallel'`` is the released model (spatial and
            temporal focal modulation in parallel, multiplied); ``'spatial'``, ``'factorized'``, ``'divided'``
            and ``'joint'`` are the other designs of the paper's study, built from the same stem, stages,
            MLPs and head (README "Design space"). ``'factorized'`` adds ``temporal_encoder`` (as many
            temporal blocks as the last stage, at its width, with its focal settings and drop-path rates)
            and ``norm_temporal`` over the per-frame features.
        global_pool: one of ``GLOBAL_POOLS``: ``'avg'`` (the original's mean over each frame's tokens, then
            over frames) or ``''`` (no pooling: ``forward`` returns per-token outputs (B, T', H', W', ...)).
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
                 head_drop_rate: float = 0., design: str = DEFAULT_DESIGN, global_pool: str = 'avg') -> None:
        super().__init__()
        if design not in DESIGNS:
            raise ValueError(f"design: expected one of {list(DESIGNS)}, got {design!r}")
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
        # width of the pooled features the head reads (timm's name; no pre-logits layer, so num_features)
        self.head_hidden_size = self.num_features
        self.global_pool = _check_global_pool(global_pool)
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.drop_rate = drop_rate
        self.design = design
        self.patch_size = patch_size
        self.feature_info = [
            dict(num_chs=dims[i], reduction=patch_size * 2 ** i,
                 module=f'layers.{i}.blocks.{depths[i] - 1}' if depths[i] else f'layers.{i}')
            for i in range(num_stages)]

        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=dims[0],
                                      use_conv_embed=use_conv_embed, norm=patch_norm, is_stem=True,
                                      tubelet_size=tubelet_size)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        block_kwargs = dict(mlp_ratio=mlp_ratio, drop=drop_rate, drop_path_mode=drop_path_mode,
                            use_layerscale=use_layerscale, layerscale_value=layerscale_value, use_postln=use_postln,
                            use_postln_in_modulation=use_postln_in_modulation,
                            normalize_modulator=normalize_modulator)
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            start = sum(depths[:i])
            self.layers.append(VideoFocalNetStage(
                dims[i], dims[i + 1] if i < num_stages - 1 else None, depths[i], dpr[start:start + depths[i]],
                use_conv_embed=use_conv_embed, focal_level=focal_levels[i], focal_window=focal_windows[i],
                focal_factor=focal_factors[i], token_mixer=STAGE_MIXER[design], **block_kwargs))
        self.norm = nn.LayerNorm(self.num_features)
        self.temporal_encoder: Optional[VideoFocalNetStage] = None
        self.norm_temporal: Optional[nn.LayerNorm] = None
        if design == 'factorized':
            self.temporal_encoder = VideoFocalNetStage(
                self.num_features, None, depths[-1], dpr[len(dpr) - depths[-1]:], focal_level=focal_levels[-1],
                focal_window=focal_windows[-1], focal_factor=focal_factors[-1], token_mixer='temporal',
                **block_kwargs)
            self.norm_temporal = nn.LayerNorm(self.num_features)
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
    def _stages(self) -> List[VideoFocalNetStage]:
        return list(self.layers) + ([self.temporal_encoder] if self.temporal_encoder is not None else [])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in the backward pass instead of keeping its activations."""
        for stage in self._stages():
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def set_selective_checkpointing(self, enable: bool = True) -> None:
        """Keep only convolution/matmul outputs of each block for backward, recompute element-wise ops.

        Applies when full gradient checkpointing is off; results are identical either way.
        """
        for stage in self._stages():
            stage.selective_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names of the parameters that should not be decayed: norm weights, all biases, layerscale gammas."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups from the input to the head, for layer-wise LR decay (timm's convention).

        Coarse: stem, one group per stage (its downsampler included), the factorized design's temporal
        encoder. Fine: one group per block; a stage's downsampler and the final norms join the block before
        them (timm's ``(99999,)`` suffix). The head is unmatched, so it comes last.
        """
        spatial = r'^layers\.(\d+)' if coarse else [
            (r'^layers\.(\d+)\.blocks\.(\d+)\.', None),
            (r'^layers\.(\d+)\.downsample\.', (99999,)),
            (r'^norm\.', (99999,)),
        ]
        temporal = r'^(?:temporal_encoder|norm_temporal)\.' if coarse else [
            (r'^temporal_encoder\.blocks\.(\d+)\.', None),
            (r'^norm_temporal\.', (99999,)),
        ]
        return dict(stem=r'^patch_embed\.', blocks=spatial, temporal=temporal)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs (0: no head), and the pooling
        by ``global_pool`` (one of ``GLOBAL_POOLS``; None keeps it)."""
        if global_pool is not None:
            self.global_pool = _check_global_pool(global_pool)
        self.num_classes = num_classes
        like = self.patch_embed.proj.weight
        self.head = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
                     if num_classes > 0 else nn.Identity())
        self._init_weights(self.head)

    # --- forward ----------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if fx_traced(x):
            return  # symbolic shapes cannot be checked; a traced graph fails on a bad input inside torch instead
        if x.ndim != 5 or x.shape[2] != self.in_chans:
            raise ValueError(f"VideoFocalNet expects input of shape (B, T, {self.in_chans}, H, W), "
                             f"got {tuple(x.shape)}")
        if x.shape[1] % self.tubelet_size:
            raise ValueError(f"VideoFocalNet: the number of frames ({x.shape[1]}) must be a multiple of "
                             f"tubelet_size ({self.tubelet_size})")

    def _encode_time(self, x: torch.Tensor, modulators: Optional[Modulators] = None) -> torch.Tensor:
        """Normalised last-stage tokens -> the final tokens: the factorized design's temporal encoder over the
        per-frame features (tokens pooled over space, (B, T', 1, 1, C)); the identity for the other designs."""
        if self.temporal_encoder is None:
            return x
        x = self.temporal_encoder(x.mean((2, 3), keepdim=True), modulators, prefix='temporal_encoder.')
        return self.norm_temporal(x)

    def forward_features(self, x: torch.Tensor, modulators: Optional[Modulators] = None) -> torch.Tensor:
        """(B, T, C_in, H, W) -> the final normalised tokens, not pooled: (B, T', H', W', num_features)
        (T' = T // tubelet_size; the factorized design's are per frame, H' = W' = 1).

        ``modulators``: a dict that receives the gates and modulators of every block (see ``forward``).
        """
        self._check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        for i, stage in enumerate(self.layers):
            x = stage(x, modulators, prefix=f'layers.{i}.')
        return self._encode_time(self.norm(x), modulators)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens of ``forward_features`` -> logits (B, num_classes), or the pooled features (B, num_features)
        with ``pre_logits``. With ``global_pool=''`` nothing is pooled: (B, T', H', W', num_classes or
        num_features)."""
        if self.global_pool == 'avg':
            # original order: mean over the tokens of each frame, then over frames
            x = x.mean((2, 3)).mean(1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, Sequence[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NTHWC',
                              intermediates_only: bool = False
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features of the stages (timm's API): the output of each stage's blocks, before its downsampler.

        Args:
            x: clips (B, T, C_in, H, W).
            indices: stages to return: None (all), n (the last n) or a list of stage indices.
            norm: apply the final norm to the last stage's features.
            stop_early: stop after the last requested stage (only with ``intermediates_only``).
            output_fmt: ``'NTHWC'`` (the model's layout) or ``'NCTHW'``.
            intermediates_only: return only the list of features.

        Returns:
            ``[features]`` or ``(final tokens as forward_features, [features])``.
        """
        if output_fmt not in ('NTHWC', 'NCTHW'):
            raise ValueError(f"output_fmt: expected 'NTHWC' or 'NCTHW', got {output_fmt!r}")
        take, last = feature_take_indices(len(self.layers), indices)
        self._check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        intermediates: List[torch.Tensor] = []
        for i, stage in enumerate(self.layers):
            x = stage.forward_blocks(x)
            if i in take:
                feature = self.norm(x) if norm and i == len(self.layers) - 1 else x
                intermediates.append(feature.permute(0, 4, 1, 2, 3) if output_fmt == 'NCTHW' else feature)
            if intermediates_only and stop_early and i == last:
                return intermediates
            if stage.downsample is not None:
                x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        return self._encode_time(self.norm(x)), intermediates

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the head / final norms) for feature extraction."""
        take, last = feature_take_indices(len(self.layers), indices)
        if last < len(self.layers) - 1:
            # the final norm is the last stage's: an earlier stage has no use for it
            self.layers = self.layers[:last + 1]
            self.layers[-1].downsample = None
            self.feature_info = self.feature_info[:last + 1]
            prune_norm = True
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.temporal_encoder = self.norm_temporal = None
            self.reset_classifier(0)
        return take

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for clips ``x`` of shape (B, T, C_in, H, W)."""
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_with_modulators(self, x: torch.Tensor) -> Tuple[torch.Tensor, Modulators]:
        """Logits as ``forward``, and ``{'layers.i.blocks.j': dict(...)}`` (and ``'temporal_encoder.blocks.j'``
        for the factorized design): modulators (B, T', H', W', C) and gates (B, T', H', W', L+1),
        T' = T // tubelet_size, named ``modulator``/``gates`` for spatial, joint and the released model's
        spatial branch, ``modulator_temporal``/``gates_temporal`` for temporal ones. Gradient checkpointing
        is bypassed here.

        A method of its own rather than a flag of ``forward``: FX tracing (feature extraction by node name)
        cannot branch on an argument of the traced ``forward``.
        """
        modulators: Modulators = {}
        logits = self.forward_head(self.forward_features(x, modulators))
        return logits, modulators
