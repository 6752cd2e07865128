"""The CPU fast path of CBAM and SE (and the PyTorch one on any device): the same
equations in fewer passes.

Inference (autograd not recording) on a float32 CPU tensor, contiguous NCHW or
channels_last, runs the C++ kernels of ``cbam_mmdet.ops._cpu_kernels``
(csrc/cbam_cpu_kernels.cpp, built by ``setup.py build_ext``). SE is one call
(``se_eval``): the average over H x W in one pass, the shared MLP and its sigmoid (each
weight read once), and the scale in a second pass. CBAM pools over H x W in one pass and
runs the MLP in a second call (``mlp_gate``), then, with BatchNorm in running
statistics, one call that forms the channel max and mean of ``M_c F`` in one pass over
the map, runs the 7x7
convolution, BatchNorm and sigmoid on that small map, and writes ``F * M_c * M_s`` in a
second pass (with batch statistics: the same two passes with the convolution and
BatchNorm as PyTorch ops on the small maps in between). Everything
else (training, other dtypes and layouts, CUDA without Triton, or the extension not
built) runs the PyTorch fast path below, under autograd where it records.
Differences of the PyTorch fast path from the reference ``forward`` (all exact up to
float rounding):

- global max pooling with ``amax`` over (H, W) instead of ``adaptive_max_pool2d``
  (several times faster on CPU); both descriptors go through the shared MLP as one
  batched ``(2, N, C)`` input;
- the channel mean of ``F' = M_c F`` as one matrix product ``M_c^T F / C`` over the
  NCHW tensor (no reduction along the strided channel axis);
- ``F'' = M_s F'`` in place on ``F'`` when autograd does not record (inference), so a
  CBAM call allocates one feature-sized tensor instead of two;
- autocast is only switched off around the small maps when it is on.

``inplace=True`` (inference only) writes the output into ``x``'s memory instead of a new
tensor: no allocation of a feature-sized tensor (on CPU, no page faults for it).

Attention maps are computed in float32 (float64 for float64 inputs) outside autocast, as
in the reference, so fp16 activations as large as 1e4 give no inf or NaN.
"""
import contextlib
import functools
import math

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=None)
def kernels():
    """The compiled CPU kernels (``cbam_mmdet.ops._cpu_kernels``), or None where the
    extension was not built."""
    try:
        from . import _cpu_kernels
    except ImportError:
        return None
    return _cpu_kernels


def records_grad(x, *modules):
    """Whether autograd records this call (grad mode on and x or a parameter needs it)."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p.requires_grad for m in modules for p in m.parameters())


def compute_dtype(x):
    """float32 for half inputs, float64 for float64: the dtype of the attention maps."""
    return torch.promote_types(x.dtype, torch.float32)


def no_autocast(x):
    """A context that switches autocast off for x's device, only when it is on."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


def mlp_logits(pooled, fc1, fc2):
    """The shared MLP ``W2 relu(W1 d + b1) + b2`` on a stack of descriptors ``(K, N, C)``."""
    dt = pooled.dtype
    hidden = F.relu(F.linear(pooled, fc1.weight.to(dt), fc1.bias.to(dt)))
    return F.linear(hidden, fc2.weight.to(dt), fc2.bias.to(dt))


def spatial_logits(desc, spatial_attention):
    """``BN(conv_k(desc))`` for the ``(N, 2, H, W)`` descriptor (module BN semantics)."""
    sa = spatial_attention
    dt = desc.dtype
    conv = sa.conv
    return sa.bn(F.conv2d(desc, conv.weight.to(dt), None, conv.stride, conv.padding))


def _warn_if_not_built(kern, x, *modules):
    if kern is None and x.device.type == 'cpu' and x.dtype == torch.float32 and \
            not records_grad(x, *modules):
        from .extensions import warn_not_built
        warn_not_built('_cpu_kernels', 'CBAM and SE CPU inference run the PyTorch fast path')


def add_relu(out, residual, in_place):
    """The block's tail ``max(out + residual, 0)``; ``in_place``: in ``out``'s memory (as
    mmdet's block in inference, where ``out`` is the attention's own output)."""
    if in_place:
        return out.add_(residual).relu_()
    return torch.relu(out + residual)


def _recorded(residual, *tensors_or_modules):
    return residual.requires_grad or records_grad(*tensors_or_modules)


def _tail_applies(x, residual):
    """Whether the C++ kernels take the block's tail: a float32 residual laid out as x
    that autograd does not record."""
    return residual is None or (
        residual.dtype == torch.float32 and residual.device == x.device
        and residual.shape == x.shape and residual.stride() == x.stride()
        and not (torch.is_grad_enabled() and residual.requires_grad))


def se_forward(x, se, inplace=False, residual=None):
    """``x * sigmoid(MLP(AvgPool(x)))`` (:class:`~cbam_mmdet.SE`); with ``residual`` the
    block's tail ``max(that + residual, 0)``, in the C++ kernels' write where they apply."""
    kern = kernels()
    apply = _kernels_apply(kern, x, se)
    if apply and _tail_applies(x, residual):
        return _se_kernels(kern, x, se, inplace, residual)
    if residual is not None:
        out = _se_kernels(kern, x, se, inplace) if apply else se_forward(x, se, inplace)
        return add_relu(out, residual, not _recorded(residual, x, se))
    _warn_if_not_built(kern, x, se)
    n, c = x.shape[:2]
    cdt = compute_dtype(x)
    pooled = x.mean((2, 3), dtype=cdt)
    with no_autocast(x):
        a = torch.sigmoid(mlp_logits(pooled, se.fc1, se.fc2))
    a = a.view(n, c, 1, 1).to(x.dtype)
    if inplace and not records_grad(x, se):
        return x.mul_(a)
    return x * a


