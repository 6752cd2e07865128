"""cbam_mmdet: CBAM and SE attention plugins for mmdet detectors.

Builds two optional C++ extensions (cbam_mmdet/ops/csrc): ``cbam_mmdet.ops._cpu_kernels``
(CBAM and SE inference on CPU) and ``cbam_mmdet.ops._triton_programs`` (replays the CUDA
Triton paths' recorded launches from C++; needs no CUDA headers). Where one cannot be built
(no compiler, no OpenMP) the install goes on without it and the Python paths run instead;
set ``CBAM_MMDET_CPU_KERNELS=0`` to skip both.
"""
import os
import warnings

from setuptools import find_packages, setup

CPU_KERNELS = 'cbam_mmdet.ops._cpu_kernels'
TRITON_PROGRAMS = 'cbam_mmdet.ops._triton_programs'


def extension_options():
    if os.environ.get('CBAM_MMDET_CPU_KERNELS', '1') == '0':
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # torch is not installed yet: pure-Python install
        return {}

    class OptionalBuildExtension(BuildExtension):
        """Builds the extension, or warns and goes on without it."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as error:  # compiler missing or failing
                warnings.warn(f'{ext.name} was not built ({error}); the PyTorch fast path '
                              'runs instead')

    cpu = CppExtension(CPU_KERNELS, ['cbam_mmdet/ops/csrc/cbam_cpu_kernels.cpp'],
                       extra_compile_args=['-O3', '-fopenmp'], extra_link_args=['-fopenmp'])
    programs = CppExtension(TRITON_PROGRAMS, ['cbam_mmdet/ops/csrc/triton_programs.cpp'],
                            extra_compile_args=['-O2'], extra_link_args=['-ldl'])
    return dict(ext_modules=[cpu, programs], cmdclass={'build_ext': OptionalBuildExtension})


setup(
    name='cbam_mmdet',
    version='0.1.0',
    description='CBAM and SE attention plugins for mmdet detectors',
    packages=find_packages(include=['cbam_mmdet', 'cbam_mmdet.*']),
    python_requires='>=3.9',
    install_requires=['torch', 'mmengine>=0.10', 'mmcv>=2.0.0rc4,<2.2.0', 'mmdet>=3.0,<3.4'],
    **extension_options(),
)
