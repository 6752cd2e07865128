"""The compiled extensions of the fast paths, and whether this process runs them.

Both are built by ``setup.py build_ext`` (and ``pip install -e .``) and optional: without
one, the plugins compute the same outputs on a slower path, and a call that would have used
it warns once per process (:func:`warn_not_built`).

- ``cbam_mmdet.ops._cpu_kernels`` (csrc/cbam_cpu_kernels.cpp): CPU inference of CBAM and
  SE in C++. Without it: PyTorch ops (:mod:`.cbam_torch`).
- ``cbam_mmdet.ops._triton_programs`` (csrc/triton_programs.cpp): CUDA calls of the
  Triton kernels replayed from C++ (:mod:`.triton_programs`). Without it, or with
  ``CBAM_MMDET_TRITON_PROGRAMS=0``: the same kernels launched from Python (more host time).
"""
import warnings

from . import cpu_kernels, triton_programs
from .attention import triton_available

BUILD_HINT = 'pip install -e . or python setup.py build_ext --inplace'
_warned = set()


def warn_not_built(name, what_runs):
    """Warn once per process that ``cbam_mmdet.ops.<name>`` is not built and ``what_runs``
    instead (called where a plugin call would have used it)."""
    if name in _warned:
        return
    _warned.add(name)
    warnings.warn(f'cbam_mmdet: the compiled extension cbam_mmdet.ops.{name} is not built, '
                  f'so {what_runs} (the same outputs, more time); build it with '
                  f'{BUILD_HINT}', RuntimeWarning, stacklevel=3)


def status():
    """``{'cpu_kernels': bool, 'triton': bool, 'triton_programs': bool}``: whether the CPU
    kernels are loaded, Triton and CUDA are available, and Triton calls replayed from C++."""
    return dict(cpu_kernels=cpu_kernels.kernels() is not None, triton=triton_available(),
                triton_programs=triton_programs.enabled())


def describe(device):
    """One line on the fast paths that ``device`` (``'cpu'``, ``'cuda'``, ...) runs (the
    benchmark prints it: timings without an extension are of another implementation)."""
    state = status()
    if str(device).startswith('cuda'):
        if not state['triton']:
            return 'fast paths: PyTorch (Triton is not available)'
        if state['triton_programs']:
            return 'fast paths: Triton kernels, calls replayed from C++ (_triton_programs)'
        reason = ('switched off (CBAM_MMDET_TRITON_PROGRAMS=0 or set_enabled(False))'
                  if triton_programs._ext is not None else f'not built; {BUILD_HINT}')
        return ('fast paths: Triton kernels launched from Python: the C++ replay '
                f'(_triton_programs) is {reason}')
    if state['cpu_kernels']:
        return 'fast paths: C++ CPU kernels for inference (_cpu_kernels), PyTorch for training'
    return (f'fast paths: PyTorch only: the CPU kernels (_cpu_kernels) are not built; '
            f'{BUILD_HINT}')
