"""CBAM's spatial BatchNorm as SyncBN: ``norm_cfg=dict(type='SyncBN')`` builds a
SyncBatchNorm, a training SyncBN runs through the module (which synchronises the batch
statistics across processes), and in eval mode the result is the reference's."""
import pytest
import torch
import torch.nn as nn

from cbam_mmdet.models import CBAM


def test_norm_cfg_builds_syncbn_with_the_official_eps_and_momentum():
    bn = CBAM(32, norm_cfg=dict(type='SyncBN')).spatial_attention.bn
    assert isinstance(bn, nn.SyncBatchNorm)
    assert (bn.eps, bn.momentum) == (1e-5, 0.01)
    assert float(bn.weight) == 0.0, 'the official initialisation: spatial BN weight 0'


def test_training_syncbn_runs_the_batchnorm_module():
    torch.manual_seed(0)
    m = CBAM(32, norm_cfg=dict(type='SyncBN')).train()
    calls = []
    m.spatial_attention.bn.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 32, 8, 8)
    out = m(x)
    assert calls, 'a training SyncBN must run as a module, not inside the fused kernels'
    torch.testing.assert_close(out, m.reference_forward(x))


@pytest.mark.parametrize('convert', [False, True])
def test_eval_syncbn_matches_the_reference(convert):
    torch.manual_seed(0)
    m = CBAM(32)
    m.spatial_attention.bn.weight.data.fill_(0.7)
    m.spatial_attention.bn.running_mean.fill_(0.3)
    if convert:  # what mmengine's sync_bn='torch' does to every BatchNorm
        m = nn.SyncBatchNorm.convert_sync_batchnorm(m)
    else:
        m.spatial_attention.bn = nn.SyncBatchNorm(1, eps=1e-5, momentum=0.01)
    m.eval()
    x = torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(m(x), m.reference_forward(x))


def test_bad_norm_cfg_names_the_field():
    with pytest.raises(ValueError, match='norm_cfg'):
        CBAM(32, norm_cfg='SyncBN')
