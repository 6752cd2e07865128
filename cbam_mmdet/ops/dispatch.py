"""Which implementation of the attention plugins runs: the reference or a fast path.

``implementation`` (a constructor argument of :class:`~cbam_mmdet.CBAM` and
:class:`~cbam_mmdet.SE`) is one of

- ``'auto'`` (default): the fast path where it exists for the module's options and the
  input, else the reference. On CUDA with Triton installed: fused Triton kernels
  (:mod:`.cbam_triton`), for training and inference; otherwise (CPU, CUDA without
  Triton, float64): the PyTorch fast path (:mod:`.cbam_cpu`).
- ``'reference'``: the modules' own ``forward``, written as the equations (the
  definition the fast paths are tested against).
- ``'fast'``: like ``'auto'``, but refuse (ValueError) module options that have no
  fast path instead of falling back silently.
- ``'graph'``: like ``'auto'``, and CUDA inference (autograd off) replays a CUDA graph
  of the fast path captured per input signature (:mod:`.cuda_graph`); calls that
  cannot be captured run the fast path eagerly.
- ``'eager'``: like ``'auto'``, never a CUDA graph.

``'auto'`` (and ``'fast'``) use CUDA graphs for CUDA inference when
``GRAPH_BY_DEFAULT`` is True. It is False: with the launch-lean kernels (three
launches for CBAM inference, two for SE) the graphs no longer paid for their two extra
passes and their memory on an H200 (docs/speed.md, v5); ``'graph'`` keeps them.

The environment variable ``CBAM_MMDET_ATTENTION`` (``auto``, ``reference``,
``fast``, ``graph``, ``eager``, ``torch`` or ``triton``), when set, overrides
``'auto'`` for every module (``torch`` and ``triton`` force one eager fast path, for
training too: ``triton`` needs CUDA and Triton; ``eager`` switches CUDA graphs off).
"""
import functools
import os

import torch

IMPLEMENTATIONS = ('auto', 'reference', 'fast', 'graph', 'eager')
ENV_VAR = 'CBAM_MMDET_ATTENTION'
ENV_CHOICES = ('auto', 'reference', 'fast', 'graph', 'eager', 'torch', 'triton')
# Whether 'auto' replays CUDA graphs for CUDA inference (docs/speed.md, v4 and v5).
GRAPH_BY_DEFAULT = False

# Input dtypes the Triton kernels take (float64 goes to the PyTorch fast path).
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when Triton imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


def check_implementation(value):
    if value not in IMPLEMENTATIONS:
        raise ValueError(f'implementation must be one of {list(IMPLEMENTATIONS)}, '
                         f'got {value!r}')


def env_override():
    """The value of CBAM_MMDET_ATTENTION, validated; None when unset or empty."""
    value = os.environ.get(ENV_VAR, '').strip().lower()
    if not value:
        return None
    if value not in ENV_CHOICES:
        raise ValueError(f'environment variable {ENV_VAR} must be one of '
                         f'{list(ENV_CHOICES)}, got {value!r}')
    return value


def select_backend(implementation: str, x: torch.Tensor, has_fast_path: bool) -> str:
    """``'reference'``, ``'torch'`` (PyTorch fast path), ``'triton'`` or ``'graph'``
    (a CUDA graph of the eager fast path, :func:`eager_backend`) for this call.

    Args:
        implementation: the module's ``implementation`` argument.
        x: the input feature map.
        has_fast_path: whether the module's options have a fast path.
    """
    choice = implementation
    if implementation == 'auto':
        choice = env_override() or 'auto'
    if choice == 'reference':
        return 'reference'
    if not has_fast_path:
        if choice in ('auto', 'graph', 'eager'):
            return 'reference'
        raise ValueError(
            f"implementation={choice!r}: these module options have no fast path (it "
            "covers SE and CBAM with arrangement='channel_first', channel_pool="
            "'avg+max', spatial_descriptor='max+mean', both attentions); use "
            "implementation='auto' or 'reference'")
    use_triton = x.is_cuda and x.dtype in TRITON_DTYPES and triton_available()
    if (choice == 'graph' or (choice in ('auto', 'fast') and GRAPH_BY_DEFAULT)) and \
            x.is_cuda and not torch.is_grad_enabled():
        return 'graph'
    if choice == 'triton':
        if not use_triton:
            raise ValueError(f'{ENV_VAR}=triton needs a CUDA input of dtype '
                             f'float16/bfloat16/float32 and Triton installed')
        return 'triton'
    if choice == 'torch':
        return 'torch'
    return 'triton' if use_triton else 'torch'


def bindable(implementation: str) -> bool:
    """Whether a module's Triton call may be bound for replay from C++
    (:func:`.triton_programs.bind`): where a later call with the same input signature,
    autograd mode and environment would choose ``'triton'`` again. Not for choices
    that may replay CUDA graphs."""
    choice = implementation
    if implementation == 'auto':
        choice = env_override() or 'auto'
    if choice in ('auto', 'fast'):
        return not GRAPH_BY_DEFAULT
    return choice in ('eager', 'triton')


def eager_backend(x: torch.Tensor) -> str:
    """The fast path a CUDA graph captures for inference: ``'triton'`` where the
    kernels take ``x``, else ``'torch'``."""
    if x.is_cuda and x.dtype in TRITON_DTYPES and triton_available():
        return 'triton'
    return 'torch'
