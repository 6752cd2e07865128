"""Fast implementations of the CBAM and SE plugins, chosen by :mod:`.dispatch`.

:mod:`.cbam_cpu` (PyTorch, any device) and :mod:`.cbam_triton` (fused Triton kernels,
CUDA) compute the same outputs and gradients as the plugins' reference ``forward``;
:mod:`.cuda_graph` replays either of them from a CUDA graph for CUDA inference.
"""
import torch

from . import cuda_graph  # noqa: F401
from .dispatch import (ENV_VAR, GRAPH_BY_DEFAULT, IMPLEMENTATIONS, bindable,
                       check_implementation, eager_backend, select_backend, triton_available)


def cbam_forward(backend, x, channel_attention, spatial_attention, module=None,
                 inplace=False, bind=False):
    """CBAM (default options) on ``backend`` ``'torch'``, ``'triton'`` or ``'graph'``
    (a CUDA graph of :func:`eager_backend`'s path, cached on ``module``). ``inplace``:
    inference writes the output into ``x`` (not for ``'graph'``). ``bind``: the Triton
    path binds replayed calls to ``module`` (:func:`.triton_programs.bind`)."""
    if backend == 'graph':
        from . import cuda_graph
        eager = eager_backend(x)
        return cuda_graph.run(
            module, x, lambda t: cbam_forward(eager, t, channel_attention, spatial_attention))
    if backend == 'triton':
        from . import cbam_triton
        out = cbam_triton.cbam_forward(x, channel_attention, spatial_attention, inplace,
                                       module if bind else None)
        if out is not None:
            return out
    from . import cbam_cpu
    return cbam_cpu.cbam_forward(x, channel_attention, spatial_attention, inplace)


def cbam_residual_forward(backend, x, residual, channel_attention, spatial_attention,
                          module=None, inplace=False, bind=False):
    """The end of a residual block with CBAM on its branch, ``max(CBAM(x) + residual,
    0)``: on ``'triton'`` one fused pass where ``residual`` is laid out as ``x``
    (``bind``: binds replayed calls to ``module``), on ``'torch'`` in the C++ kernels'
    last write where they apply (CPU inference), else CBAM on ``backend``, then the
    addition and ReLU."""
    if backend == 'triton':
        from . import cbam_triton
        out = cbam_triton.cbam_forward(x, channel_attention, spatial_attention, inplace,
                                       module if bind else None, residual)
        if out is not None:
            return out
    if backend == 'torch':
        from . import cbam_cpu
        return cbam_cpu.cbam_forward(x, channel_attention, spatial_attention, inplace,
                                     residual)
    out = cbam_forward(backend, x, channel_attention, spatial_attention, module, inplace)
    return _add_relu(backend, out, residual)


def _add_relu(backend, out, residual):
    """The tail after the attention: in place in inference (as mmdet's block), but not
    on a CUDA graph's output (``'graph'``)."""
    from .cbam_cpu import add_relu
    recorded = torch.is_grad_enabled() and (out.requires_grad or residual.requires_grad)
    return add_relu(out, residual, backend != 'graph' and not recorded)


def se_forward(backend, x, se, inplace=False, bind=False):
    """SE on ``backend`` ``'torch'``, ``'triton'`` or ``'graph'`` (cached on ``se``).
    ``bind``: the Triton path binds replayed calls to ``se``."""
    if backend == 'graph':
        from . import cuda_graph
        eager = eager_backend(x)
        return cuda_graph.run(se, x, lambda t: se_forward(eager, t, se))
    if backend == 'triton':
        from . import cbam_triton
        out = cbam_triton.se_forward(x, se, inplace, bind)
        if out is not None:
            return out
    from . import cbam_cpu
    return cbam_cpu.se_forward(x, se, inplace)


def se_residual_forward(backend, x, residual, se, inplace=False, bind=False):
    """The end of a residual block with SE on its branch, ``max(SE(x) + residual, 0)``:
    on ``'triton'`` one fused pass where ``residual`` is laid out as ``x`` (``bind``:
    binds replayed calls to ``se``), on ``'torch'`` in the C++ kernels' write where they
    apply (CPU inference), else SE on ``backend``, then the addition and ReLU."""
    if backend == 'triton':
        from . import cbam_triton
        out = cbam_triton.se_forward(x, se, inplace, bind, residual)
        if out is not None:
            return out
    if backend == 'torch':
        from . import cbam_cpu
        return cbam_cpu.se_forward(x, se, inplace, residual)
    return _add_relu(backend, se_forward(backend, x, se, inplace), residual)


__all__ = ['ENV_VAR', 'GRAPH_BY_DEFAULT', 'IMPLEMENTATIONS', 'bindable', 'check_implementation',
           'eager_backend', 'select_backend', 'triton_available', 'cbam_forward',
           'cbam_residual_forward', 'se_forward', 'se_residual_forward']
