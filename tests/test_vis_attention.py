"""Attention maps recorded from CBAM/SE modules, and tools/vis_attention.py."""
import json
import os.path as osp
import runpy

import matplotlib.image as mpimg
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cbam_mmdet import CBAM, SE
from cbam_mmdet.visualization.attention_maps import (AttentionRecorder, channel_statistics,
                                                     group_by_stage, stage_of,
                                                     stage_spatial_maps)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CBAM_CONFIG = osp.join(ROOT, 'configs/demo/faster_rcnn_r50_shapes_cbam.py')
SE_CONFIG = osp.join(ROOT, 'configs/demo/faster_rcnn_r50_shapes_se.py')
NECK_CONFIG = osp.join(ROOT, 'configs/demo/faster_rcnn_r50_shapes_cbam_neck.py')


def randomize_spatial_bn(model):
    """CBAM's spatial BN starts with weight 0 (M_s = 0.5 everywhere): make it vary."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, CBAM) and m.spatial_attention is not None:
            bn = m.spatial_attention.bn
            bn.weight.data = torch.rand(1, generator=g) + 0.5
            bn.running_mean.data = torch.randn(1, generator=g)
            bn.running_var.data = torch.rand(1, generator=g) + 0.5
    return model


class Block(nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.cbam = attention

    def forward(self, x):
        return self.cbam(x)


@pytest.mark.parametrize('implementation', ['auto', 'reference'])
@pytest.mark.parametrize('options', [
    dict(), dict(arrangement='spatial_first'), dict(arrangement='parallel'),
    dict(spatial_attention=False), dict(channel_attention=False),
    dict(spatial_descriptor='conv1x1', spatial_kernel=3)])
def test_recorded_cbam_maps_reproduce_the_module_output(options, implementation):
    torch.manual_seed(0)
    model = randomize_spatial_bn(
        Block(CBAM(32, ratio=4, implementation=implementation, **options))).eval()
    x = torch.randn(2, 32, 9, 11)
    with AttentionRecorder(model) as rec:
        out = model(x)
    maps = rec.maps['cbam']
    assert maps.kind == 'CBAM'
    expected = x
    if maps.channel is not None:
        assert maps.channel.shape == (2, 32, 1, 1)
        assert 0 <= maps.channel.min() and maps.channel.max() <= 1
        expected = expected * maps.channel
    if maps.spatial is not None:
        assert maps.spatial.shape == (2, 1, 9, 11)
        assert 0 <= maps.spatial.min() and maps.spatial.max() <= 1
        assert maps.spatial.std() > 0
        expected = expected * maps.spatial
    assert (maps.channel is None) == (options.get('channel_attention') is False)
    assert (maps.spatial is None) == (options.get('spatial_attention') is False)
    # F'' = M_c F (M_s) in every arrangement: the maps are the ones the module applied
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_recorded_se_map_reproduces_the_module_output():
    torch.manual_seed(0)
    model = Block(SE(48, ratio=8)).eval()
    x = torch.randn(3, 48, 5, 7)
    with AttentionRecorder(model) as rec:
        out = model(x)
    maps = rec.maps['cbam']
    assert maps.kind == 'SE' and maps.spatial is None
    assert maps.channel.shape == (3, 48, 1, 1)
    assert 0 <= maps.channel.min() and maps.channel.max() <= 1
    torch.testing.assert_close(out, x * maps.channel, rtol=1e-5, atol=1e-5)


def test_recorder_refuses_training_mode_and_removes_its_hooks():
    model = Block(CBAM(16, ratio=4))
    with pytest.raises(RuntimeError, match='eval'):
        with AttentionRecorder(model):
            pass
    model.eval()
    with AttentionRecorder(model) as rec:
        model(torch.randn(1, 16, 4, 4))
    assert rec.maps
    rec.maps.clear()
    model(torch.randn(1, 16, 4, 4))
    assert not rec.maps and not model.cbam._forward_pre_hooks


def test_stage_grouping_and_reduction():
    assert stage_of('backbone.layer2.3.cbam') == 'backbone.layer2'
    assert stage_of('backbone.layer10.0.cbam') == 'backbone.layer10'
    assert stage_of('neck.attentions.1') == 'neck.attentions.1'
    from cbam_mmdet.visualization.attention_maps import AttentionMaps
    s1, s2 = torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4)
    maps = {n: AttentionMaps(n, 'CBAM', torch.rand(1, 8, 1, 1), s)
            for n, s in (('backbone.layer1.0.cbam', s1), ('backbone.layer1.1.cbam', s2))}
    maps['neck.attentions.0'] = AttentionMaps('neck.attentions.0', 'SE',
                                              torch.rand(1, 8, 1, 1), None)
    assert list(group_by_stage(maps)) == ['backbone.layer1', 'neck.attentions.0']
    last = stage_spatial_maps(maps, 'last')
    assert list(last) == ['backbone.layer1']  # the SE stage has no spatial map
    torch.testing.assert_close(last['backbone.layer1'], s2[0, 0])
    torch.testing.assert_close(stage_spatial_maps(maps, 'mean')['backbone.layer1'],
                               (s1 + s2)[0, 0] / 2)
    with pytest.raises(ValueError, match='reduce must be one of'):
        stage_spatial_maps(maps, 'max')
    stats = channel_statistics(maps)
    assert [s['name'] for s in stats] == list(maps)
    assert stats[0]['mean'] == pytest.approx(float(maps['backbone.layer1.0.cbam'].channel.mean()))


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """A 160x120 scene of the embedded dataset, as a PNG file."""
    from cbam_mmdet.datasets import generate_scene
    img, _, _ = generate_scene(7, 0, height=120, width=160, min_size=12, max_size=48)
    path = str(tmp_path_factory.mktemp('images') / 'scene.png')
    mpimg.imsave(path, img)
    return path


def save_random_checkpoint(config, path):
    """A checkpoint of the config's model at its initialisation (spatial BN randomised),
    with the embedded dataset's class names."""
    from cbam_mmdet.visualization.inference import load_detector
    model = randomize_spatial_bn(load_detector(config))
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=('circle', 'square', 'triangle')))),
               path)
    return path


