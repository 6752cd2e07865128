"""PluginResNet: mmdet's ResNet whose BasicBlock (ResNet-18/34) takes plugins."""
import pytest
import torch
from mmdet.registry import MODELS

from cbam_mmdet.models import CBAM, SE, BasicBlockWithPlugins, PluginResNet


def build(depth=18, plugins=None, type='PluginResNet', **kwargs):
    return MODELS.build(dict(type=type, depth=depth, plugins=plugins, init_cfg=None, **kwargs))


def evaluating(model):
    model.eval()  # mmdet's ResNet.train() returns None, so .eval() cannot be chained
    return model


def cbam(position='after_conv2', **kwargs):
    return [dict(cfg=dict(type='CBAM'), position=position, **kwargs)]


def test_registered_and_mmdet_basic_block_still_refuses_plugins():
    assert MODELS.get('PluginResNet') is PluginResNet
    with pytest.raises(AssertionError):
        build(plugins=cbam(), type='ResNet')


@pytest.mark.parametrize('depth', [18, 34])
def test_without_plugins_it_computes_mmdets_resnet(depth):
    ours, theirs = evaluating(build(depth)), evaluating(build(depth, type='ResNet'))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x)):
            assert torch.equal(a, b)


def test_cbam_after_conv2_sits_at_the_end_of_every_basic_block():
    m = build(18, plugins=cbam())
    blocks = [b for layer in (m.layer1, m.layer2, m.layer3, m.layer4) for b in layer]
    assert len(blocks) == 8 and all(isinstance(b, BasicBlockWithPlugins) for b in blocks)
    assert [b.cbam.in_channels for b in blocks] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert 'layer3.1.cbam.spatial_attention.bn.running_var' in m.state_dict()
    m.eval()
    outs = m(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 16, 16), (1, 128, 8, 8),
                                              (1, 256, 4, 4), (1, 512, 2, 2)]


def test_after_conv2_plugin_refines_the_residual_branch_before_the_addition():
    """Block output = relu(plugin(norm2(conv2(relu(norm1(conv1(x)))))) + downsample(x))."""
    m = evaluating(build(18, plugins=cbam(), zero_init_residual=False))
    block = m.layer2[0]  # has a downsample
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        branch = block.norm2(block.conv2(block.relu(block.norm1(block.conv1(x)))))
        expected = torch.relu(block.cbam(branch) + block.downsample(x))
        assert torch.allclose(block(x), expected, atol=1e-6)
        block.cbam.spatial_attention.bn.bias.fill_(-30.0)  # gate ~ 0: branch off
        assert torch.allclose(block(x), torch.relu(block.downsample(x)), atol=1e-5)


def test_after_conv1_plugin_gets_planes_channels_and_runs():
    m = evaluating(build(34, plugins=[dict(cfg=dict(type='SE', ratio=4), position='after_conv1',
                                           stages=(False, True, False, True))]))
    assert not hasattr(m.layer1[0], 'se') and not hasattr(m.layer3[0], 'se')
    assert isinstance(m.layer2[0].se, SE) and m.layer2[0].se.in_channels == 128
    assert m.layer4[2].se.in_channels == 512
    assert m(torch.randn(1, 3, 64, 64))[-1].shape == (1, 512, 2, 2)


def test_after_conv3_in_a_basic_block_is_an_error_naming_the_allowed_positions():
    with pytest.raises(ValueError, match=r"position must be one of \['after_conv1', "
                                         r"'after_conv2'\].*got 'after_conv3'"):
        build(18, plugins=cbam('after_conv3'))


def test_per_stage_plugins_with_different_ratios_share_the_name():
    m = build(18, plugins=[
        dict(cfg=dict(type='SE', ratio=8), stages=(True, False, False, False),
             position='after_conv2'),
        dict(cfg=dict(type='SE', ratio=16), stages=(False, True, True, True),
             position='after_conv2')])
    assert m.layer1[0].se.fc1.out_features == 8
    assert m.layer2[0].se.fc1.out_features == 8
    assert m.layer4[0].se.fc1.out_features == 32


def test_zero_init_residual_zeroes_norm2_as_mmdet_does():
    m = MODELS.build(dict(type='PluginResNet', depth=18, plugins=cbam()))
    m.init_weights()
    for layer in (m.layer1, m.layer4):
        for block in layer:
            assert torch.all(block.norm2.weight == 0)
            assert torch.all(block.cbam.spatial_attention.bn.weight == 0)  # CBAM's own init
    ref = MODELS.build(dict(type='ResNet', depth=18))
    ref.init_weights()
    assert torch.all(ref.layer1[0].norm2.weight == 0)


def test_bottleneck_depths_are_mmdets_resnet():
    m = build(50, plugins=cbam('after_conv3'))
    assert type(m.layer1[0]).__name__ == 'Bottleneck'
    assert isinstance(m.layer1[0].cbam, CBAM) and m.layer1[0].cbam.in_channels == 256
    ref = build(50, plugins=cbam('after_conv3'), type='ResNet')
    assert list(m.state_dict()) == list(ref.state_dict())


def test_frozen_stage_freezes_basic_block_plugins():
    m = build(18, plugins=cbam(), frozen_stages=1)
    m.train()
    assert not any(p.requires_grad for p in m.layer1.parameters())
    assert all(p.requires_grad for p in m.layer2[0].cbam.parameters())
