"""Parameters and GFLOPs of a config's backbone (as an ImageNet classifier, like the CBAM
paper's tables) and of its whole detector, with mmengine's FlopAnalyzer.

GFLOPs are multiply-adds (mmengine's convention; CBAM/SE on their reference forward).
ResNet-50 counts 4.1 where the paper prints 3.858: the paper counts conv and fc only, on
the ResNet v1 layout (``style='caffe'``), as :func:`backbone_paper_convention` does
(3.858 / 3.860 / 3.864). The paper's values (Table 4; Table 7's detector params) are
printed beside ours, never instead.
"""
import copy
import logging
from functools import partial

import torch
import torch.nn as nn

from .convert.resnet_layout import plugin_architecture
from .offline_model import (build_model_offline, load_config, quiet_logs,
                            without_pretrained)

IMAGENET_SHAPE = (3, 224, 224)
DETECTOR_SHAPE = (3, 800, 1333)

#: The paper's Table 4 (ImageNet-1K): (depth, attention) -> (params M, GFLOPs).
PAPER_IMAGENET = {
    (50, None): (25.56, 3.858), (50, 'SE'): (28.09, 3.860), (50, 'CBAM'): (28.09, 3.864),
    (101, None): (44.55, 7.570), (101, 'SE'): (49.33, 7.575), (101, 'CBAM'): (49.33, 7.581),
}

#: The paper's Table 7 (VOC, VGG16, 300x300): (neck, attention) -> detector params M.
PAPER_VOC_DETECTORS = {('SSDNeck', None): 26.5, ('StairNetNeck', None): 32.0,
                       ('StairNetNeck', 'SE'): 32.1, ('StairNetNeck', 'CBAM'): 32.1}


class ImageNetClassifier(nn.Module):
    """A ResNet backbone with the paper's ImageNet head: average pooling and a Linear."""

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int = 1000):
        super().__init__()
        self.backbone = backbone
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)[-1]
        return self.fc(torch.flatten(self.avgpool(x), 1))


class NotComparable(Exception):
    """The backbone has no ImageNet-classifier form to compare with the paper."""


def imagenet_classifier(backbone_cfg) -> ImageNetClassifier:
    """The backbone (no pretrained weights) with an ImageNet head; :class:`NotComparable`
    unless it is an mmdet ResNet."""
    from mmdet.models.backbones import ResNet
    from mmdet.registry import MODELS

    cfg = without_pretrained(backbone_cfg)
    backbone = MODELS.build(cfg)
    if not isinstance(backbone, ResNet):
        raise NotComparable(f'{type(backbone).__name__} is not a ResNet (no ImageNet '
                            f'head of the paper\'s table)')
    if backbone.num_stages != 4:
        raise NotComparable(f'the backbone has {backbone.num_stages} of ResNet\'s 4 stages '
                            f'(C4: conv5 is the RoI head)')
    backbone.out_indices = (backbone.num_stages - 1, )
    with quiet_logs():
        backbone.init_weights()
    return ImageNetClassifier(backbone, backbone.feat_dim)


def attention_of(backbone_cfg):
    """``None``, ``'SE'`` or ``'CBAM'`` when the backbone matches a row of the paper's
    table (mmdet ResNet, no plugin or one SE/CBAM plugin with r=16 after conv3 in every
    block); ``False`` otherwise."""
    if backbone_cfg.get('type') != 'ResNet' or backbone_cfg.get('num_stages', 4) != 4:
        return False
    plugins = backbone_cfg.get('plugins') or []
    if not plugins:
        return None
    if len(plugins) != 1:
        return False
    plugin = plugin_architecture(plugins)[0]  # the implementation does not matter
    cfg = dict(plugin['cfg'])
    kind = cfg.pop('type')
    every_stage = plugin.get('stages') is None or all(plugin['stages'])
    if (plugin.get('position') != 'after_conv3' or not every_stage
            or kind not in ('SE', 'CBAM') or cfg not in ({}, {'ratio': 16})):
        return False
    return kind


def paper_imagenet(backbone_cfg):
    """(params M, GFLOPs) of the paper's row for this backbone, or None."""
    kind = attention_of(backbone_cfg)
    if kind is False:
        return None
    return PAPER_IMAGENET.get((backbone_cfg.get('depth'), kind))


def paper_detector_params(model_cfg):
    """Detector params (M) of the paper's Table 7 row for this model (SSDVGG with SSD's or
    StairNet's neck on six levels, no attention or SE/CBAM with r=16), or None."""
    neck = model_cfg.get('neck') or {}
    attention = dict(neck.get('attention') or {})
    kind = attention.pop('type', None)
    if model_cfg.get('backbone', {}).get('type') != 'SSDVGG' or \
            neck.get('num_outs', 6) != 6 or attention not in ({}, {'ratio': 16}):
        return None
    return PAPER_VOC_DETECTORS.get((neck.get('type'), kind))