def cbam_forward(x, channel_attention, spatial_attention, inplace=False, residual=None):
    """CBAM, channel then spatial attention, avg+max channel pooling and the
    [max; mean] spatial descriptor (:class:`~cbam_mmdet.CBAM`'s defaults); with
    ``residual`` the block's tail ``max(that + residual, 0)``, in the C++ kernels' last
    write where they apply."""
    kern = kernels()
    modules = (channel_attention, spatial_attention)
    apply = _kernels_apply(kern, x, *modules)
    if apply and _tail_applies(x, residual):
        return _cbam_kernels(kern, x, *modules, inplace, residual)
    if residual is not None:
        out = _cbam_kernels(kern, x, *modules, inplace) if apply else \
            cbam_forward(x, *modules, inplace)
        return add_relu(out, residual, not _recorded(residual, x, *modules))
    _warn_if_not_built(kern, x, *modules)
    recording = records_grad(x, channel_attention, spatial_attention)
    n, c, h, w = x.shape
    cdt = compute_dtype(x)
    pooled = torch.stack((x.mean((2, 3), dtype=cdt), x.amax((2, 3)).to(cdt)))
    with no_autocast(x):
        logits = mlp_logits(pooled, channel_attention.fc1, channel_attention.fc2)
        a = torch.sigmoid(logits[0] + logits[1])
    gate = a.view(n, c, 1, 1).to(x.dtype)
    in_x = inplace and not recording
    y = x.mul_(gate) if in_x else x * gate
    desc_max = y.amax(dim=1, keepdim=True).to(cdt)
    with no_autocast(x):
        if x.dtype == cdt and x.is_contiguous() and not in_x:
            # mean_c(a_c x_c) as one (1 x C) @ (C x HW) product per sample, in the
            # compute dtype (under autocast a matmul would run in fp16 and overflow).
            desc_mean = torch.matmul(a.view(n, 1, c),
                                     x.view(n, c, h * w)).view(n, 1, h, w) / c
        else:
            desc_mean = y.mean(dim=1, keepdim=True, dtype=cdt)
        s = torch.sigmoid(spatial_logits(torch.cat((desc_max, desc_mean), dim=1),
                                         spatial_attention)).to(x.dtype)
    if recording:
        return y * s
    return y.mul_(s)


def _mlp_gate(kern, pooled, mlp):
    """sigmoid of the shared MLP summed over the descriptors ``pooled`` (K, N, C). The
    parameters go in as they are (the kernels run only where autograd records nothing,
    ``_kernels_apply``): four ``detach()`` calls cost 15-20 us per call inside a
    backbone (docs/speed.md, v29)."""
    fc1, fc2 = mlp.fc1, mlp.fc2
    return kern.mlp_gate(pooled, fc1.weight, fc1.bias, fc2.weight, fc2.bias)


def _bn_affine(bn):
    """(scale, shift) of BatchNorm with its running statistics: BN(z) = z scale + shift."""
    scale = 1.0 / math.sqrt(float(bn.running_var) + bn.eps)
    if bn.weight is not None:
        scale *= float(bn.weight)
    shift = -float(bn.running_mean) * scale
    if bn.bias is not None:
        shift += float(bn.bias)
    return scale, shift


def _kernels_apply(kern, x, *modules):
    """Whether the C++ kernels take this call: inference on a float32 CPU tensor,
    contiguous NCHW or channels_last, with float32 parameters, contiguous but for the
    spatial convolution's weight (``model.to(memory_format=torch.channels_last)``
    lays it out channels_last; the call reads it contiguous, 2 x K x K values)."""
    if not (kern is not None and x.device.type == 'cpu' and x.dtype == torch.float32
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))):
        return False
    grad = torch.is_grad_enabled()
    if grad and x.requires_grad:
        return False
    for m in modules:  # one walk over the parameters
        for p in m.parameters():
            if (grad and p.requires_grad) or p.dtype != torch.float32 \
                    or not (p.is_contiguous() or p.dim() == 4):
                return False
    return True


def _se_kernels(kern, x, se, inplace, residual=None):
    """SE inference in one C++ call (``se_eval``): one pass for the average, the MLP,
    and the scale (in place or into a new tensor; with ``residual``, the block's tail)."""
    out = x if inplace else torch.empty_like(x)
    fc1, fc2 = se.fc1, se.fc2
    kern.se_eval(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, out, residual)
    return out


def _cbam_kernels(kern, x, channel_attention, spatial_attention, inplace, residual=None):
    """CBAM inference through the C++ kernels: three passes over the map (the pooling,
    the spatial descriptor, the scale; with ``residual`` the block's tail in the scale's
    write), with the small maps' work in C++ where BatchNorm uses running statistics and
    as PyTorch ops where it uses batch statistics."""
    out = x if inplace else torch.empty_like(x)
    bn = spatial_attention.bn
    a = _mlp_gate(kern, kern.channel_pool(x), channel_attention)
    conv_w = spatial_attention.conv.weight.detach().contiguous()
    if not bn.training and bn.running_mean is not None:
        kern.cbam_eval(x, a, conv_w, *_bn_affine(bn), out, residual)
        return out
    with no_autocast(x):
        desc = kern.spatial_pool(x, a)
        s = torch.sigmoid(spatial_logits(desc, spatial_attention)).contiguous()
    kern.scale(x, a, s, out, residual)
    return out
