"""CBAM and SE attention plugins for mmdet detectors.

``import cbam_mmdet`` (or ``custom_imports=dict(imports=['cbam_mmdet'])`` in a config)
registers the plugins ``CBAM`` and ``SE`` in ``mmdet.registry.MODELS`` and the hooks of
:mod:`cbam_mmdet.engine`, and makes mmengine load checkpoints safely and write them
atomically (:mod:`cbam_mmdet.checkpoint`).
"""
from . import checkpoint  # noqa: F401  (safe loading, atomic writing)
from . import datasets  # noqa: F401  (SyntheticShapesDataset, the embedded dataset)
from .engine import FrozenAttentionCheckHook
from .models import CBAM, SE, ChannelAttention, SpatialAttention

__version__ = '0.1.0'
__all__ = ['CBAM', 'SE', 'ChannelAttention', 'SpatialAttention', 'FrozenAttentionCheckHook']
