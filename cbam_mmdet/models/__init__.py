from . import ssd_head_patch  # noqa: F401  (SSDHead.loss_cls for prediction)
from .cbam import CBAM
from .channel_attention import ChannelAttention
from .neck_attention import NeckAttention
from .res_layer_plugins import PluginResLayer
from .resnet_attention_placements import AttentionResNet
from .resnet_basic_plugins import BasicBlockWithPlugins, PluginResNet
from .se import SE
from .spatial_attention import SpatialAttention
from .stairnet_neck import StairNetNeck

__all__ = ['CBAM', 'SE', 'ChannelAttention', 'SpatialAttention', 'NeckAttention',
           'PluginResNet', 'BasicBlockWithPlugins', 'PluginResLayer', 'StairNetNeck',
           'AttentionResNet']
