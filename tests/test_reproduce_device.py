"""tools/reproduce.py --device: auto takes the GPU only where mmcv has its CUDA ops; fp16
AMP only on it; an explicit cuda that cannot run is one clear error."""
import pytest
import torch

from cbam_mmdet import reproduce
from cbam_mmdet.reproduce import device as device_module
from cbam_mmdet.reproduce.device import choose_device, mmcv_has_cuda_ops


def fake_machine(monkeypatch, gpu, mmcv_cuda_ops):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: gpu)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *_: 'Fake GPU')
    monkeypatch.setattr(device_module, 'mmcv_has_cuda_ops', lambda: mmcv_cuda_ops)


def test_auto_on_this_machine():
    device = choose_device('auto')[0]
    assert device == ('cuda' if torch.cuda.is_available() and mmcv_has_cuda_ops() else 'cpu')


def test_auto_without_a_gpu_takes_the_cpu_in_fp32(monkeypatch):
    fake_machine(monkeypatch, gpu=False, mmcv_cuda_ops=False)
    assert choose_device('auto') == ('cpu', False, 'cpu', '')
    assert choose_device('auto', amp=True) == ('cpu', False, 'cpu',
                                                '--amp applies on CUDA only: fp32')


def test_auto_with_a_gpu_and_mmcv_cuda_ops_takes_it_with_fp16_amp(monkeypatch):
    fake_machine(monkeypatch, gpu=True, mmcv_cuda_ops=True)
    assert choose_device('auto', amp=True) == ('cuda', True, 'cuda (Fake GPU, fp16 AMP)', '')
    assert choose_device('cuda') == ('cuda', False, 'cuda (Fake GPU, fp32)', '')
    assert choose_device('cpu')[:3] == ('cpu', False, 'cpu')


def test_auto_with_a_gpu_but_cpu_only_mmcv_takes_the_cpu_and_says_why(monkeypatch):
    fake_machine(monkeypatch, gpu=True, mmcv_cuda_ops=False)
    device, amp, name, note = choose_device('auto', amp=True)
    assert (device, amp, name) == ('cpu', False, 'cpu')
    assert 'mmcv has no CUDA ops' in note and 'tools/setup_env.sh' in note
    with pytest.raises(ValueError, match='mmcv was compiled without its CUDA ops'):
        choose_device('cuda')


def test_explicit_cuda_without_cuda_and_amp_on_cpu_are_errors(monkeypatch):
    fake_machine(monkeypatch, gpu=False, mmcv_cuda_ops=False)
    with pytest.raises(SystemExit, match='reproduce: error: --device cuda: no CUDA device'):
        reproduce.main(['--preset', 'demo', '--device', 'cuda'], log=lambda *_: None)
    with pytest.raises(SystemExit, match='--amp: fp16 mixed precision runs on CUDA only'):
        reproduce.main(['--preset', 'demo', '--device', 'cpu', '--amp'], log=lambda *_: None)


def test_demo_prints_and_tables_the_device_it_ran_on(monkeypatch, tmp_path):
    fake_machine(monkeypatch, gpu=True, mmcv_cuda_ops=True)
    calls, lines = [], []

    def fake_run_preset(preset, work_dir, variants, seeds, **kwargs):
        calls.append(kwargs)
        return [dict(name=v, seed=0, config='c', status='failed', error='not run')
                for v in variants]
    monkeypatch.setattr(reproduce, 'run_preset', fake_run_preset)
    reproduce.main(['--preset', 'demo', '--work-dir', str(tmp_path), '--amp'], log=lines.append)
    assert calls[0]['device'] == 'cuda' and calls[0]['amp'] is True
    assert 'reproduce: device: cuda (Fake GPU, fp16 AMP)' in lines
    assert 'Device: cuda (Fake GPU, fp16 AMP).' in (tmp_path / 'comparison.md').read_text()
