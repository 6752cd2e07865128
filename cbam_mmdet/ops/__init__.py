"""The kernel layer of the CBAM and SE plugins: functions over tensors.

:func:`cbam` and :func:`se` (:mod:`.attention`) compute the modules' equations on the
fastest backend that takes the call: fused Triton kernels on CUDA (:mod:`.triton_attention`,
with their launch planning in :mod:`.triton_plan` and the C++ replay of recorded launches
in :mod:`.triton_programs`), C++ kernels for CPU inference (:mod:`.cpu_kernels`), or
PyTorch ops (:mod:`.cbam_torch`). :func:`.extensions.describe` says which run here.
"""
from .attention import (REFERENCE_ENV_VAR, cbam, se, set_reference, triton_available,
                        use_reference)

__all__ = ['cbam', 'se', 'use_reference', 'set_reference', 'triton_available',
           'REFERENCE_ENV_VAR']
