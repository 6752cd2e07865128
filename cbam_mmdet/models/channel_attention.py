import torch
import torch.nn as nn
import torch.nn.functional as F

from ._validate import check_choice, hidden_channels

CHANNEL_POOLS = ('avg', 'max', 'avg+max')


class ChannelAttention(nn.Module):
    """CBAM's channel attention ("what" to look at), Woo et al., ECCV 2018, Eq. (2).

    .. math::
        M_c(F) = \\sigma(\\mathrm{MLP}(\\mathrm{AvgPool}(F)) + \\mathrm{MLP}(\\mathrm{MaxPool}(F)))

    with one MLP shared by the descriptors: ``Linear(C, C/r) -> ReLU -> Linear(C/r, C)``,
    both Linear layers with bias, as the official code (Jongchan/attention-module).
    ``forward`` returns the attention map ``M_c`` of shape ``(N, C, 1, 1)`` in float32:
    the MLP runs in float32 outside autocast, so fp16 activations as large as 1e4 give
    no inf or NaN.

    Args:
        in_channels (int): C.
        ratio (int): the reduction r; the hidden size is ``C // r``. Default 16.
        pool (str): the channel descriptor, paper Table 1:
            ``'avg+max'`` ("AvgPool & MaxPool", CBAM, default),
            ``'avg'`` ("AvgPool", = SE's squeeze), ``'max'`` ("MaxPool").
    """

    def __init__(self, in_channels: int, ratio: int = 16, pool: str = 'avg+max'):
        super().__init__()
        hidden = hidden_channels(in_channels, ratio)
        check_choice('pool', pool, CHANNEL_POOLS)
        self.in_channels = in_channels
        self.pool = pool
        self.fc1 = nn.Linear(in_channels, hidden, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, in_channels, bias=True)

    def mlp(self, descriptor: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(descriptor)))

    def descriptors(self, x: torch.Tensor):
        """The pooled ``(N, C)`` descriptors the shared MLP sees, in float32 (or float64)."""
        n, c = x.shape[:2]
        out = []
        if self.pool in ('avg', 'avg+max'):
            out.append(F.adaptive_avg_pool2d(x, 1).view(n, c))
        if self.pool in ('max', 'avg+max'):
            out.append(F.adaptive_max_pool2d(x, 1).view(n, c))
        dtype = torch.promote_types(self.fc1.weight.dtype, torch.float32)
        return [d.to(dtype) for d in out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptors = self.descriptors(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = sum(self.mlp(d) for d in descriptors)
        return torch.sigmoid(logits).view(x.shape[0], x.shape[1], 1, 1)
