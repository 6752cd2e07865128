from setuptools import find_packages, setup

setup(
    name='cbam_mmdet',
    version='0.1.0',
    description='CBAM and SE attention plugins for mmdet detectors',
    packages=find_packages(include=['cbam_mmdet', 'cbam_mmdet.*']),
    python_requires='>=3.9',
    install_requires=['torch', 'mmengine>=0.10', 'mmcv>=2.0.0rc4,<2.2.0', 'mmdet>=3.0,<3.4'],
)