def run_tool(name, argv):
    """``main(argv)`` of tools/<name>, in this process (argument parsing included)."""
    return runpy.run_path(osp.join(ROOT, 'tools', name))['main'](argv)


def assert_png(path):
    assert osp.getsize(path) > 1000
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0  # not a blank image


def test_cbam_detector_maps_have_the_stage_shapes(scene):
    from cbam_mmdet.visualization.attention_figures import record_attention
    from cbam_mmdet.visualization.inference import load_detector
    model = randomize_spatial_bn(load_detector(CBAM_CONFIG))
    result, maps, img, sample = record_attention(model, scene)
    assert img.shape == (120, 160, 3)
    # ResNet-50 stages of 3, 4, 6, 3 blocks, base_channels 16: C = 64..512, strides
    # 4..32 over the padded input the data preprocessor made
    h, w = sample.metainfo['batch_input_shape']
    assert len(maps) == 16
    stages = group_by_stage(maps)
    expected = {f'backbone.layer{i + 1}': (blocks, 64 * 2 ** i, h // 2 ** (i + 2),
                                           w // 2 ** (i + 2))
                for i, blocks in enumerate((3, 4, 6, 3))}
    assert list(stages) == list(expected)
    for stage, (blocks, c, h, w) in expected.items():
        assert len(stages[stage]) == blocks
        for rec in stages[stage]:
            assert rec.channel.shape == (1, c, 1, 1)
            assert rec.spatial.shape == (1, 1, h, w)
            for m in (rec.channel, rec.spatial):
                assert 0 <= float(m.min()) and float(m.max()) <= 1
    assert len(result.pred_instances) > 0


def test_neck_attention_maps_are_recorded_per_level(scene):
    from cbam_mmdet.visualization.attention_figures import record_attention
    from cbam_mmdet.visualization.inference import load_detector
    _, maps, _, sample = record_attention(load_detector(NECK_CONFIG), scene)
    h, w = sample.metainfo['batch_input_shape']
    assert list(maps) == [f'neck.attentions.{i}' for i in range(5)]
    sizes = [(h // 4, w // 4)]
    for _ in range(4):  # FPN levels, strides 4..64 (P6 by max pooling, stride 2)
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    assert [tuple(m.spatial.shape[2:]) for m in maps.values()] == sizes
    assert all(m.channel.shape == (1, 64, 1, 1) for m in maps.values())


@pytest.mark.parametrize('config,kind', [(CBAM_CONFIG, 'CBAM'), (SE_CONFIG, 'SE')])
def test_tool_writes_attention_pngs(config, kind, scene, tmp_path):
    ckpt = save_random_checkpoint(config, str(tmp_path / 'model.pth'))
    out_dir = tmp_path / 'vis'
    written = run_tool('vis_attention.py', [config, ckpt, scene, '--out-dir', str(out_dir),
                                            '--score-thr', '0.05'])
    assert sorted(map(osp.basename, written)) == [
        'scene_attention.png', 'scene_channel_attention.json', 'scene_channel_attention.png']
    assert_png(out_dir / 'scene_attention.png')
    assert_png(out_dir / 'scene_channel_attention.png')
    stats = json.loads((out_dir / 'scene_channel_attention.json').read_text())
    assert len(stats) == 16 and {s['kind'] for s in stats} == {kind}
    assert [s['channels'] for s in stats[:3]] == [64, 64, 64]
    assert all(0 <= s['min'] <= s['mean'] <= s['max'] <= 1 for s in stats)


def test_model_without_attention_is_refused(scene):
    from cbam_mmdet.visualization.attention_figures import record_attention
    from cbam_mmdet.visualization.inference import load_detector
    model = load_detector(osp.join(ROOT, 'configs/demo/faster_rcnn_r50_shapes.py'))
    with pytest.raises(ValueError, match='no CBAM or SE module'):
        record_attention(model, scene)


def test_bad_scale_is_refused(scene, tmp_path):
    from cbam_mmdet.visualization.attention_figures import visualize_attention
    from cbam_mmdet.visualization.inference import load_detector
    with pytest.raises(ValueError, match='scale must be one of'):
        visualize_attention(load_detector(CBAM_CONFIG), scene, str(tmp_path), scale='log')


def test_maps_of_a_shipped_config_follow_the_papers_equations():
    """configs/faster_rcnn_r50_cbam_coco.py as shipped: the maps the figures draw for
    layer3's last block equal M_c and M_s computed by hand on that plugin's real input."""
    from mmengine.config import Config

    from cbam_mmdet.visualization.attention_figures import record_attention
    from cbam_mmdet.visualization.attention_maps import stage_spatial_maps
    from cbam_mmdet.visualization.inference import load_detector
    cfg = Config.fromfile(osp.join(ROOT, 'configs/faster_rcnn_r50_cbam_coco.py'))
    cfg.model.backbone.init_cfg = None
    for step in cfg.test_dataloader.dataset.pipeline:
        if step.type == 'Resize':
            step.scale = (96, 64)
    model = randomize_spatial_bn(load_detector(cfg))
    cbam = model.backbone.layer3[-1].cbam
    seen = []
    handle = cbam.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        image = torch.randint(0, 256, (64, 96, 3), dtype=torch.uint8).numpy()
        _, maps, _, _ = record_attention(model, image)
    finally:
        handle.remove()
    x = seen[-1]
    ca, sa = cbam.channel_attention, cbam.spatial_attention

    def mlp(v):
        return F.linear(torch.relu(F.linear(v, ca.fc1.weight, ca.fc1.bias)),
                        ca.fc2.weight, ca.fc2.bias)

    with torch.no_grad():
        m_c = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
        f1 = m_c * x
        z = F.conv2d(torch.cat([f1.amax(1, keepdim=True), f1.mean(1, keepdim=True)], 1),
                     sa.conv.weight, padding=sa.conv.weight.shape[-1] // 2)
        bn = sa.bn
        m_s = torch.sigmoid((z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
                            * bn.weight + bn.bias)
    recorded = maps['backbone.layer3.5.cbam']
    assert m_s.std() > 0
    torch.testing.assert_close(recorded.channel, m_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(recorded.spatial, m_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stage_spatial_maps(maps)['backbone.layer3'], m_s[0, 0],
                               rtol=1e-5, atol=1e-5)
