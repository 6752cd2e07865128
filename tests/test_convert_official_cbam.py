"""Official ResNet + CBAM ImageNet checkpoints -> mmdet ResNet (+ PluginResNet) + CBAM.

The official network is restated here from Jongchan/attention-module (MODELS/cbam.py,
MODELS/model_resnet.py) with its module structure, so its state dict keys are the
official ones; a randomised copy is saved as the official training script saves it
(nn.DataParallel 'module.' keys inside {'state_dict', 'epoch', 'arch', 'best_prec1',
'optimizer'}), converted, loaded into mmdet's backbone, and every stage's output is
compared in eval mode.
"""
import importlib.util
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmdet.registry import MODELS

from cbam_mmdet.convert import (CheckpointConversionError, build_backbone,
                                convert_checkpoint_file, convert_official_cbam,
                                read_state_dict)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the official ResNet + CBAM, restated (same modules, same key names) ---------------
class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class BasicConv(nn.Module):
    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0,
                 relu=True, bn=True, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride,
                              padding=padding, bias=bias)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class ChannelGate(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16):
        super().__init__()
        self.mlp = nn.Sequential(Flatten(),
                                 nn.Linear(gate_channels, gate_channels // reduction_ratio),
                                 nn.ReLU(),
                                 nn.Linear(gate_channels // reduction_ratio, gate_channels))

    def forward(self, x):
        size = (x.size(2), x.size(3))
        att = (self.mlp(F.avg_pool2d(x, size, stride=size))
               + self.mlp(F.max_pool2d(x, size, stride=size)))
        return x * torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)


class ChannelPool(nn.Module):
    def forward(self, x):
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)),
                         dim=1)


class SpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, 7, stride=1, padding=3, relu=False)

    def forward(self, x):
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class OfficialCBAM(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16):
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio)
        self.SpatialGate = SpatialGate()

    def forward(self, x):
        return self.SpatialGate(self.ChannelGate(x))


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class OfficialBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.cbam = OfficialCBAM(planes, 16)

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out = self.cbam(out)
        return self.relu(out + residual)


class OfficialBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.cbam = OfficialCBAM(planes * 4, 16)

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out = self.cbam(out)
        return self.relu(out + residual)


OFFICIAL_ARCH = {18: (OfficialBasicBlock, [2, 2, 2, 2]),
                 34: (OfficialBasicBlock, [3, 4, 6, 3]),
                 50: (OfficialBottleneck, [3, 4, 6, 3]),
                 101: (OfficialBottleneck, [3, 4, 23, 3])}


class OfficialResNet(nn.Module):
    """The official 'ImageNet' ResNet with att_type='CBAM'; forward returns the output of
    each of the four stages."""

    def __init__(self, depth, num_classes=1000):
        super().__init__()
        block, layers = OFFICIAL_ARCH[depth]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avgpool = nn.AvgPool2d(7)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride,
                          bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs


# --- helpers shared with the timm test -------------------------------------------------
def randomize_(model, seed=0):
    """Random values in every weight, bias and BatchNorm statistic (kept at a scale that
    neither explodes nor vanishes through a deep random network)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=g)))
    return model


def evaluating(model):
    model.eval()  # mmdet's ResNet.train() returns None, so .eval() cannot be chained
    return model


def max_relative_error(ours, reference):
    """max |ours - reference| / max |reference| over the tensor."""
    return float((ours - reference).abs().max() / reference.abs().max())


def save_like_official(model, path, depth):
    """As the official train_imagenet.py: nn.DataParallel keys, the optimizer's state."""
    state = {'module.' + k: v for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    torch.save({'epoch': 90, 'arch': f'resnet{depth}', 'state_dict': state,
                'best_prec1': torch.tensor(77.6), 'optimizer': optimizer.state_dict()}, path)


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'tools', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def official_r18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('official') / 'RESNET18_CBAM.pth'
    save_like_official(randomize_(OfficialResNet(18), seed=18), path, 18)
    return path


# --- tests -------------------------------------------------------------------------------
@pytest.mark.parametrize('depth', [18, 50])
def test_converted_backbone_computes_the_official_features(depth, tmp_path, capsys):
    official = randomize_(OfficialResNet(depth), seed=depth).eval()
    src, dst = tmp_path / f'RESNET{depth}_CBAM.pth', tmp_path / 'converted.pth'
    save_like_official(official, src, depth)

    load_tool('convert_official_cbam').main([str(src), str(dst), '--depth', str(depth)])
    printed = capsys.readouterr().out
    assert 'dropped 2 keys (ImageNet classifier): fc.weight, fc.bias' in printed

    converted = torch.load(dst, weights_only=True)
    cfg = converted['meta']['backbone']
    assert cfg['type'] == ('ResNet' if depth >= 50 else 'PluginResNet')
    assert cfg['plugins'] == [dict(cfg=dict(type='CBAM', ratio=16),
                                   position='after_conv3' if depth >= 50 else 'after_conv2')]
    assert converted['meta']['dropped_keys'] == ['fc.weight', 'fc.bias']

    # No missing or unexpected keys: a strict load into the backbone it is meant for.
    strict = build_backbone(cfg)
    strict.load_state_dict(converted['state_dict'], strict=True)

    # The way a detector loads it: mmdet's Pretrained init_cfg (non-strict) on the backbone.
    backbone = MODELS.build(dict(cfg, init_cfg=dict(type='Pretrained', checkpoint=str(dst))))
    backbone.init_weights()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, converted['state_dict'][key]), key
    backbone.eval()

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = official(x)
        ours = backbone(x)
        ours_strict = evaluating(strict)(x)
    assert len(ours) == len(reference) == 4
    for stage, (o, s, r) in enumerate(zip(ours, ours_strict, reference), 1):
        assert o.shape == r.shape, stage
        assert max_relative_error(o, r) < 1e-5, (stage, max_relative_error(o, r))
        assert max_relative_error(s, r) < 1e-5, stage
    # The CBAM weights matter: the comparison would fail with CBAM at its initialisation.
    plain = evaluating(MODELS.build(dict(cfg, init_cfg=None)))
    sd = dict(converted['state_dict'])
    sd.update({k: v for k, v in plain.state_dict().items() if '.cbam.' in k})
    plain.load_state_dict(sd)
    with torch.no_grad():
        assert max_relative_error(plain(x)[-1], reference[-1]) > 1e-3


