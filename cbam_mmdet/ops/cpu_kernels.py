"""CBAM and SE inference on CPU through the C++ kernels of ``cbam_mmdet.ops._cpu_kernels``
(csrc/cbam_cpu_kernels.cpp), for float32 CPU tensors, contiguous NCHW or channels_last.
SE is one call (``se_eval``): the average over H x W, the MLP and its sigmoid, the scale.
CBAM pools over H x W and runs the MLP (``mlp_gate``); then, with BatchNorm in running
statistics, one call (``cbam_eval``) forms the channel max and mean of ``M_c F``, runs the
convolution, BatchNorm and sigmoid on that small map and writes ``F M_c M_s`` (with batch
statistics: the convolution and BatchNorm as PyTorch ops between the two passes).
"""
import functools
import math

import torch

from .cbam_torch import no_autocast, spatial_logits


@functools.lru_cache(maxsize=None)
def kernels():
    """The compiled CPU kernels, or None where the extension was not built."""
    try:
        from . import _cpu_kernels
    except ImportError:
        return None
    return _cpu_kernels


def applies(x, params):
    """Whether the C++ kernels take this call: inference on a float32 CPU tensor (contiguous
    NCHW or channels_last), float32 parameters contiguous but for the 4-d conv weight (made so)."""
    if not (x.device.type == 'cpu' and x.dtype == torch.float32
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))):
        return False
    grad = torch.is_grad_enabled()
    if grad and x.requires_grad:
        return False
    for p in params:
        if p is None or (grad and p.requires_grad) or p.dtype != torch.float32 \
                or not (p.is_contiguous() or p.dim() == 4):
            return False
    return True


def se(kern, x, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    out = torch.empty_like(x)
    kern.se_eval(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, out)
    return out


def _bn_affine(weight, bias, running_mean, running_var, eps):
    """(scale, shift) of BatchNorm in running statistics: BN(z) = z scale + shift."""
    scale = float(weight) / math.sqrt(float(running_var) + eps)
    return scale, float(bias) - float(running_mean) * scale


def cbam(kern, x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, conv_weight, bn_weight, bn_bias,
         running_mean, running_var, num_batches_tracked, bn_training, momentum, eps):
    """CBAM inference: three passes over the map (pooling, spatial descriptor, scale)."""
    out = torch.empty_like(x)
    a = kern.mlp_gate(kern.channel_pool(x), fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    conv_weight = conv_weight.detach().contiguous()
    if not bn_training:
        kern.cbam_eval(x, a, conv_weight,
                       *_bn_affine(bn_weight, bn_bias, running_mean, running_var, eps), out)
        return out
    with no_autocast(x):
        desc = kern.spatial_pool(x, a)
        bn = (bn_weight, bn_bias, running_mean, running_var, num_batches_tracked,
              bn_training, momentum, eps)
        s = torch.sigmoid(spatial_logits(desc, conv_weight, bn)).contiguous()
    kern.scale(x, a, s, out)
    return out
