import torch
from mmdet.registry import MODELS

from .channel_attention import ChannelAttention


@MODELS.register_module()
class SE(ChannelAttention):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018).

    .. math::
        z = \\mathrm{AvgPool}(F), \\quad s = \\sigma(W_2\\, \\delta(W_1 z + b_1) + b_2),
        \\quad \\tilde F = s \\otimes F

    ``W_1``: Linear C -> C/r with bias, ``delta`` ReLU, ``W_2``: Linear C/r -> C with
    bias; PyTorch's default initialisation. This is CBAM's channel attention with
    average pooling only (CBAM paper Table 1, "AvgPool").

    Args:
        in_channels (int): C, passed by mmdet's Bottleneck for plugins.
        ratio (int): reduction r. Default 16.
    """

    _abbr_ = 'se'

    def __init__(self, in_channels: int, ratio: int = 16):
        super().__init__(in_channels, ratio=ratio, pool='avg')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * super().forward(x).to(x.dtype)
