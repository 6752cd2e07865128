import torch
import torch.nn as nn
from mmdet.registry import MODELS

from ..ops import (bindable, cbam_forward, cbam_residual_forward, check_implementation,
                   select_backend)
from ._bound_calls import BoundCalls
from ._validate import check_choice, check_odd_kernel, check_positive_int
from .channel_attention import CHANNEL_POOLS, ChannelAttention
from .spatial_attention import SPATIAL_DESCRIPTORS, SpatialAttention

ARRANGEMENTS = ('channel_first', 'spatial_first', 'parallel')


@MODELS.register_module()
class CBAM(BoundCalls, nn.Module):
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
        implementation (str): ``'auto'`` (default: a fast path with the same outputs
            and gradients where one exists, fused Triton kernels on CUDA, fewer passes
            in PyTorch on CPU; see :mod:`cbam_mmdet.ops`), ``'reference'`` (this
            class's ``forward``, written as the equations), ``'fast'`` (refuse
            options without a fast path), ``'graph'`` (CUDA inference replays a CUDA
            graph of the fast path) or ``'eager'`` (never a CUDA graph). The fast
            path covers the defaults of ``arrangement``, ``channel_pool`` and
            ``spatial_descriptor`` with both attentions, any ``ratio`` and
            ``spatial_kernel``.
        inplace (bool): in inference (autograd not recording), the fast paths write
            the output into ``x``'s memory instead of a new tensor, as
            ``nn.ReLU(inplace=True)`` does: for callers that do not read ``x`` again,
            such as mmdet's ResNet blocks at the plugin positions ``after_conv1/2/3``
            (the paper configs set it). Same values. Training and the reference path
            never write into ``x``. Default False.
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
                 inplace: bool = False):
        super().__init__()
        check_implementation(implementation)
        check_choice('inplace', inplace, (True, False))
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
            in_channels=in_channels) if spatial_attention else None
        self.implementation = implementation
        self.inplace = inplace
        self.has_fast_path = (arrangement == 'channel_first' and channel_attention
                              and spatial_attention and channel_pool == 'avg+max'
                              and spatial_descriptor == 'max+mean')
        if implementation == 'fast' and not self.has_fast_path:
            raise ValueError(
                "implementation='fast' needs arrangement='channel_first', "
                "channel_pool='avg+max', spatial_descriptor='max+mean' and both "
                "attentions; use implementation='auto' or 'reference' for other options")
        self.init_weights()

    def init_weights(self):
        """The official initialisation: convolutions kaiming_normal (fan_out), all
        biases 0, the spatial BatchNorm weight 0 (so M_s starts at 0.5 everywhere);
        Linear weights keep PyTorch's default. mmdet's ResNet calls this after its own
        init_cfg, so the plugin keeps the official initialisation inside a detector."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out')
            if isinstance(m, nn.BatchNorm2d):
                nn.init.zeros_(m.weight)
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def gates(self):
        """The attention modules in the order they are applied."""
        gates = [self.channel_attention, self.spatial_attention]
        if self.arrangement == 'spatial_first':
            gates.reverse()
        return [g for g in gates if g is not None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bindings = self._bindings
        if bindings is not None:  # a call replayed from C++ (see ._bound_calls)
            out = bindings(x)
            if out is not None:
                return out
        backend = select_backend(self.implementation, x, self.has_fast_path)
        if backend != 'reference':
            return cbam_forward(backend, x, self.channel_attention, self.spatial_attention,
                                module=self, inplace=self.inplace,
                                bind=backend == 'triton' and bindable(self.implementation))
        return self.reference_forward(x)

    def forward_residual(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The end of a residual block with CBAM on its branch (the block's "tail"):

        .. math::
            \\mathrm{out} = \\max(F'' + R,\\ 0)

        with ``x`` = F and ``residual`` = R (the identity or the downsampled input), as
        mmdet's Bottleneck computes after an ``after_conv3`` plugin. On the Triton path
        (CUDA, the default options) the addition and ReLU run inside CBAM's last pass,
        and its backward gives the residual's gradient in its first backward pass, so
        that the block launches two operations fewer each way; in CPU inference the C++
        kernels' last pass writes the tail; elsewhere (and for a residual not laid out
        as ``x``) it is ``torch.relu(self(x) + residual)``. Used by
        :class:`~cbam_mmdet.models.FusedTailResNet`.
        """
        bindings = self._bindings
        if bindings is not None:  # a call replayed from C++ (see ._bound_calls)
            out = bindings(x, residual)
            if out is not None:
                return out
        backend = select_backend(self.implementation, x, self.has_fast_path)
        if backend == 'reference':
            return torch.relu(self.reference_forward(x) + residual)
        return cbam_residual_forward(
            backend, x, residual, self.channel_attention, self.spatial_attention,
            module=self, inplace=self.inplace,
            bind=backend == 'triton' and bindable(self.implementation))

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
