import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from mmdet.registry import MODELS

from .. import ops
from ._validate import IMPLEMENTATIONS, check_choice, check_odd_kernel, check_positive_int
from .channel_attention import CHANNEL_POOLS, ChannelAttention
from .spatial_attention import SPATIAL_DESCRIPTORS, SpatialAttention

ARRANGEMENTS = ('channel_first', 'spatial_first', 'parallel')


@MODELS.register_module()
class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018), Eq. (1).

    .. math::
        F' = M_c(F) \\otimes F, \\qquad F'' = M_s(F') \\otimes F'

    with :class:`ChannelAttention` ``M_c`` and :class:`SpatialAttention` ``M_s``.
    The defaults are the paper and the official code (Jongchan/attention-module):
    shared MLP with bias on avg- and max-pooled descriptors, r = 16; 7x7 convolution
    without bias on [max; mean] over channels, BatchNorm (eps 1e-5, momentum 0.01);
    channel first, then spatial; the official initialisation (:meth:`init_weights`).

    The options reproduce the rows of the paper's ablation tables on ResNet-50:

    - Table 1, channel descriptor: ``spatial_attention=False`` with
      ``channel_pool='avg'`` ("AvgPool", the SE row), ``'max'`` ("MaxPool") or
      ``'avg+max'`` ("AvgPool & MaxPool").
    - Table 2, spatial attention: ``spatial_attention=False`` ("Channel");
      ``spatial_descriptor='conv1x1'`` with ``spatial_kernel=3`` or ``7``
      ("Channel + 1x1 conv, k=3 / k=7"); ``spatial_descriptor='max+mean'`` with
      ``spatial_kernel=3`` or ``7`` ("Channel + avg&max pool, k=3 / k=7", the latter
      CBAM). Any odd kernel is accepted.
    - Table 3, arrangement: ``arrangement='channel_first'`` ("Channel + spatial",
      CBAM), ``'spatial_first'`` ("Spatial + channel"), ``'parallel'`` ("Channel &
      spatial in parallel": both maps are computed from F and applied together,
      :math:`F'' = M_c(F) \\otimes M_s(F) \\otimes F`; the paper does not write the
      fusion out, this is the one implemented).

    Args:
        in_channels (int): C, passed by mmdet's Bottleneck for plugins.
        ratio (int): channel reduction r. Default 16.
        channel_attention (bool): use M_c. Default True.
        spatial_attention (bool): use M_s. Default True.
        channel_pool (str): ``'avg+max'`` (default), ``'avg'`` or ``'max'``.
        spatial_kernel (int): odd k of the spatial convolution. Default 7.
        spatial_descriptor (str): ``'max+mean'`` (default) or ``'conv1x1'``.
        arrangement (str): ``'channel_first'`` (default), ``'spatial_first'`` or
            ``'parallel'``.
        implementation (str): ``'auto'`` (default: one call into the kernel layer,
            :func:`cbam_mmdet.ops.cbam`, where the options are the defaults of
            ``arrangement``, ``channel_pool`` and ``spatial_descriptor`` with both
            attentions, any ``ratio`` and ``spatial_kernel``; the reference elsewhere) or
            ``'reference'`` (:meth:`reference_forward`, the equations as written).
        norm_cfg (dict, optional): the spatial gate's normalisation, e.g.
            ``dict(type='SyncBN')`` (:class:`SpatialAttention`). Default None: the
            official ``BatchNorm2d``. A training SyncBN runs the reference path, whose
            BatchNorm module synchronises the statistics.
    """

    _abbr_ = 'cbam'

    def __init__(self,
                 in_channels: int,
                 ratio: int = 16,
                 channel_attention: bool = True,
                 spatial_attention: bool = True,
                 channel_pool: str = 'avg+max',
                 spatial_kernel: int = 7,
                 spatial_descriptor: str = 'max+mean',
                 arrangement: str = 'channel_first',
                 implementation: str = 'auto',
                 norm_cfg=None):
        super().__init__()
        check_choice('implementation', implementation, IMPLEMENTATIONS)
        check_positive_int('in_channels', in_channels)
        check_positive_int('ratio', ratio)
        check_choice('arrangement', arrangement, ARRANGEMENTS)
        check_choice('channel_pool', channel_pool, CHANNEL_POOLS)
        check_odd_kernel('spatial_kernel', spatial_kernel)
        check_choice('spatial_descriptor', spatial_descriptor, SPATIAL_DESCRIPTORS)
        for name, value in (('channel_attention', channel_attention),
                            ('spatial_attention', spatial_attention)):
            check_choice(name, value, (True, False))
        if not (channel_attention or spatial_attention):
            raise ValueError('channel_attention and spatial_attention are both False: '
                             'at least one of them must be True')
        self.in_channels = in_channels
        self.arrangement = arrangement
        self.channel_attention = ChannelAttention(
            in_channels, ratio=ratio, pool=channel_pool) if channel_attention else None
        self.spatial_attention = SpatialAttention(
            kernel_size=spatial_kernel, descriptor=spatial_descriptor,
            in_channels=in_channels, norm_cfg=norm_cfg) if spatial_attention else None
        self.implementation = implementation
        # the kernel layer computes the paper's CBAM (any ratio and kernel size)
        self.has_fast_path = (arrangement == 'channel_first' and channel_attention
                              and spatial_attention and channel_pool == 'avg+max'
                              and spatial_descriptor == 'max+mean')
        self.init_weights()

    def init_weights(self):
        """The official initialisation: convolutions kaiming_normal (fan_out), all
        biases 0, the spatial BatchNorm weight 0 (so M_s starts at 0.5 everywhere);
        Linear weights keep PyTorch's default. mmdet's ResNet calls this after its own
        init_cfg, so the plugin keeps the official initialisation inside a detector."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out')
            if isinstance(m, _BatchNorm):
                nn.init.zeros_(m.weight)
            if isinstance(m, (nn.Conv2d, nn.Linear, _BatchNorm)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def gates(self):
        """The attention modules in the order they are applied."""
        gates = [self.channel_attention, self.spatial_attention]
        if self.arrangement == 'spatial_first':
            gates.reverse()
        return [g for g in gates if g is not None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.spatial_attention.bn if self.spatial_attention is not None else None
        if self.implementation == 'reference' or not self.has_fast_path \
                or ops.use_reference() or (bn.training and type(bn) is not nn.BatchNorm2d):
            return self.reference_forward(x)
        ca, sa = self.channel_attention, self.spatial_attention
        return ops.cbam(x, ca.fc1.weight, ca.fc1.bias, ca.fc2.weight, ca.fc2.bias,
                        sa.conv.weight, bn.weight, bn.bias, bn.running_mean,
                        bn.running_var, bn.num_batches_tracked,
                        bn.training or bn.running_mean is None, bn.momentum, bn.eps)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (1) as written: the definition the fast paths are tested against."""
        if self.arrangement == 'parallel':
            maps = [gate(x) for gate in self.gates()]
            for m in maps:
                x = x * m.to(x.dtype)
            return x
        for gate in self.gates():
            x = x * gate(x).to(x.dtype)
        return x
