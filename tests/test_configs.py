"""Every config under configs/ loads and builds its detector offline; the attention
configs hold the expected number of CBAM/SE modules."""
import glob
import os
import re

import pytest
from mmengine.config import Config

from cbam_mmdet import CBAM, SE
from cbam_mmdet.models.neck_attention import NeckAttention
from cbam_mmdet.offline_model import (build_model_offline, loads_checkpoint,
                                     without_pretrained)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, 'configs')


def all_configs():
    paths = glob.glob(os.path.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    return sorted(os.path.relpath(p, CONFIG_DIR) for p in paths
                  if '_base_' not in os.path.relpath(p, CONFIG_DIR).split(os.sep))


#: Bottleneck blocks of mmdet's ResNets: one after_conv3 plugin in each (3+4+6+3, 3+4+23+3).
RESNET_BLOCKS = {50: 16, 101: 33}
SSD_LEVELS = 6


def named_attention(name):
    """The attention type a config's file name promises ('_cbam' / '_se'), or None."""
    stem = os.path.basename(name)[:-3]
    for kind in ('CBAM', 'SE'):
        if re.search(f'_{kind.lower()}(_|$)', stem):
            return kind
    return None


def test_the_config_glob_finds_the_projects_configs():
    names = all_configs()
    for name in ('faster_rcnn_r50_coco.py', 'faster_rcnn_r101_cbam_coco.py',
                 'faster_rcnn_r50_cbam_voc0712.py', 'ssd300_vgg16_cbam_voc0712.py'):
        assert name in names


def test_without_pretrained_removes_checkpoints_at_any_depth():
    cfg = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='x')),
               neck=dict(init_cfg=[dict(type='Xavier'), dict(type='Pretrained')]),
               head=dict(init_cfg=dict(type='Normal', std=0.01)),
               nested=[dict(init_cfg=dict(type='Pretrained', checkpoint='y'))])
    out = without_pretrained(cfg)
    assert out['backbone']['init_cfg'] is None and out['neck']['init_cfg'] is None
    assert out['nested'][0]['init_cfg'] is None
    assert out['head']['init_cfg'] == dict(type='Normal', std=0.01)
    assert cfg['backbone']['init_cfg']['type'] == 'Pretrained'  # the input is unchanged


@pytest.mark.parametrize('name', all_configs())
def test_config_loads_and_builds_offline(name):
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, name))
    assert 'cbam_mmdet' in cfg.custom_imports['imports']
    model = build_model_offline(cfg)
    found = [m for m in model.modules() if isinstance(m, (CBAM, SE))]
    kind = named_attention(name)
    if kind is None:
        assert found == [], f'{name} names no attention but builds {len(found)} modules'
        return
    assert found and {type(m).__name__ for m in found} == {kind}
    if not loads_checkpoint(cfg.model.backbone.get('init_cfg')):
        # At random initialisation no plugin may sit in a frozen stage.
        assert all(p.requires_grad for m in found for p in m.parameters())
    # block plugins, not AttentionResNet's stem_attention and layer<i>_input_attention
    in_backbone = [m for name, m in model.backbone.named_modules()
                   if isinstance(m, (CBAM, SE)) and not name.endswith('_attention')]
    # C4 detectors: conv5 is the RoI head's shared head, its blocks count too
    shared_head = getattr(getattr(model, 'roi_head', None), 'shared_head', None)
    in_resnet = in_backbone + [m for m in (shared_head.modules() if shared_head else [])
                               if isinstance(m, (CBAM, SE))]
    plugins = cfg.model.backbone.get('plugins') or []
    every_stage = [p for p in plugins if p.get('stages') is None or all(p['stages'])]
    if plugins and len(every_stage) == len(plugins) and \
            cfg.model.backbone.get('depth') in RESNET_BLOCKS:
        assert len(in_resnet) == RESNET_BLOCKS[cfg.model.backbone.depth] * len(plugins)
    if not plugins:
        assert in_backbone == []
    if isinstance(getattr(model, 'neck', None), NeckAttention):  # C4: no neck
        in_neck = [m for m in model.neck.modules() if isinstance(m, (CBAM, SE))]
        assert len(in_neck) == len(model.neck.attentions)
        if name.startswith('ssd300'):
            assert len(in_neck) == SSD_LEVELS
            assert [m.in_channels for m in in_neck] == [512, 1024, 512, 256, 256, 256]
        elif model.neck.position == 'before':  # on the backbone's outputs
            assert [m.in_channels for m in in_neck] == cfg.model.neck.neck.in_channels
        else:
            assert [m.in_channels for m in in_neck] == \
                [cfg.model.neck.neck.out_channels] * cfg.model.neck.neck.num_outs


@pytest.mark.parametrize('name', ['faster_rcnn_r50_voc0712.py', 'ssd300_vgg16_voc0712.py'])
def test_voc_configs_train_on_voc0712_and_test_on_voc2007_with_11_point_map(name):
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, name))
    concat = cfg.train_dataloader.dataset.dataset
    assert [d.ann_file for d in concat.datasets] == [
        'VOC2007/ImageSets/Main/trainval.txt', 'VOC2012/ImageSets/Main/trainval.txt']
    assert cfg.test_dataloader.dataset.ann_file == 'VOC2007/ImageSets/Main/test.txt'
    assert cfg.test_evaluator.type == 'VOCMetric'
    assert cfg.test_evaluator.eval_mode == '11points'
    assert cfg.model.get('roi_head', cfg.model).get('bbox_head', {}).get('num_classes') == 20 \
        or cfg.model.bbox_head.num_classes == 20
    if name.startswith('faster_rcnn'):
        assert cfg.model.backbone.frozen_stages == 0
    assert any(h.type == 'FrozenAttentionCheckHook' for h in cfg.custom_hooks)


@pytest.mark.parametrize('name', all_configs())
def test_attention_configs_are_mmdets_resnet_with_plugins(name):
    """The SE/CBAM backbones are mmdet's ResNet (R-18/34: PluginResNet) with plugins
    naming only the type and ratio; no config points at a machine path."""
    with open(os.path.join(CONFIG_DIR, name)) as f:
        assert '../shared' not in f.read()
    backbone = Config.fromfile(os.path.join(CONFIG_DIR, name)).model.backbone
    if backbone.get('plugins') and backbone.type != 'AttentionResNet':  # placement studies
        assert backbone.type == ('ResNet' if backbone.depth >= 50 else 'PluginResNet')
        assert all(set(p.cfg) <= {'type', 'ratio'} for p in backbone.plugins)
