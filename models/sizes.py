"""Which Video-FocalNet a set of weights is: the architecture that tensor shapes determine, and the shipped
size (toy, tiny, small, base ...) whose architecture it equals.

Read by ``hubconf.py`` (a checkpoint's architecture) and ``tools.finetune_size`` (the fine-tune recipe for a
checkpoint). Works on names and shapes only, so a memory-mapped checkpoint is inspected without reading its data.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

# the keys that decide whether two architectures are the same model (the shapes give each of them)
ARCHITECTURE_KEYS = ('embed_dim', 'depths', 'focal_levels', 'mlp_ratio', 'tubelet_size')


def shape_architecture(state: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``VideoFocalNet`` constructor arguments that a state dict's tensor shapes determine (those it holds):
    ``embed_dim``, ``in_chans``, ``tubelet_size``, ``depths``, ``focal_levels``, ``mlp_ratio``, ``num_classes``."""
    arch: Dict[str, Any] = {}
    stem = state.get('patch_embed.proj.weight')
    if stem is not None and stem.dim() in (4, 5):
        arch.update(embed_dim=int(stem.shape[0]), in_chans=int(stem.shape[1]))
        # a 4-D stem is the 2-D patch embedding of tubelet 1; a 5-D one is (C, 3, tubelet, p, p)
        arch['tubelet_size'] = int(stem.shape[2]) if stem.dim() == 5 else 1
    blocks: Dict[int, set] = {}
    levels: Dict[int, set] = {}
    for key in state:
        parts = key.split('.')
        if len(parts) > 4 and parts[0] == 'layers' and parts[2] == 'blocks' and parts[1].isdigit():
            stage, block = int(parts[1]), int(parts[3])
            blocks.setdefault(stage, set()).add(block)
            # layers.S.blocks.0.modulation.focal_layers.L.0.weight: one conv per focal level
            if block == 0 and parts[4:6] == ['modulation', 'focal_layers'] and len(parts) > 6:
                levels.setdefault(stage, set()).add(int(parts[6]))
    if blocks and sorted(blocks) == list(range(len(blocks))):
        arch['depths'] = [len(blocks[s]) for s in sorted(blocks)]
        if len(levels) == len(blocks):
            arch['focal_levels'] = [len(levels[s]) for s in sorted(levels)]
    fc1 = state.get('layers.0.blocks.0.mlp.fc1.weight')
    if fc1 is not None and 'embed_dim' in arch:
        arch['mlp_ratio'] = fc1.shape[0] / arch['embed_dim']
    head = state.get('head.weight')
    if head is not None and head.dim() == 2:
        arch['num_classes'] = int(head.shape[0])
    return arch


def config_architecture(config: Any) -> Dict[str, Any]:
    """The same keys as :func:`shape_architecture` from a config's ``MODEL`` section."""
    focal = config.MODEL.FOCAL
    return {'embed_dim': int(focal.EMBED_DIM), 'depths': [int(d) for d in focal.DEPTHS],
            'focal_levels': [int(level) for level in focal.FOCAL_LEVELS], 'mlp_ratio': float(focal.MLP_RATIO),
            'tubelet_size': int(config.MODEL.TUBELET_SIZE)}


def _same(key: str, a: Any, b: Any) -> bool:
    if key == 'mlp_ratio':
        return abs(float(a) - float(b)) < 1e-6
    if key in ('depths', 'focal_levels'):
        return [int(x) for x in a] == [int(x) for x in b]
    return a == b


def matching_size(found: Mapping[str, Any], sizes: Mapping[str, Mapping[str, Any]]) -> Optional[str]:
    """The first name in ``sizes`` whose architecture agrees with ``found`` on every key of
    :data:`ARCHITECTURE_KEYS` that ``found`` holds; None when none does or ``found`` holds no width."""
    if 'embed_dim' not in found:
        return None
    for name, arch in sizes.items():
        if all(_same(key, found[key], arch[key]) for key in ARCHITECTURE_KEYS if key in found and key in arch):
            return name
    return None


def describe_architecture(arch: Mapping[str, Any]) -> str:
    """'width 16, depths 1-1-2-1, focal levels 2-2-2-2, MLP ratio 1, tubelet 2, 8 classes' (the keys it holds)."""
    parts = []
    if 'embed_dim' in arch:
        parts.append(f"width {arch['embed_dim']}")
    for key, label in (('depths', 'depths'), ('focal_levels', 'focal levels')):
        if key in arch:
            parts.append(f"{label} {'-'.join(str(int(v)) for v in arch[key])}")
    if 'mlp_ratio' in arch:
        parts.append(f"MLP ratio {float(arch['mlp_ratio']):g}")
    if 'tubelet_size' in arch:
        parts.append(f"tubelet {arch['tubelet_size']}")
    if 'num_classes' in arch:
        parts.append(f"{arch['num_classes']} classes")
    return ', '.join(parts) if parts else 'no Video-FocalNet weights (no patch_embed / layers.* tensors)'
