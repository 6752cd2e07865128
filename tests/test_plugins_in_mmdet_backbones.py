"""CBAM and SE built by mmdet's registry inside ResNet, ResNetV1d, ResNeXt and Faster R-CNN."""
import os

import pytest
import torch
from mmengine.config import Config
from mmdet.registry import MODELS

from cbam_mmdet import CBAM, SE
from cbam_mmdet.engine import check_no_frozen_random_attention, frozen_attention_modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def resnet(depth=50, plugins=None, type='ResNet', **kwargs):
    cfg = dict(type=type, depth=depth, plugins=plugins, init_cfg=None, **kwargs)
    return MODELS.build(cfg)


def test_plugins_build_from_the_registry_with_the_mmdet_scope():
    assert MODELS.get('CBAM') is CBAM and MODELS.get('SE') is SE
    m = MODELS.build(dict(type='mmdet.CBAM', in_channels=64))
    assert isinstance(m, CBAM)


@pytest.mark.parametrize('plugin,added', [('CBAM', 2_532_592), ('SE', 2_530_992)])
def test_resnet50_parameter_count_matches_the_paper(plugin, added):
    base = n_params(resnet())
    with_plugin = resnet(plugins=[dict(cfg=dict(type=plugin), position='after_conv3')])
    assert n_params(with_plugin) - base == added
    # With the 1000-class ImageNet head: 25.56M -> 28.09M, the paper's Table.
    head = 2048 * 1000 + 1000
    assert round((base + head) / 1e6, 2) == 25.56
    assert round((n_params(with_plugin) + head) / 1e6, 2) == 28.09
    blocks = [m for m in with_plugin.modules() if type(m).__name__ == plugin]
    assert len(blocks) == 16


@pytest.mark.parametrize('backbone', [
    dict(type='ResNet', depth=50),
    dict(type='ResNetV1d', depth=50),
    dict(type='ResNeXt', depth=50, groups=32, base_width=4),
])
@pytest.mark.parametrize('plugin', ['CBAM', 'SE'])
def test_plugins_attach_inside_resnet_family(backbone, plugin):
    stages = (False, True, False, True)
    m = MODELS.build(dict(backbone, init_cfg=None, plugins=[
        dict(cfg=dict(type=plugin), stages=stages, position='after_conv3')]))
    name = plugin.lower()
    for i, layer in enumerate([m.layer1, m.layer2, m.layer3, m.layer4]):
        for block in layer:
            assert hasattr(block, name) == stages[i]
            if stages[i]:
                assert getattr(block, name).in_channels == block.conv3.out_channels
    m.eval()
    outs = m(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [256, 512, 1024, 2048]
    assert all(torch.isfinite(o).all() for o in outs)


def test_state_dict_keys_follow_mmdet_naming():
    m = resnet(plugins=[dict(cfg=dict(type='CBAM'), position='after_conv3')])
    keys = m.state_dict().keys()
    assert 'layer2.0.cbam.channel_attention.fc1.weight' in keys
    assert 'layer4.2.cbam.spatial_attention.bn.running_var' in keys


@pytest.mark.parametrize('position', ['after_conv1', 'after_conv2', 'after_conv3'])
def test_every_plugin_position_works(position):
    m = resnet(plugins=[dict(cfg=dict(type='CBAM', ratio=4), position=position)])
    block = m.layer1[0]
    expected = {'after_conv1': 64, 'after_conv2': 64, 'after_conv3': 256}[position]
    assert block.cbam.in_channels == expected
    out = m(torch.randn(1, 3, 64, 64))
    assert out[-1].shape == (1, 2048, 2, 2)


def test_plugin_is_applied_in_the_block_forward():
    """The block output changes when the plugin's gate changes: it is really in the path."""
    m = resnet(depth=50, plugins=[dict(cfg=dict(type='CBAM'), position='after_conv3')],
               zero_init_residual=False)
    m.eval()  # mmdet's ResNet.train() returns None, so no chaining
    x = torch.randn(1, 3, 64, 64)
    before = m(x)[0].clone()
    with torch.no_grad():
        m.layer1[0].cbam.spatial_attention.bn.bias.fill_(-30.0)  # gate ~ 0: branch off
    after = m(x)[0]
    assert not torch.allclose(before, after)


def test_plugins_keep_the_official_initialisation_inside_resnet():
    cfg = dict(type='ResNet', depth=50, plugins=[
        dict(cfg=dict(type='CBAM'), position='after_conv3')])  # mmdet's default init_cfg
    m = MODELS.build(cfg)
    m.init_weights()
    for mod in m.modules():
        if isinstance(mod, CBAM):
            assert torch.all(mod.spatial_attention.bn.weight == 0)
            assert torch.all(mod.channel_attention.fc1.bias == 0)


def build_config(name, **backbone_overrides):
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', name))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.update(backbone_overrides)
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('config,plugin', [('faster_rcnn_r50_cbam_coco.py', CBAM),
                                           ('faster_rcnn_r50_se_coco.py', SE)])
def test_faster_rcnn_config_builds_with_plugins_and_runs(config, plugin):
    model = build_config(config).eval()
    assert sum(isinstance(m, plugin) for m in model.backbone.modules()) == 16
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96),
                                         scale_factor=(1.0, 1.0), pad_shape=(64, 96)))
    with torch.no_grad():
        results = model.predict(torch.randn(1, 3, 64, 96), [sample])
    assert results[0].pred_instances.bboxes.shape[-1] == 4


def test_frozen_stage_with_random_plugin_is_refused():
    model = build_config('faster_rcnn_r50_cbam_coco.py', frozen_stages=1)
    model.train()
    frozen = frozen_attention_modules(model)
    assert frozen == [f'backbone.layer1.{i}.cbam' for i in range(3)]
    with pytest.raises(ValueError, match=r'frozen backbone stage.*backbone\.layer1\.0\.cbam'):
        check_no_frozen_random_attention(model)


def test_frozen_stage_is_allowed_when_plugin_weights_come_from_a_checkpoint(tmp_path):
    model = build_config('faster_rcnn_r50_cbam_coco.py', frozen_stages=1)
    path = tmp_path / 'backbone.pth'
    torch.save({'state_dict': model.backbone.state_dict()}, path)
    check_no_frozen_random_attention(model, [str(path)])  # no error


def test_unfrozen_configs_pass_the_check():
    model = build_config('faster_rcnn_r50_cbam_coco.py')
    model.train()
    assert frozen_attention_modules(model) == []
    check_no_frozen_random_attention(model)
