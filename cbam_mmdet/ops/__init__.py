"""Fast implementations of the CBAM and SE plugins, chosen by :mod:`.dispatch`.

:mod:`.cbam_cpu` (PyTorch, any device) and :mod:`.cbam_triton` (fused Triton kernels,
CUDA) compute the same outputs and gradients as the plugins' reference ``forward``.
"""
from .dispatch import (ENV_VAR, IMPLEMENTATIONS, check_implementation, select_backend,
                       triton_available)


def cbam_forward(backend, x, channel_attention, spatial_attention):
    """CBAM (default options) on ``backend`` ``'torch'`` or ``'triton'``."""
    if backend == 'triton':
        from . import cbam_triton
        return cbam_triton.cbam_forward(x, channel_attention, spatial_attention)
    from . import cbam_cpu
    return cbam_cpu.cbam_forward(x, channel_attention, spatial_attention)


def se_forward(backend, x, se):
    """SE on ``backend`` ``'torch'`` or ``'triton'``."""
    if backend == 'triton':
        from . import cbam_triton
        return cbam_triton.se_forward(x, se)
    from . import cbam_cpu
    return cbam_cpu.se_forward(x, se)


__all__ = ['ENV_VAR', 'IMPLEMENTATIONS', 'check_implementation', 'select_backend',
           'triton_available', 'cbam_forward', 'se_forward']
