"""NeckAttention: one attention module on every output level of any neck."""
import os

import pytest
import torch
from mmdet.registry import MODELS

from cbam_mmdet import CBAM, SE
from cbam_mmdet.models.neck_attention import NeckAttention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPN = dict(type='FPN', in_channels=[16, 32, 64, 128], out_channels=32, num_outs=5)
SSD_NECK = dict(type='SSDNeck', in_channels=(512, 1024),
                out_channels=(512, 1024, 512, 256, 256, 256), level_strides=(2, 2, 1, 1),
                level_paddings=(1, 1, 0, 0), l2_norm_scale=20)


def fpn_inputs():
    return [torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate([16, 32, 64, 128])]


def ssd_inputs():
    # SSD300's VGG16 features: 512 x 38 x 38 and 1024 x 19 x 19 (batch 2: CBAM's
    # spatial BatchNorm needs more than one value on the 1 x 1 level in training).
    return [torch.randn(2, 512, 38, 38), torch.randn(2, 1024, 19, 19)]


@pytest.mark.parametrize('neck,inputs,channels', [
    (FPN, fpn_inputs, [32] * 5),
    (SSD_NECK, ssd_inputs, [512, 1024, 512, 256, 256, 256]),
])
@pytest.mark.parametrize('attention', [CBAM, SE])
def test_outputs_match_the_inner_neck_with_one_module_per_level(neck, inputs, channels,
                                                                 attention):
    torch.manual_seed(0)
    wrapped = MODELS.build(dict(type='NeckAttention', neck=neck,
                                attention=dict(type=attention.__name__, ratio=16)))
    wrapped.init_weights()
    assert isinstance(wrapped, NeckAttention)
    assert [type(m) for m in wrapped.attentions] == [attention] * len(channels)
    assert [m.in_channels for m in wrapped.attentions] == channels
    x = inputs()
    inner = wrapped.neck(x)
    outs = wrapped(x)
    assert [o.shape for o in outs] == [o.shape for o in inner]
    # Each output is the inner neck's output refined by that level's module.
    for att, o, i in zip(wrapped.attentions, outs, inner):
        torch.testing.assert_close(o, att(i))
    sum(o.sum() for o in outs).backward()
    for att in wrapped.attentions:
        grads = [p.grad for p in att.parameters()]
        assert all(g is not None for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_inner_neck_state_dict_keys_sit_under_neck_prefix():
    wrapped = NeckAttention(neck=FPN, attention=dict(type='CBAM'))
    plain = MODELS.build(FPN)
    keys = wrapped.state_dict().keys()
    assert {'neck.' + k for k in plain.state_dict()} <= set(keys)
    assert 'attentions.4.spatial_attention.conv.weight' in keys
    wrapped.neck.load_state_dict(plain.state_dict())  # a plain FPN's weights load as is


def test_cbam_after_the_fpn_of_faster_rcnn_builds_and_runs():
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'faster_rcnn_r50_coco.py'))
    fpn = cfg.model.neck.to_dict()
    cfg.model.neck = dict(type='NeckAttention', neck=fpn, attention=dict(type='CBAM'))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    assert [m.in_channels for m in model.neck.attentions] == [256] * 5
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    assert len(feats) == 5 and all(f.shape[1] == 256 for f in feats)


def test_explicit_in_channels_for_a_neck_without_out_channels():
    neck = dict(type='ChannelMapper', in_channels=[8, 16], out_channels=8)
    m = NeckAttention(neck=neck, attention=dict(type='SE', ratio=4), in_channels=[8, 8])
    outs = m([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)])
    assert [o.shape[1] for o in outs] == [8, 8]
    m = NeckAttention(neck=neck, attention=dict(type='SE', ratio=4), num_levels=2)
    assert [a.in_channels for a in m.attentions] == [8, 8]


@pytest.mark.parametrize('kwargs,match', [
    (dict(neck=dict(type='ChannelMapper', in_channels=[8, 16], out_channels=8),
          attention=dict(type='SE', ratio=4)), 'num_levels'),
    (dict(neck=FPN, attention=dict(type='CBAM', in_channels=32)), 'must not set in_channels'),
    (dict(neck=FPN, attention='CBAM'), 'attention must be a config dict'),
    (dict(neck=None, attention=dict(type='CBAM')), 'neck must be a config dict'),
    (dict(neck=FPN, attention=dict(type='CBAM'), in_channels=[32, 0]), 'in_channels'),
    (dict(neck=FPN, attention=dict(type='CBAM'), in_channels='32'), 'in_channels'),
    (dict(neck=dict(type='ChannelMapper', in_channels=[8], out_channels=8),
          attention=dict(type='SE', ratio=4), num_levels=0), 'num_levels'),
])
def test_bad_configs_raise_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeckAttention(**kwargs)


def test_neck_without_any_channel_information_is_refused():
    @MODELS.register_module(force=True)
    class _IdentityNeckForTest(torch.nn.Module):
        def forward(self, x):
            return tuple(x)

    with pytest.raises(ValueError, match='cannot infer the output channels'):
        NeckAttention(neck=dict(type='_IdentityNeckForTest'), attention=dict(type='CBAM'))


def test_level_count_mismatch_is_refused_at_forward():
    m = NeckAttention(neck=FPN, attention=dict(type='SE', ratio=4), in_channels=[32] * 4)
    with pytest.raises(ValueError, match='returned 5 levels'):
        m(fpn_inputs())
