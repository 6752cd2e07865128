"""Launching Triton kernels with little host time.

``kernel[grid](*args)`` binds and specialises every argument in Python on every call
(about 15-40 us of host time per launch on an H100 or H200 host, two to three times a
PyTorch op). So the first call with a given ``key`` goes through ``kernel[grid]``
(compiling it), later calls with that key call the compiled kernel's launcher directly
(about 5 us). The key must determine every specialisation Triton makes from the
arguments: integer values (equal to 1, divisible by 16), pointer alignment (16 bytes) and
dtypes. The callers keep one cache per input signature (shape, strides, dtype, device,
alignment: all their integer arguments follow), keyed by the kernel, its compile-time
options and the signature of any further tensor (the gradient).
"""
import os

import torch

# Triton's interpreter (TRITON_INTERPRET=1) runs kernels on CPU tensors, through kernel[grid]
_INTERPRET = os.environ.get('TRITON_INTERPRET', '') == '1'
_direct = [True]  # False once the compiled kernels' launcher turns out to differ


def current_stream(device_index):
    """The raw handle of the current CUDA stream of a device (for :func:`launch`)."""
    if _INTERPRET:
        return 0
    return torch._C._cuda_getCurrentRawStream(device_index)


def launch(kernel, grid, cache, key, stream, *args, num_warps=4):
    """Launch ``kernel`` (a ``triton.jit`` function) on ``grid`` (a 3-tuple) and ``stream``
    (:func:`current_stream`) with ``args`` (all of them, constexprs included, positionally)
    in programs of ``num_warps`` warps; ``cache`` (a dict) keeps the compiled kernel under
    ``key``, which must determine ``num_warps`` too."""
    compiled = cache.get(key)
    if compiled is None or not _direct[0] or _INTERPRET:
        cache[key] = kernel[grid](*args, num_warps=num_warps)
        return
    try:
        compiled.run(grid[0], grid[1], grid[2], stream, compiled.function,
                     compiled.packed_metadata, None, None, None, *args)
    except (TypeError, AttributeError):  # another Triton version's launcher
        _direct[0] = False
        kernel[grid](*args, num_warps=num_warps)
