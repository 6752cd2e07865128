"""The ``inplace`` option of CBAM and SE: inference writes the output into the input."""
import pytest
import torch

from cbam_mmdet import CBAM, SE
from cbam_mmdet.ops import cbam_cpu, extensions
from test_fast_attention import needs_triton, pair


@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
@pytest.mark.parametrize('with_kernels', [True, False], ids=['kernels', 'pytorch'])
def test_inplace_inference_writes_into_the_input_and_training_does_not(
        cls, with_kernels, monkeypatch):
    if not with_kernels:
        monkeypatch.setattr(cbam_cpu, 'kernels', lambda: None)
        # the warning that the kernels are not built (tests/test_extensions.py)
        monkeypatch.setattr(extensions, '_warned', {'_cpu_kernels'})
    check_inplace(cls, 'cpu')


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_triton_inplace_inference_writes_into_the_input(cls):
    check_inplace(cls, 'cuda')


def check_inplace(cls, device):
    ref, fast = pair(cls, 32, device=device, ratio=8, inplace=True)
    x = torch.randn(2, 32, 9, 10, device=device)
    with torch.no_grad():
        want = ref.eval()(x)
        assert ref.inplace and torch.equal(x, x.clone())  # the reference never writes
        xi = x.clone()
        got = fast.eval()(xi)
    assert got.data_ptr() == xi.data_ptr()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(xi, want)
    # autograd recording: x is kept for the backward and never written
    xg = x.clone().requires_grad_()
    out = fast.train()(xg)
    out.sum().backward()
    assert torch.equal(xg.detach(), x) and xg.grad is not None
    # the default writes a new tensor
    fast.inplace = False
    xd = x.clone()
    with torch.no_grad():
        out = fast.eval()(xd)
    assert out.data_ptr() != xd.data_ptr() and torch.equal(xd, x)


@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_inplace_must_be_a_bool(cls):
    with pytest.raises(ValueError, match=r'inplace must be one of \[False, True\]'):
        cls(32, inplace='yes')


def test_paper_configs_run_the_plugins_in_place():
    from mmengine.config import Config
    for name in ('faster_rcnn_r50_cbam_coco', 'faster_rcnn_r50_se_coco'):
        cfg = Config.fromfile(f'configs/{name}.py')
        assert [p['cfg']['inplace'] for p in cfg.model.backbone.plugins] == [True]
