"""timm SE-ResNet state dicts -> mmdet ResNet (+ PluginResNet) + SE.

timm's seresnet is restated here with timm's module names (ResNet, BasicBlock,
Bottleneck, SEModule with 1x1 convolutions with bias, hidden size rounded by
make_divisible to a multiple of 8); a randomised copy is saved as timm's hub weights
(a plain state dict) or as its train script (under 'state_dict'), converted, loaded into
mmdet's backbone, and every stage's output is compared in eval mode.
"""
import pytest
import torch
import torch.nn as nn
from mmdet.registry import MODELS

from cbam_mmdet.convert import (CheckpointConversionError, build_backbone,
                                plugin_architecture,
                                convert_checkpoint_file, convert_timm_seresnet)
from test_convert_official_cbam import (OfficialResNet, evaluating, load_tool,
                                        max_relative_error, pretrained_config, randomize_)


def make_divisible(v, divisor=8):
    """timm.layers.make_divisible with round_limit=0 (what SEModule uses)."""
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class SEModule(nn.Module):
    def __init__(self, channels, rd_ratio=1 / 16):
        super().__init__()
        rd_channels = make_divisible(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.fc2(self.act(self.bn(self.fc1(x_se))))
        return x * self.gate(x_se)


class TimmBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SEModule(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.se(self.bn2(self.conv2(x)))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act2(x + shortcut)


class TimmBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        outplanes = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.se = SEModule(outplanes)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.se(self.bn3(self.conv3(x)))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


TIMM_ARCH = {18: (TimmBasicBlock, [2, 2, 2, 2]), 34: (TimmBasicBlock, [3, 4, 6, 3]),
             50: (TimmBottleneck, [3, 4, 6, 3]), 101: (TimmBottleneck, [3, 4, 23, 3])}


class TimmSEResNet(nn.Module):
    """timm's seresnet{18,34,50,101}: forward returns the four stages' outputs."""

    def __init__(self, depth, num_classes=1000):
        super().__init__()
        block, layers = TIMM_ARCH[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(inplanes, planes, stride, downsample)]
            inplanes = planes * block.expansion
            blocks += [block(inplanes, planes) for _ in range(1, n)]
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        outs = []
        for i in range(1, 5):
            x = getattr(self, f'layer{i}')(x)
            outs.append(x)
        return outs


@pytest.mark.parametrize('depth,saved_as', [(18, 'hub'), (50, 'train')])
def test_converted_backbone_computes_timm_features(depth, saved_as, tmp_path, capsys):
    timm = randomize_(TimmSEResNet(depth), seed=100 + depth).eval()
    src, dst = tmp_path / f'seresnet{depth}.pth', tmp_path / 'converted.pth'
    if saved_as == 'hub':  # timm's pytorch_model.bin: the plain state dict
        torch.save(timm.state_dict(), src)
    else:  # timm's train.py checkpoint
        torch.save({'epoch': 3, 'arch': f'seresnet{depth}', 'state_dict': timm.state_dict(),
                    'version': 2, 'args': None}, src)

    load_tool('convert_timm_seresnet').main([str(src), str(dst)])
    assert 'dropped 2 keys (ImageNet classifier): fc.weight, fc.bias' in capsys.readouterr().out

    converted = torch.load(dst, weights_only=True)
    cfg = converted['meta']['backbone']
    if depth == 50:  # seresnet50: C/16 hidden in every stage
        assert cfg == dict(type='ResNet', depth=50, plugins=[
            dict(cfg=dict(type='SE', ratio=16), position='after_conv3')])
    else:  # seresnet18: 64 -> 8 hidden (ratio 8), then 128 -> 8, 256 -> 16, 512 -> 32
        assert cfg == dict(type='PluginResNet', depth=18, plugins=[
            dict(cfg=dict(type='SE', ratio=8), stages=(True, False, False, False),
                 position='after_conv2'),
            dict(cfg=dict(type='SE', ratio=16), stages=(False, True, True, True),
                 position='after_conv2')])
    assert converted['meta']['source_format'] == 'timm_seresnet'

    build_backbone(cfg).load_state_dict(converted['state_dict'], strict=True)
    backbone = MODELS.build(dict(cfg, init_cfg=dict(type='Pretrained', checkpoint=str(dst))))
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference, ours = timm(x), backbone(x)
    for stage, (o, r) in enumerate(zip(ours, reference), 1):
        assert max_relative_error(o, r) < 1e-5, (stage, max_relative_error(o, r))
    # The SE weights matter: with SE at its initialisation the features differ.
    plain = evaluating(MODELS.build(dict(cfg, init_cfg=None)))
    sd = dict(converted['state_dict'])
    sd.update({k: v for k, v in plain.state_dict().items() if '.se.' in k})
    plain.load_state_dict(sd)
    with torch.no_grad():
        assert max_relative_error(plain(x)[-1], reference[-1]) > 1e-3


def test_se_weights_become_linear_weights():
    timm = TimmSEResNet(50)
    converted = convert_timm_seresnet(timm.state_dict())
    w = timm.layer2[0].se.fc1.weight
    assert w.shape == (32, 512, 1, 1)
    assert converted.state_dict['layer2.0.se.fc1.weight'].shape == (32, 512)
    assert torch.equal(converted.state_dict['layer2.0.se.fc1.weight'], w[:, :, 0, 0])


def test_hidden_size_no_integer_ratio_gives_is_an_error():
    state = TimmSEResNet(18).state_dict()
    for b in (0, 1):  # layer1: 64 channels, 11 hidden: 64 // 5 = 12, 64 // 6 = 10
        state[f'layer1.{b}.se.fc1.weight'] = torch.zeros(11, 64, 1, 1)
        state[f'layer1.{b}.se.fc1.bias'] = torch.zeros(11)
        state[f'layer1.{b}.se.fc2.weight'] = torch.zeros(64, 11, 1, 1)
    with pytest.raises(CheckpointConversionError,
                       match=r'no integer reduction ratio r gives the hidden sizes of layer1 '
                             r'\(\[\(64, 11\)\]'):
        convert_timm_seresnet(state)


def test_unknown_and_missing_keys_are_errors(tmp_path):
    state = TimmSEResNet(50).state_dict()
    state['layer1.0.se.bn.weight'] = torch.ones(16)  # an SE with a norm layer
    with pytest.raises(CheckpointConversionError,
                       match=r'unknown keys \(1\):\n  layer1.0.se.bn.weight'):
        convert_timm_seresnet(state)
    del state['layer1.0.se.bn.weight']
    del state['layer3.5.se.fc2.bias']
    src, dst = tmp_path / 'seresnet50.pth', tmp_path / 'out.pth'
    torch.save(state, src)
    with pytest.raises(CheckpointConversionError,
                       match=r'layer3.5.se.fc2.bias <- layer3.5.se.fc2.bias'):
        convert_checkpoint_file(src, dst, 'timm_seresnet')
    assert not dst.exists()


def test_official_cbam_file_given_to_the_timm_converter_is_refused():
    with pytest.raises(CheckpointConversionError,
                       match='official ResNet \\+ CBAM.*tools/convert_official_cbam.py'):
        convert_timm_seresnet(OfficialResNet(18).state_dict())


def test_wrong_depth_is_an_error():
    with pytest.raises(ValueError, match='depth=101 was asked for, but the checkpoint holds '
                                         'a ResNet-50'):
        convert_timm_seresnet(TimmSEResNet(50).state_dict(), depth=101)


def test_se_config_loads_the_converted_checkpoint_with_frozen_stage(tmp_path):
    from types import SimpleNamespace

    from cbam_mmdet.engine import FrozenAttentionCheckHook

    src, dst = tmp_path / 'seresnet50.pth', tmp_path / 'seresnet50_mmdet.pth'
    torch.save(randomize_(TimmSEResNet(50), seed=5).state_dict(), src)
    converted = convert_checkpoint_file(src, dst, 'timm_seresnet')
    cfg = pretrained_config('faster_rcnn_r50_se_coco_timm_se.py', dst)
    for key in ('type', 'depth'):
        assert cfg.model.backbone[key] == converted.backbone[key], key
    assert plugin_architecture(cfg.model.backbone.plugins) == converted.backbone['plugins']
    model = MODELS.build(cfg.model)
    model.init_weights()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, converted.state_dict[key]), key
    model.train()
    runner = SimpleNamespace(model=model, _load_from=None, _resume=False)
    FrozenAttentionCheckHook().before_train(runner)  # frozen layer1 SE is pretrained: ok


@pytest.mark.parametrize('name,depth', [('faster_rcnn_r101_se_coco_timm_se.py', 101)])
def test_se_configs_build_the_backbone_the_converter_targets(name, depth):
    converted = convert_timm_seresnet(TimmSEResNet(depth).state_dict())
    cfg = pretrained_config(name, 'unused.pth')
    assert cfg.model.backbone.frozen_stages == 1
    for key in ('type', 'depth'):
        assert cfg.model.backbone[key] == converted.backbone[key], key
    assert plugin_architecture(cfg.model.backbone.plugins) == converted.backbone['plugins']