@pytest.mark.parametrize('depth', [34, 101])
def test_depths_34_and_101_convert_and_load_strictly(depth):
    official = randomize_(OfficialResNet(depth), seed=depth).eval()
    converted = convert_official_cbam(official.state_dict(), depth=depth)
    backbone = evaluating(build_backbone(converted.backbone))
    backbone.load_state_dict(converted.state_dict, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_relative_error(backbone(x)[-1], official(x)[-1]) < 1e-5


def test_read_state_dict_strips_the_dataparallel_prefix(official_r18_file):
    state = read_state_dict(official_r18_file)
    assert 'layer1.0.cbam.ChannelGate.mlp.1.weight' in state
    assert not any(k.startswith('module.') for k in state)


def test_file_without_a_state_dict_is_refused(tmp_path):
    path = tmp_path / 'not_weights.pth'
    torch.save({'epoch': 90, 'arch': 'resnet50'}, path)
    with pytest.raises(CheckpointConversionError,
                       match=r"no state dict found.*top-level entries are \['arch', 'epoch'\]"):
        read_state_dict(path)


def test_unknown_key_is_an_error_listing_it_and_nothing_is_written(official_r18_file, tmp_path):
    state = read_state_dict(official_r18_file)
    state['layer1.0.cbam.extra.weight'] = torch.zeros(3)
    state['bam1.conv.weight'] = torch.zeros(3)
    with pytest.raises(CheckpointConversionError) as err:
        convert_official_cbam(state)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert 'unknown keys (2)' in msg
    assert 'layer1.0.cbam.extra.weight' in msg and 'bam1.conv.weight' in msg

    src, dst = tmp_path / 'bad.pth', tmp_path / 'out.pth'
    torch.save({'state_dict': state}, src)
    with pytest.raises(CheckpointConversionError):
        convert_checkpoint_file(src, dst, 'official_cbam')
    assert not dst.exists()
    with pytest.raises(SystemExit, match=r'error: keys that map to no mmdet ResNet key'):
        load_tool('convert_official_cbam').main([str(src), str(dst)])
    assert not dst.exists()


def test_missing_keys_are_an_error_naming_both_names(official_r18_file):
    state = read_state_dict(official_r18_file)
    del state['layer2.1.cbam.SpatialGate.spatial.bn.running_var']
    del state['layer3.0.cbam.ChannelGate.mlp.3.bias']
    with pytest.raises(CheckpointConversionError) as err:
        convert_official_cbam(state)
    msg = str(err.value)
    assert 'missing keys (mmdet name <- expected source name) (2)' in msg
    assert ('layer2.1.cbam.spatial_attention.bn.running_var <- '
            'layer2.1.cbam.SpatialGate.spatial.bn.running_var') in msg
    assert ('layer3.0.cbam.channel_attention.fc2.bias <- '
            'layer3.0.cbam.ChannelGate.mlp.3.bias') in msg


def test_block_missing_cbam_entirely_is_an_error(official_r18_file):
    state = read_state_dict(official_r18_file)
    for key in [k for k in state if k.startswith('layer4.1.cbam.')]:
        del state[key]
    with pytest.raises(CheckpointConversionError,
                       match='layer4.1.cbam.channel_attention.fc1.weight'):
        convert_official_cbam(state)


def test_wrong_shape_is_an_error(official_r18_file):
    state = read_state_dict(official_r18_file)
    state['conv1.weight'] = torch.zeros(64, 3, 3, 3)  # the official CIFAR stem
    with pytest.raises(CheckpointConversionError,
                       match=r'conv1.weight: checkpoint \(64, 3, 3, 3\)'):
        convert_official_cbam(state)


def test_wrong_depth_is_an_error(official_r18_file, tmp_path):
    with pytest.raises(ValueError, match=r'depth=50 was asked for, but the checkpoint holds a '
                                         r'ResNet-18 \(BasicBlock blocks \(2, 2, 2, 2\)'):
        convert_checkpoint_file(official_r18_file, tmp_path / 'out.pth', 'official_cbam',
                                depth=50)


def test_timm_file_given_to_the_official_converter_is_refused():
    state = {'conv1.weight': torch.zeros(1), 'layer1.0.se.fc1.weight': torch.zeros(1)}
    with pytest.raises(CheckpointConversionError,
                       match='timm SE-ResNet.*tools/convert_timm_seresnet.py'):
        convert_official_cbam(state)


def test_plain_resnet_without_cbam_is_refused(official_r18_file):
    state = {k: v for k, v in read_state_dict(official_r18_file).items() if '.cbam.' not in k}
    with pytest.raises(CheckpointConversionError, match='no attention weights found'):
        convert_official_cbam(state)


def test_source_without_num_batches_tracked_gets_them_filled(official_r18_file):
    """Files saved by PyTorch < 0.4.1 have no BatchNorm counters; they do not change the
    output, so they are filled with 0 and reported instead of refused."""
    state = {k: v for k, v in read_state_dict(official_r18_file).items()
             if not k.endswith('num_batches_tracked')}
    converted = convert_official_cbam(state)
    assert len(converted.filled_keys) == 20 + 8  # 20 BNs of R-18, 8 spatial-gate BNs
    assert all(int(converted.state_dict[k]) == 0 for k in converted.filled_keys)


def pretrained_config(name, checkpoint):
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'pretrained', name))
    assert cfg.model.backbone.init_cfg.checkpoint == cfg.pretrained_backbone
    cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
    return cfg


