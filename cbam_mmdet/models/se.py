import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS

from .. import ops
from ._validate import IMPLEMENTATIONS, check_choice, hidden_channels


@MODELS.register_module()
class SE(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018).

    .. math::
        z = \\mathrm{AvgPool}(F), \\quad s = \\sigma(W_2\\, \\delta(W_1 z + b_1) + b_2),
        \\quad \\tilde F = s \\otimes F

    ``W_1``: Linear C -> C/r with bias, ``delta`` ReLU, ``W_2``: Linear C/r -> C with
    bias; PyTorch's default initialisation. This is CBAM's channel attention with
    average pooling only (CBAM paper Table 1, "AvgPool"). The gate is computed in
    float32 outside autocast.

    Args:
        in_channels (int): C, passed by mmdet's Bottleneck for plugins.
        ratio (int): reduction r. Default 16.
        implementation (str): ``'auto'`` (default: one call into the kernel layer,
            :func:`cbam_mmdet.ops.se`) or ``'reference'`` (:meth:`reference_forward`,
            the equation as written).
    """

    _abbr_ = 'se'

    def __init__(self, in_channels: int, ratio: int = 16, implementation: str = 'auto'):
        super().__init__()
        hidden = hidden_channels(in_channels, ratio)
        check_choice('implementation', implementation, IMPLEMENTATIONS)
        self.in_channels = in_channels
        self.implementation = implementation
        self.fc1 = nn.Linear(in_channels, hidden, bias=True)
        self.fc2 = nn.Linear(hidden, in_channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.implementation == 'reference' or ops.use_reference():
            return self.reference_forward(x)
        return ops.se(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation ``s`` of shape ``(N, C, 1, 1)``, float32."""
        n, c = x.shape[:2]
        z = F.adaptive_avg_pool2d(x, 1).view(n, c)
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = z.to(torch.promote_types(self.fc1.weight.dtype, torch.float32))
            s = torch.sigmoid(self.fc2(F.relu(self.fc1(z))))
        return s.view(n, c, 1, 1)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The equation as written: the definition the fast paths are tested against."""
        return x * self.gate(x).to(x.dtype)
