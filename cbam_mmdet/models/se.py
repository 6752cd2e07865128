import torch
from mmdet.registry import MODELS

from ..ops import bindable, se_forward, se_residual_forward, select_backend
from ._bound_calls import BoundCalls
from .channel_attention import ChannelAttention


@MODELS.register_module()
class SE(BoundCalls, ChannelAttention):
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
        implementation (str): ``'auto'`` (default: the fast path, fused Triton
            kernels on CUDA, PyTorch on CPU, same outputs and gradients; see
            :mod:`cbam_mmdet.ops`), ``'reference'`` (the equation as written),
            ``'fast'``, ``'graph'`` (CUDA inference from a CUDA graph) or ``'eager'``
            (never a CUDA graph).
        inplace (bool): in inference (autograd not recording), the fast paths write
            the output into ``x``'s memory instead of a new tensor (as
            ``nn.ReLU(inplace=True)``), for callers that do not read ``x`` again, such
            as mmdet's ResNet blocks at ``after_conv1/2/3`` (the paper configs set it).
            Training and the reference path never write into ``x``. Default False.
    """

    _abbr_ = 'se'

    def __init__(self, in_channels: int, ratio: int = 16, implementation: str = 'auto',
                 inplace: bool = False):
        super().__init__(in_channels, ratio=ratio, pool='avg')
        self.implementation = implementation  # checked by the setter
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bindings = self._bindings
        if bindings is not None:  # a call replayed from C++ (see ._bound_calls)
            out = bindings(x)
            if out is not None:
                return out
        backend = select_backend(self.implementation, x, has_fast_path=True)
        if backend != 'reference':
            return se_forward(backend, x, self, inplace=self.inplace,
                              bind=backend == 'triton' and bindable(self.implementation))
        return self.reference_forward(x)

    def forward_residual(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The end of a residual block with SE on its branch (the block's "tail"):

        .. math::
            \\mathrm{out} = \\max(s \\otimes F + R,\\ 0)

        with ``x`` = F and ``residual`` = R (the identity or the downsampled input), as
        mmdet's Bottleneck computes after an ``after_conv3`` plugin. On the Triton path
        (CUDA) the addition and ReLU run inside SE's last pass, and its backward gives
        both gradients in SE's last backward pass, so that the block launches two
        operations fewer each way; in CPU inference the C++ kernels' last pass writes
        the tail; elsewhere (and for a residual not laid out as ``x``) it is
        ``torch.relu(self(x) + residual)``. Used by
        :class:`~cbam_mmdet.models.FusedTailResNet`.
        """
        bindings = self._bindings
        if bindings is not None:  # a call replayed from C++ (see ._bound_calls)
            out = bindings(x, residual)
            if out is not None:
                return out
        backend = select_backend(self.implementation, x, has_fast_path=True)
        if backend == 'reference':
            return torch.relu(self.reference_forward(x) + residual)
        return se_residual_forward(
            backend, x, residual, self, inplace=self.inplace,
            bind=backend == 'triton' and bindable(self.implementation))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The equation as written: the definition the fast paths are tested against."""
        return x * super().forward(x).to(x.dtype)
