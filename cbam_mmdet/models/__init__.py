from .cbam import CBAM
from .channel_attention import ChannelAttention
from .fused_tail_resnet import (FusedTailBasicBlock, FusedTailBottleneck,  # noqa: F401
                                FusedTailResNet)
from .neck_attention import NeckAttention  # noqa: F401
from .resnet_basic_plugins import BasicBlockWithPlugins, PluginResNet  # noqa: F401
from .se import SE
from .spatial_attention import SpatialAttention

__all__ = ['CBAM', 'SE', 'ChannelAttention', 'SpatialAttention']
