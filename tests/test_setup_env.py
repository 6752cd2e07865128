"""tools/setup_env.sh's decisions, from its dry run (SETUP_DRY_RUN=1) with the GPU, CUDA
toolkit and torch probes replaced: the commands it would run, or its error."""
import os
import os.path as osp
import re
import subprocess

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
UNSET = ('TORCH', 'PYTHON', 'CUDA_HOME', 'TORCH_CUDA_ARCH_LIST', 'SETUP_GPU', 'SETUP_FAKE_NVCC',
         'SETUP_FAKE_TORCH', 'XDG_CACHE_HOME')


def dry_run(tmp_path, **settings):
    """(exit code, commands it would run (first lines), output) of a dry run."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(SETUP_DRY_RUN='1', MAX_JOBS='4', CBAM_MMDET_WHEELS=str(tmp_path), **settings)
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'setup_env.sh')], env=env,
                          capture_output=True, text=True, timeout=60)
    commands = [line.split('would run: ', 1)[1] for line in proc.stdout.splitlines()
                if 'would run: ' in line]
    return proc.returncode, commands, proc.stdout + proc.stderr


def test_cpu_machine_gets_todays_cpu_setup(tmp_path):
    code, commands, _ = dry_run(tmp_path, SETUP_GPU='none')
    assert code == 0
    assert re.fullmatch(r'python3(\.11)? -m venv \.venv', commands[0])
    assert commands[1:6] == [
        ".venv/bin/python -m pip install --disable-pip-version-check torch==2.13.0 "
        "setuptools>=77.0.3,<82 wheel ninja numpy>=1.26",
        '.venv/bin/python -m pip install --disable-pip-version-check mmengine==0.10.7 '
        'torch==2.13.0',
        'env MMCV_WITH_OPS=1 MAX_JOBS=4 .venv/bin/python -m pip install '
        '--disable-pip-version-check --no-build-isolation mmcv==2.1.0',
        '.venv/bin/python -m pip install --disable-pip-version-check mmdet==3.3.0 '
        'pycocotools pytest torch==2.13.0 mmcv==2.1.0 setuptools<82',
        '.venv/bin/python -m pip install --disable-pip-version-check --no-build-isolation '
        '--no-deps -e .']
    assert commands[6] == '.venv/bin/python setup.py -q build_ext --inplace'
    assert commands[7].startswith('.venv/bin/python -c import torch, mmcv, mmcv.ops')
    assert not any('FORCE_CUDA' in c or 'cuda' in c for c in commands)


def test_gpu_with_toolkit_builds_mmcv_cuda_ops_for_its_compute_capability(tmp_path):
    code, commands, out = dry_run(tmp_path, SETUP_GPU='9.0', SETUP_FAKE_NVCC='13.0',
                                  SETUP_FAKE_TORCH='2.13.0 13.0')
    assert code == 0
    assert any(c.startswith('.venv/bin/python -m pip install --disable-pip-version-check '
                            'torch==2.13.0 ') for c in commands)  # PyPI's: a CUDA build
    build = [c for c in commands if 'pip wheel' in c]
    assert len(build) == 1 and build[0].startswith(
        'env FORCE_CUDA=1 MMCV_WITH_OPS=1 CUDA_HOME=/usr/local/cuda TORCH_CUDA_ARCH_LIST=9.0 ')
    assert '--no-cache-dir' in build[0] and '--no-binary mmcv' in build[0]
    wheels = re.search(r'-w (\S+) mmcv==2\.1\.0$', build[0]).group(1)
    assert re.fullmatch(re.escape(str(tmp_path)) + r'/cp3\d+-torch2\.13\.0-cuda13\.0-sm9\.0',
                        wheels)
    install = commands[commands.index(build[0]) + 1]
    assert install.endswith(f'--no-deps --force-reinstall {wheels}/mmcv-2.1.0-*.whl')
    check = out[out.index(commands[-1]):]  # RoIAlign, NMS and CBAM on CUDA tensors
    assert all(s in check for s in ('roi_align(x', 'nms(boxes', 'CBAM(32', 'device="cuda"'))
    # the second time, the kept wheel is installed without a build
    os.makedirs(wheels)
    open(osp.join(wheels, 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'), 'w').close()
    code, commands, _ = dry_run(tmp_path, SETUP_GPU='9.0', SETUP_FAKE_NVCC='13.0',
                                SETUP_FAKE_TORCH='2.13.0 13.0')
    assert code == 0 and not any('pip wheel' in c for c in commands)
    assert any(c.endswith(f'--force-reinstall {wheels}/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl')
               for c in commands)


def test_gpu_without_a_matching_toolkit_stops_and_says_what_to_get(tmp_path):
    for nvcc, found in (('none', 'found: none'), ('12.4', 'found: /usr/local/cuda 12.4')):
        code, commands, err = dry_run(tmp_path, SETUP_GPU='9.0', SETUP_FAKE_NVCC=nvcc,
                                      SETUP_FAKE_TORCH='2.13.0 13.0')
        assert code != 0 and not any('mmcv' in c for c in commands)
        assert 'no CUDA 13 toolkit (nvcc)' in err and found in err
        assert 'CUDA_HOME' in err and 'https://developer.nvidia.com/cuda-downloads' in err


def test_gpu_with_a_cpu_torch_stops(tmp_path):
    code, _, err = dry_run(tmp_path, SETUP_GPU='9.0', SETUP_FAKE_NVCC='13.0',
                           SETUP_FAKE_TORCH='2.13.0+cpu none')
    assert code != 0 and 'torch 2.13.0+cpu is a CPU build' in err and 'TORCH=system' in err


def test_torch_system_builds_on_the_installed_cuda_torch(tmp_path):
    code, commands, _ = dry_run(tmp_path, TORCH='system', SETUP_GPU='8.0;9.0',
                                SETUP_FAKE_NVCC='13.0', SETUP_FAKE_TORCH='2.11.0+cu130 13.0')
    assert code == 0
    assert commands[0] == 'python3 -m venv --system-site-packages .venv'
    assert not any('torch==' in c for c in commands)
    build = [c for c in commands if 'pip wheel' in c][0]
    assert 'TORCH_CUDA_ARCH_LIST=8.0;9.0 ' in build
    assert '-torch2.11.0+cu130-cuda13.0-sm8.0_9.0 ' in build


def test_bad_settings_are_named_with_their_allowed_values(tmp_path):
    code, _, err = dry_run(tmp_path, TORCH='2.5')
    assert code != 0 and 'TORCH=2.5: allowed values: system' in err
    code, _, err = dry_run(tmp_path, SETUP_GPU='hopper')
    assert code != 0 and 'SETUP_GPU=hopper: allowed values: none, or compute capabilities' in err


def test_gpu_probe_reads_nvidia_smi(tmp_path):
    """Two H100s: one compute capability; a driver without compute_cap: an error."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    smi = bin_dir / 'nvidia-smi'
    path = f'{bin_dir}{os.pathsep}{os.environ["PATH"]}'
    for caps, expected in (('9.0\\n9.0', 'sm9.0 '), ('[N/A]', 'not its compute capability')):
        smi.write_text('#!/bin/sh\n[ "$1" = -L ] && echo "GPU 0: NVIDIA H100 (UUID: x)" '
                       f'|| printf "{caps}\\n"\n')
        smi.chmod(0o755)
        _, _, out = dry_run(tmp_path, PATH=path, SETUP_FAKE_NVCC='13.0',
                            SETUP_FAKE_TORCH='2.13.0 13.0')
        assert expected in out
