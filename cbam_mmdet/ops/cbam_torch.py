"""CBAM and SE in PyTorch ops, on any device: the modules' reference equations in fewer
passes, differentiable. It runs where neither the Triton kernels (CUDA) nor the C++ CPU
kernels (CPU inference) take a call: CPU training, float64, CUDA without Triton, or the
extensions not built. As in the reference, attention maps are computed in float32 (float64
for float64 inputs) outside autocast, so fp16 activations as large as 1e4 give no inf or
NaN. Differences from the reference (exact up to float rounding):

- global max pooling with ``amax`` over (H, W), not ``adaptive_max_pool2d`` (several
  times faster on CPU); both descriptors go through the MLP as one ``(2, N, C)`` batch;
- the channel mean of ``F' = M_c F`` as one matrix product ``M_c^T F / C`` over the NCHW
  tensor (no reduction along the strided channel axis);
- ``F'' = M_s F'`` in place on ``F'`` in inference (autograd not recording): one
  feature-sized allocation per CBAM call instead of two; the input is never written.
"""
import contextlib

import torch
import torch.nn.functional as F


def records_grad(x, params):
    """Whether autograd records this call (grad mode on and x or a parameter needs it)."""
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p is not None and p.requires_grad for p in params))


def compute_dtype(x):
    """float32 for half inputs, float64 for float64: the dtype of the attention maps."""
    return torch.promote_types(x.dtype, torch.float32)


def no_autocast(x):
    """A context that switches autocast off for x's device, only when it is on."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


def mlp_logits(pooled, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    """The shared MLP ``W2 relu(W1 d + b1) + b2`` on descriptors ``(..., N, C)``."""
    dt = pooled.dtype
    hidden = F.relu(F.linear(pooled, fc1_weight.to(dt), fc1_bias.to(dt)))
    return F.linear(hidden, fc2_weight.to(dt), fc2_bias.to(dt))


def batch_norm(z, weight, bias, running_mean, running_var, num_batches_tracked,
               bn_training, momentum, eps):
    """``nn.BatchNorm2d``'s forward as a function of its state (``momentum=None``: a
    cumulative average)."""
    factor = 0.0 if momentum is None else momentum
    if bn_training and num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        if momentum is None:
            factor = 1.0 / float(num_batches_tracked)
    dt = z.dtype
    return F.batch_norm(z, running_mean, running_var, None if weight is None else weight.to(dt),
                        None if bias is None else bias.to(dt), bn_training, factor, eps)


def spatial_logits(desc, conv_weight, bn):
    """``BN(conv_k(desc))`` of the ``(N, 2, H, W)`` descriptor; ``bn``: :func:`batch_norm`'s
    arguments after ``z``."""
    z = F.conv2d(desc, conv_weight.to(desc.dtype), None, 1, conv_weight.shape[-1] // 2)
    return batch_norm(z, *bn)


def se(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    """``x * sigmoid(MLP(AvgPool(x)))``."""
    n, c = x.shape[:2]
    pooled = x.mean((2, 3), dtype=compute_dtype(x))
    with no_autocast(x):
        a = torch.sigmoid(mlp_logits(pooled, fc1_weight, fc1_bias, fc2_weight, fc2_bias))
    return x * a.view(n, c, 1, 1).to(x.dtype)


def cbam(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, conv_weight, *bn):
    """CBAM with the default options; ``bn``: (weight, bias, running_mean, running_var,
    num_batches_tracked, bn_training, momentum, eps) of the spatial BatchNorm."""
    recording = records_grad(x, (fc1_weight, fc1_bias, fc2_weight, fc2_bias, conv_weight,
                                 bn[0], bn[1]))
    n, c, h, w = x.shape
    cdt = compute_dtype(x)
    pooled = torch.stack((x.mean((2, 3), dtype=cdt), x.amax((2, 3)).to(cdt)))
    with no_autocast(x):
        logits = mlp_logits(pooled, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        a = torch.sigmoid(logits[0] + logits[1])
    y = x * a.view(n, c, 1, 1).to(x.dtype)
    desc_max = y.amax(dim=1, keepdim=True).to(cdt)
    with no_autocast(x):
        if x.dtype == cdt and x.is_contiguous():
            # mean_c(a_c x_c) as one (1 x C) @ (C x HW) product per sample, in the compute
            # dtype (under autocast a matmul would run in fp16 and overflow)
            desc_mean = torch.matmul(a.view(n, 1, c), x.view(n, c, h * w)).view(n, 1, h, w) / c
        else:
            desc_mean = y.mean(dim=1, keepdim=True, dtype=cdt)
        s = torch.sigmoid(spatial_logits(torch.cat((desc_max, desc_mean), dim=1),
                                         conv_weight, bn)).to(x.dtype)
    return y * s if recording else y.mul_(s)
