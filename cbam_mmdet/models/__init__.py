from .cbam import CBAM
from .channel_attention import ChannelAttention
from .se import SE
from .spatial_attention import SpatialAttention

__all__ = ['CBAM', 'SE', 'ChannelAttention', 'SpatialAttention']