def use_reference_attention(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, every CBAM/SE module on its reference forward (the paper's
    operations, not a fused fast path)."""
    from .models import CBAM, SE

    for m in model.modules():
        if isinstance(m, (CBAM, SE)):
            m.implementation = 'reference'
    model.eval()
    return model


#: Operators mmengine counts that are not multiply-adds of a conv or fc layer.
NON_MAC_OPS = ('aten::batch_norm', 'aten::group_norm', 'aten::layer_norm',
               'aten::instance_norm', 'aten::upsample_nearest2d', 'aten::upsample_bilinear2d',
               'aten::adaptive_avg_pool2d', 'aten::grid_sampler')


def conv_fc_flops(model: nn.Module, inputs) -> int:
    """Multiply-adds of the convolutions and Linear/matmul layers alone."""
    from mmengine.analysis import FlopAnalyzer

    use_reference_attention(model)
    with torch.no_grad():
        # A handle of None does not override mmengine's default handles: count 0.
        analyzer = FlopAnalyzer(model, inputs).set_op_handle(
            **{op: (lambda inputs, outputs: 0) for op in NON_MAC_OPS})
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analyzer.total()


def count(model: nn.Module, inputs) -> dict:
    """{'params', 'flops'} by mmengine's get_model_complexity_info, attention on reference."""
    from mmengine.analysis import get_model_complexity_info

    use_reference_attention(model)
    with torch.no_grad(), quiet_logs(logging.ERROR):  # its unsupported-operator warnings
        info = get_model_complexity_info(model, inputs=inputs, show_table=False,
                                         show_arch=False)
    return dict(params=info['params'], flops=info['flops'])


def backbone_complexity(config, shape=IMAGENET_SHAPE) -> dict:
    """Params and FLOPs of the backbone as an ImageNet classifier on a 1 x ``shape`` input."""
    cfg = load_config(config)
    model = imagenet_classifier(cfg.model.backbone)
    torch.manual_seed(0)
    out = count(model, (torch.randn(1, *shape), ))
    out['shape'] = (1, *shape)
    return out


def backbone_paper_convention(config, shape=IMAGENET_SHAPE) -> int:
    """FLOPs of the backbone as an ImageNet classifier counted as the paper does (conv
    and fc multiply-adds, ``style='caffe'``); :class:`NotComparable` for a non-ResNet."""
    cfg = load_config(config)
    backbone = copy.deepcopy(cfg.model.backbone)
    backbone['style'] = 'caffe'
    model = imagenet_classifier(backbone)
    torch.manual_seed(0)
    return conv_fc_flops(model, (torch.randn(1, *shape), ))


def detector_inputs(model, shape, seed=0):
    """A random uint8 ``shape`` (C, H, W) image through the detector's data preprocessor."""
    from mmdet.structures import DetDataSample

    c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (c, h, w), generator=gen, dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                         scale_factor=(1.0, 1.0)))
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
    return data['inputs'], data['data_samples']


def detector_complexity(config, shape=DETECTOR_SHAPE) -> dict:
    """Params and FLOPs of the whole detector (``mode='tensor'``) on one seeded ``shape``
    (C, H, W) image (a RoI head's share depends on the proposals the RPN keeps)."""
    torch.manual_seed(0)
    model = build_model_offline(config).eval()
    inputs, samples = detector_inputs(model, shape)
    forward = model.forward
    model.forward = partial(forward, data_samples=samples, mode='tensor')
    try:
        out = count(model, (inputs, ))
    finally:
        model.forward = forward
    out['shape'] = tuple(inputs.shape)
    return out


def complexity_row(config, detector_shape=DETECTOR_SHAPE, backbone=True, detector=True):
    """One markdown table row (list of cells) for ``config``."""
    import os.path as osp

    cfg = load_config(config)
    name = osp.basename(config) if isinstance(config, str) else (cfg.filename or 'config')
    cells = [name]
    if backbone:
        try:
            b = backbone_complexity(cfg)
            cells += [f'{b["params"] / 1e6:.2f}M', f'{b["flops"] / 1e9:.3f}',
                      f'{backbone_paper_convention(cfg) / 1e9:.3f}']
        except NotComparable as err:
            cells += [f'n/a: {err}', 'n/a', 'n/a']
        paper = paper_imagenet(cfg.model.backbone)
        cells += [f'{paper[0]:.2f}M' if paper else '-', f'{paper[1]:.3f}' if paper else '-']
    if detector:
        d = detector_complexity(cfg, detector_shape)
        paper = paper_detector_params(cfg.model)
        cells += ['x'.join(map(str, d['shape'])), f'{d["params"] / 1e6:.2f}M',
                  f'{paper:.1f}M' if paper else '-', f'{d["flops"] / 1e9:.3f}']
    return cells


def complexity_table(configs, detector_shape=DETECTOR_SHAPE, backbone=True, detector=True):
    """A markdown table of :func:`complexity_row` for each config."""
    header = ['config']
    if backbone:
        header += ['backbone+IN head params', 'GFLOPs (1x3x224x224)',
                   'conv+fc GFLOPs, v1 strides', 'paper params', 'paper GFLOPs']
    if detector:
        header += ['detector input', 'detector params', 'paper detector params',
                   'detector GFLOPs']
    rows = [header, ['---'] * len(header)]
    rows += [complexity_row(c, detector_shape, backbone, detector) for c in configs]
    return '\n'.join('| ' + ' | '.join(r) + ' |' for r in rows)
