"""Which compiled extensions of the fast paths a process runs (cbam_mmdet/ops/extensions.py)."""
from cbam_mmdet.ops import cpu_kernels, extensions, triton_programs


def test_extensions_are_built_with_the_package():
    """The test command's setup builds both (setup.py build_ext); without them the
    plugins still run, on slower paths, which describe() must say."""
    state = extensions.status()
    assert state['cpu_kernels'] and triton_programs._ext is not None
    line = extensions.describe('cpu')
    assert '_cpu_kernels' in line and 'not built' not in line


def test_extensions_describe_names_a_missing_cpu_build(monkeypatch):
    monkeypatch.setattr(cpu_kernels, 'kernels', lambda: None)
    assert not extensions.status()['cpu_kernels']
    line = extensions.describe('cpu')
    assert 'PyTorch only' in line and '_cpu_kernels' in line and 'not built' in line
    assert 'pip install -e .' in line


def test_extensions_describe_names_a_missing_or_disabled_cuda_replay(monkeypatch):
    monkeypatch.setattr(extensions, 'triton_available', lambda: True)
    line = extensions.describe('cuda')
    assert 'replayed from C++' in line and 'Python' not in line
    previous = triton_programs.set_enabled(False)
    try:
        line = extensions.describe('cuda:0')
        assert not extensions.status()['triton_programs']
    finally:
        triton_programs.set_enabled(previous)
    assert 'launched from Python' in line and 'CBAM_MMDET_TRITON_PROGRAMS=0' in line
    assert triton_programs.enabled()
    monkeypatch.setattr(triton_programs, '_ext', None)
    line = extensions.describe('cuda')
    assert 'launched from Python' in line and 'not built' in line
    monkeypatch.setattr(extensions, 'triton_available', lambda: False)
    assert extensions.describe('cuda') == 'fast paths: PyTorch (Triton is not available)'


def test_plugins_warn_once_where_the_cpu_kernels_are_not_built(monkeypatch):
    import warnings

    import pytest
    import torch

    from cbam_mmdet import CBAM, SE
    monkeypatch.setattr(cpu_kernels, 'kernels', lambda: None)
    monkeypatch.setattr(extensions, '_warned', set())
    se, cbam = SE(32, ratio=8).eval(), CBAM(32, ratio=8).eval()
    x = torch.randn(1, 32, 6, 5)
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match=r'cbam_mmdet\.ops\._cpu_kernels is not '
                          r'built.*pip install -e \.'):
            out = se(x)
        torch.testing.assert_close(out, se.reference_forward(x))
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # once per process: no second warning
            torch.testing.assert_close(cbam(x), cbam.reference_forward(x))
            se(x)
    monkeypatch.setattr(extensions, '_warned', set())
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        se.train()(x).sum().backward()  # training never runs the CPU kernels: no warning
