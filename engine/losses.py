"""The training loss: soft-target cross-entropy after Mixup/CutMix, label smoothing or plain CE otherwise.

As in the original (timm's losses); ``MODEL.LABEL_SMOOTHING`` applies only when mixing is off, the smoothing of
mixed targets is ``AUG.LABEL_SMOOTH`` (``datasets/mixup.py``).
"""
from __future__ import annotations

from typing import Any

from torch import nn


def build_criterion(config: Any, mixup_enabled: bool) -> nn.Module:
    """Soft-target CE after mixup/cutmix; label-smoothing CE (``MODEL.LABEL_SMOOTHING`` > 0) or CE otherwise."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if mixup_enabled:
        return SoftTargetCrossEntropy()
    if config.MODEL.LABEL_SMOOTHING > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.MODEL.LABEL_SMOOTHING)
    return nn.CrossEntropyLoss()
