"""The functional API of the kernel layer: :func:`cbam` and :func:`se` over tensors.

Each call takes the fastest backend that accepts it, all computing the modules' reference
equations (the same outputs and gradients up to float rounding): on CUDA with Triton
(float16, bfloat16, float32) fused Triton kernels (:mod:`.triton_attention`), replayed from
C++ after an input signature's first call (:mod:`.triton_programs`); for CPU inference on
float32 C++ kernels (:mod:`.cpu_kernels`); else PyTorch ops (:mod:`.cbam_torch`).

The modules (:class:`~cbam_mmdet.CBAM`, :class:`~cbam_mmdet.SE`) call these only where
:func:`use_reference` is False: not with ``CBAM_MMDET_REFERENCE=1`` (read at import;
:func:`set_reference` at run time), and not under ``torch.jit`` tracing or scripting or
``torch.export``, so that those record the equations as PyTorch ops.
"""
import functools
import os

import torch

from . import cbam_torch, cpu_kernels

REFERENCE_ENV_VAR = 'CBAM_MMDET_REFERENCE'
# input dtypes the Triton kernels take (float64 goes to the PyTorch path)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_reference = [os.environ.get(REFERENCE_ENV_VAR, '').strip() == '1']


def set_reference(enabled):
    """Make every module run its reference forward (``True``) or the fast paths
    (``False``, the default); returns the previous setting."""
    if not isinstance(enabled, bool):
        raise ValueError(f'enabled must be True or False, got {enabled!r}')
    previous = _reference[0]
    _reference[0] = enabled
    return previous


# torch.compiler.is_exporting, where this torch has it
_is_exporting = getattr(getattr(torch, 'compiler', None), 'is_exporting', lambda: False)


def use_reference():
    """Whether the modules run their reference forward: the setting, or a ``torch.jit``
    trace or script, or a ``torch.export``."""
    return (_reference[0] or torch.jit.is_scripting() or torch.jit.is_tracing() or _is_exporting())


@functools.lru_cache(maxsize=None)
def triton_available():
    """True when Triton imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


def _triton_takes(x):
    return x.is_cuda and x.dtype in TRITON_DTYPES and triton_available()


def _cpu_kernels_for(x, params):
    """The CPU kernels where they take the call, else None (warning once if not built)."""
    if not cpu_kernels.applies(x, params):
        return None
    kern = cpu_kernels.kernels()
    if kern is None:
        from .extensions import warn_not_built
        warn_not_built('_cpu_kernels', 'CBAM and SE CPU inference run in PyTorch ops')
    return kern


def cbam(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, conv_weight, bn_weight, bn_bias,
         running_mean, running_var, num_batches_tracked, bn_training, momentum, eps):
    """CBAM (Woo et al., ECCV 2018) with its default options on ``x`` (N, C, H, W):
    channel attention from avg- and max-pooled descriptors through one shared MLP
    (``fc1``: C -> C/r, ReLU, ``fc2``: C/r -> C, both with bias), then spatial attention
    from [max; mean] over channels through a k x k convolution without bias
    (``conv_weight``: (1, 2, k, k)), BatchNorm and a sigmoid. The BatchNorm arguments are
    ``nn.BatchNorm2d``'s state: ``bn_training`` (batch statistics; running ones, where
    given, updated with ``momentum``, ``None`` for a cumulative average,
    ``num_batches_tracked`` counted) or running statistics. Returns a new tensor; ``x`` is
    never written."""
    args = (fc1_weight, fc1_bias, fc2_weight, fc2_bias, conv_weight, bn_weight, bn_bias,
            running_mean, running_var, num_batches_tracked, bn_training, momentum, eps)
    if _triton_takes(x):
        from . import triton_attention
        out = triton_attention.cbam_forward(x, *args)
        if out is not None:
            return out
    kern = _cpu_kernels_for(x, args[:7])
    if kern is not None:
        return cpu_kernels.cbam(kern, x, *args)
    return cbam_torch.cbam(x, *args)


def se(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018) on ``x`` (N, C, H, W):
    ``x * sigmoid(fc2(relu(fc1(AvgPool(x)))))``, both Linear layers with bias. Returns a
    new tensor; ``x`` is never written."""
    args = (fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    if _triton_takes(x):
        from . import triton_attention
        out = triton_attention.se_forward(x, *args)
        if out is not None:
            return out
    kern = _cpu_kernels_for(x, args)
    if kern is not None:
        return cpu_kernels.se(kern, x, *args)
    return cbam_torch.se(x, *args)
