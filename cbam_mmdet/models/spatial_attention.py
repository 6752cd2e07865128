import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from ._validate import check_choice, check_odd_kernel, check_positive_int

SPATIAL_DESCRIPTORS = ('max+mean', 'conv1x1')


class SpatialAttention(nn.Module):
    """CBAM's spatial attention ("where" to look), Woo et al., ECCV 2018, Eq. (3).

    .. math::
        M_s(F) = \\sigma(\\mathrm{BN}(f^{k \\times k}([\\mathrm{MaxPool}_c(F);
                 \\mathrm{AvgPool}_c(F)])))

    The descriptor pools along the channel axis, max first then mean (the official
    code's order), giving ``2 x H x W``; a ``k x k`` convolution without bias,
    ``BatchNorm2d(1, eps=1e-5, momentum=0.01)`` and a sigmoid follow, no ReLU.
    ``forward`` returns the attention map ``M_s`` of shape ``(N, 1, H, W)`` in float32:
    the convolution runs in float32 outside autocast (fp16 overflows there otherwise).

    Args:
        kernel_size (int): k, any odd size (paper Table 2: 3 or 7). Default 7.
        descriptor (str): ``'max+mean'`` (channel max and mean pooling, CBAM, default;
            Table 2 "avg & max pooling") or ``'conv1x1'`` (a learned 1x1 convolution
            C -> 1 without bias, Table 2 "1x1 conv"; needs ``in_channels``).
        in_channels (int, optional): C, only for ``descriptor='conv1x1'``.
        norm_cfg (dict, optional): the normalisation layer, built by mmcv's
            ``build_norm_layer`` with ``eps=1e-5, momentum=0.01`` unless given, e.g.
            ``dict(type='SyncBN')`` for synchronised statistics across GPUs. Default
            None: the official ``BatchNorm2d``.
    """

    def __init__(self, kernel_size: int = 7, descriptor: str = 'max+mean',
                 in_channels=None, norm_cfg=None):
        super().__init__()
        check_odd_kernel('kernel_size', kernel_size)
        check_choice('descriptor', descriptor, SPATIAL_DESCRIPTORS)
        self.descriptor = descriptor
        self.kernel_size = kernel_size
        if descriptor == 'conv1x1':
            check_positive_int('in_channels', in_channels)
            self.reduce = nn.Conv2d(in_channels, 1, 1, bias=False)
        self.conv = nn.Conv2d(1 if descriptor == 'conv1x1' else 2, 1, kernel_size,
                              padding=kernel_size // 2, bias=False)
        if norm_cfg is None:
            self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        else:
            if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
                raise ValueError(f"norm_cfg must be None or a dict with a 'type' key "
                                 f"(e.g. dict(type='SyncBN')), got {norm_cfg!r}")
            self.bn = build_norm_layer(dict(dict(eps=1e-5, momentum=0.01), **norm_cfg), 1)[1]

    def describe(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(N, 2, H, W)`` (or ``(N, 1, H, W)`` for conv1x1) descriptor, float32."""
        dtype = torch.promote_types(self.conv.weight.dtype, torch.float32)
        if self.descriptor == 'conv1x1':
            return self.reduce(x.to(dtype))
        return torch.cat((x.amax(dim=1, keepdim=True).to(dtype),
                          x.mean(dim=1, keepdim=True, dtype=dtype)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return torch.sigmoid(self.bn(self.conv(self.describe(x))))
