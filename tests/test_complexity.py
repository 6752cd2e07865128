"""Params and GFLOPs of the backbones (as ImageNet classifiers) and of the detectors."""
import os

import pytest

from cbam_mmdet.complexity import (PAPER_IMAGENET, backbone_complexity, complexity_table,
                                   detector_complexity, paper_imagenet)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(name):
    return os.path.join(ROOT, 'configs', name)


# ResNet-50 at 224x224: (channels, spatial size, blocks) of each stage's Bottlenecks.
R50_STAGES = [(256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3)]


def se_flops(c, s):
    """What mmengine counts for one SE on C x S x S: avg pool (C S^2), two Linear."""
    return c * s * s + 2 * c * (c // 16)


def cbam_flops(c, s):
    """One CBAM: avg pool, the shared MLP on 2 descriptors, 7x7 conv 2->1, eval BN."""
    return c * s * s + 2 * 2 * c * (c // 16) + 2 * 49 * s * s + 2 * s * s


@pytest.fixture(scope='module')
def r50():
    return {kind: backbone_complexity(config(f'faster_rcnn_r50{suffix}_coco.py'))
            for kind, suffix in (('base', ''), ('SE', '_se'), ('CBAM', '_cbam'))}


def test_resnet50_params_match_the_paper(r50):
    assert [round(r50[k]['params'] / 1e6, 2) for k in ('base', 'SE', 'CBAM')] == \
        [25.56, 28.09, 28.09]
    assert r50['base']['shape'] == (1, 3, 224, 224)


def test_resnet50_gflops_under_mmengine_convention(r50):
    # Multiply-adds of plain ResNet-50 (torchvision v1.5 layout) under mmengine's counting:
    # 4.1 G, where the paper prints 3.858.
    assert round(r50['base']['flops'] / 1e9, 1) == 4.1
    assert PAPER_IMAGENET[(50, None)] == (25.56, 3.858)


def test_paper_gflops_are_conv_and_fc_multiply_adds_of_resnet_v1():
    from cbam_mmdet.complexity import backbone_paper_convention
    got = [round(backbone_paper_convention(config(f'faster_rcnn_r50{s}_coco.py')) / 1e9, 3)
           for s in ('', '_se', '_cbam')]
    assert got == [PAPER_IMAGENET[(50, k)][1] for k in (None, 'SE', 'CBAM')]


@pytest.mark.parametrize('kind,per_module', [('SE', se_flops), ('CBAM', cbam_flops)])
def test_attention_adds_exactly_its_own_flops(r50, kind, per_module):
    added = sum(n * per_module(c, s) for c, s, n in R50_STAGES)
    assert r50[kind]['flops'] - r50['base']['flops'] == added
    # mmengine counts the global average pooling (1 per element): +0.008 / +0.012 G.
    # The paper's +0.002 (SE) / +0.006 (CBAM) are the MLP (and 7x7 conv) alone.
    assert round(added / 1e9, 3) == {'SE': 0.008, 'CBAM': 0.012}[kind]


def test_paper_rows_are_found_for_the_coco_configs():
    from cbam_mmdet.offline_model import load_config
    rows = {name: paper_imagenet(load_config(config(name)).model.backbone)
            for name in ('faster_rcnn_r101_coco.py', 'faster_rcnn_r101_cbam_coco.py',
                         'faster_rcnn_r50_se_coco.py', 'ssd300_vgg16_voc0712.py')}
    assert rows == {'faster_rcnn_r101_coco.py': (44.55, 7.570),
                    'faster_rcnn_r101_cbam_coco.py': (49.33, 7.581),
                    'faster_rcnn_r50_se_coco.py': (28.09, 3.860),
                    'ssd300_vgg16_voc0712.py': None}


def test_detector_complexity_counts_the_whole_ssd():
    base = detector_complexity(config('ssd300_vgg16_voc0712.py'), shape=(3, 300, 300))
    cbam = detector_complexity(config('ssd300_vgg16_cbam_voc0712.py'), shape=(3, 300, 300))
    assert base['shape'] == (1, 3, 300, 300)
    # SSD300 VGG16 on VOC: 26.3M parameters in mmdet (the paper's table: 26.5M).
    assert 26e6 < base['params'] < 27e6
    levels = [(512, 38), (1024, 19), (512, 10), (256, 5), (256, 3), (256, 1)]
    assert cbam['params'] - base['params'] == sum(2 * c * (c // 16) + c + c // 16 + 98 + 2
                                                  for c, _ in levels)
    assert cbam['flops'] - base['flops'] == sum(cbam_flops(c, s) for c, s in levels)


def test_tool_prints_one_markdown_table(capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'complexity_tool', os.path.join(ROOT, 'tools', 'complexity.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([config('faster_rcnn_r50_cbam_coco.py'), config('ssd300_vgg16_voc0712.py'),
               '--shape', '300'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith('| ') for line in lines)
    assert '| faster_rcnn_r50_cbam_coco.py | 28.09M | 4.' in lines[2]
    assert '| 3.864 | 28.09M | 3.864 | 1x3x320x320 |' in lines[2]  # padded to 32
    assert 'n/a: SSDVGG is not a ResNet' in lines[3] and '1x3x300x300' in lines[3]


def test_complexity_table_without_backbone_columns():
    table = complexity_table([config('ssd300_vgg16_voc0712.py')], detector_shape=(3, 300, 300),
                             backbone=False)
    assert table.splitlines()[0] == '| config | detector input | detector params | ' \
                                    'paper detector params | detector GFLOPs |'


def test_c4_backbone_is_not_compared_with_the_imagenet_row():
    table = complexity_table([config('faster_rcnn_r50_c4_cbam_coco.py')], detector=False)
    assert "n/a: the backbone has 3 of ResNet's 4 stages" in table, table
    assert '28.09M' not in table