def test_r18_config_starts_faster_rcnn_from_the_converted_checkpoint(official_r18_file,
                                                                      tmp_path):
    """The R-18 config: PluginResNet with CBAM after_conv2, loaded from the converted file,
    frozen_stages=1 accepted by FrozenAttentionCheckHook, and the detector runs."""
    from types import SimpleNamespace

    from cbam_mmdet.engine import FrozenAttentionCheckHook
    from mmdet.structures import DetDataSample

    dst = tmp_path / 'resnet18_cbam_mmdet.pth'
    convert_checkpoint_file(official_r18_file, dst, 'official_cbam')
    cfg = pretrained_config('faster_rcnn_r18_cbam_coco_imagenet_cbam.py', dst)
    assert cfg.model.backbone.frozen_stages == 1
    model = MODELS.build(cfg.model)
    model.init_weights()
    converted = torch.load(dst, weights_only=True)['state_dict']
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, converted[key]), key
    model.train()
    assert not model.backbone.layer1[0].cbam.channel_attention.fc1.weight.requires_grad
    runner = SimpleNamespace(model=model, _load_from=None, _resume=False)
    FrozenAttentionCheckHook().before_train(runner)  # no error: the plugins are pretrained

    model.eval()
    sample = DetDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96),
                                         scale_factor=(1.0, 1.0), pad_shape=(64, 96)))
    with torch.no_grad():
        results = model.predict(torch.randn(1, 3, 64, 96), [sample])
    assert results[0].pred_instances.bboxes.shape[-1] == 4


@pytest.mark.parametrize('name,depth', [('faster_rcnn_r50_cbam_coco_imagenet_cbam.py', 50),
                                        ('faster_rcnn_r101_cbam_coco_imagenet_cbam.py', 101),
                                        ('faster_rcnn_r34_cbam_coco_imagenet_cbam.py', 34)])
def test_cbam_configs_build_the_backbone_the_converter_targets(name, depth):
    official = OfficialResNet(depth)
    converted = convert_official_cbam(official.state_dict())
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'pretrained', name))
    backbone_cfg = dict(cfg.model.backbone)
    assert backbone_cfg['init_cfg'] == dict(type='Pretrained',
                                            checkpoint=cfg.pretrained_backbone)
    assert backbone_cfg['frozen_stages'] == 1
    for key in ('type', 'depth'):
        assert backbone_cfg[key] == converted.backbone[key], key
    assert backbone_cfg['plugins'] == converted.backbone['plugins']
