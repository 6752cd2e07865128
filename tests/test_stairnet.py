"""StairNet300 VGG16 (CBAM paper Table 7): the neck's top-down path, parameter counts
against the paper, gradients through every layer, and 2 training iterations + a VOC test
of each config on tiny generated images."""
import os

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

from cbam_mmdet import CBAM, SE
from cbam_mmdet.complexity import paper_detector_params
from cbam_mmdet.models import StairNetNeck
from cbam_mmdet.offline_model import build_model_offline
from test_voc_end_to_end import CLASSES, TINY_CONFIG, write_voc2007

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: config -> (the paper's Table 7 params in millions, attention type)
CONFIGS = {'stairnet300_vgg16_voc0712.py': (32.0, None),
           'stairnet300_vgg16_se_voc0712.py': (32.1, SE),
           'stairnet300_vgg16_cbam_voc0712.py': (32.1, CBAM)}
SIZES = [38, 19, 10, 5, 3, 1]


def config(name):
    return os.path.join(ROOT, 'configs', name)


def vgg_features(batch=2):
    """SSD300's VGG16 outputs: conv4_3 (512 x 38 x 38) and fc7 (1024 x 19 x 19)."""
    return [torch.randn(batch, 512, 38, 38), torch.randn(batch, 1024, 19, 19)]


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_params_are_the_papers_within_0_06m(name):
    paper, attention = CONFIGS[name]
    model = build_model_offline(config(name))
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / 1e6 - paper) <= 0.06, params
    assert paper_detector_params(Config.fromfile(config(name)).model) == paper
    modules = [m for m in model.modules() if isinstance(m, (CBAM, SE))]
    assert [type(m) for m in modules] == ([attention] * 6 if attention else [])
    assert model.bbox_head.num_classes == 20
    assert model.bbox_head.num_base_priors == [6, 6, 6, 6, 4, 4]  # [2, 3] at conv4_3


def test_top_down_path_gives_256_channels_at_every_level_of_a_300x300_input():
    model = build_model_offline(config('stairnet300_vgg16_voc0712.py')).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 300, 300))
        merged = model.neck.top_down(model.neck.sources(model.backbone(
            torch.randn(1, 3, 300, 300))))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, s, s) for s in SIZES]
    assert [tuple(t.shape[1:]) for t in merged] == [(256, s, s) for s in SIZES]


def test_five_output_option_is_the_codes_forward_without_the_1x1_head():
    six, five = StairNetNeck(), StairNetNeck(num_outs=5)
    five.init_weights()
    with torch.no_grad():
        outs = five.eval()(vgg_features(1))
    assert [o.shape[-1] for o in outs] == SIZES[:5]
    head_conv = 256 * 256 * 9 + 2 * 256
    assert sum(p.numel() for p in six.parameters()) - \
        sum(p.numel() for p in five.parameters()) == head_conv


@pytest.mark.parametrize('attention', [None, 'CBAM', 'SE'])
def test_gradients_reach_every_lateral_top_down_and_attention_layer(attention):
    torch.manual_seed(0)
    neck = StairNetNeck(attention=attention and dict(type=attention, ratio=16))
    neck.init_weights()  # SSDNeck's L2Norm scale (20) is set here
    neck.train()
    sum(o.square().mean() for o in neck(vgg_features())).backward()
    layers = [*neck.laterals, *neck.upsamples, *neck.head_convs, neck.sources]
    layers += list(neck.attentions) if attention else []
    assert len(layers) == 6 + 5 + 6 + 1 + (6 if attention else 0)
    for layer in layers:
        grads = [p.grad for p in layer.parameters()]
        assert all(g is not None for g in grads), layer
        assert any(g.abs().sum() > 0 for g in grads), layer


@pytest.mark.parametrize('kwargs,field', [
    (dict(num_outs=7), 'num_outs'), (dict(num_outs=0), 'num_outs'),
    (dict(upsample_strides=(2, 2, 2, 1)), 'upsample_strides'),
    (dict(upsample_strides=(2, 2, 2, 3, 1)), 'upsample_strides'),
    (dict(attention=dict(type='CBAM', in_channels=256)), 'attention'),
    (dict(attention='CBAM'), 'attention'), (dict(out_channels=0), 'out_channels')])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        StairNetNeck(**kwargs)


def test_registered_in_mmdet_models():
    assert isinstance(MODELS.build(dict(type='StairNetNeck')), StairNetNeck)


#: test_voc_end_to_end's tiny VOC config made SSD300's: 300x300, 2 iterations, no validation
STAIRNET_TINY = TINY_CONFIG.replace(
    '(128, 128), keep_ratio=True', '(300, 300), keep_ratio=False').replace(
    'model = dict(roi_head=dict(bbox_head=dict(num_classes=3)))', '''
model = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=3))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2, val_interval=100)
param_scheduler = []
default_hooks = dict(checkpoint=dict(interval=100, by_epoch=False), logger=dict(interval=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
val_dataloader = val_evaluator = val_cfg = None
''')


@pytest.fixture(scope='module')
def tiny_voc(tmp_path_factory):
    return write_voc2007(str(tmp_path_factory.mktemp('voc')), n_trainval=2, n_test=1, size=64)


@pytest.mark.parametrize('name', [
    'stairnet300_vgg16_cbam_voc0712.py',  # the neck, CBAM and head: in the default run
    pytest.param('stairnet300_vgg16_voc0712.py', marks=pytest.mark.slow),
    pytest.param('stairnet300_vgg16_se_voc0712.py', marks=pytest.mark.slow)])
def test_config_trains_2_iterations_and_tests_with_voc_map(name, tiny_voc, tmp_path):
    from mmengine.runner import Runner
    assert '(300, 300), keep_ratio=False' in STAIRNET_TINY and 'max_iters=2' in STAIRNET_TINY
    cfg_file = tmp_path / f'tiny_{name}'
    cfg_file.write_text(STAIRNET_TINY.format(base=config(name), data_root=tiny_voc,
                                             classes=CLASSES))
    cfg = Config.fromfile(str(cfg_file))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    # VGG16's backward is most of a CPU step: frozen here, StairNet's layers train.
    runner.model.backbone.requires_grad_(False)
    before = {k: v.clone() for k, v in runner.model.neck.state_dict().items()}
    runner.train()
    assert runner.iter == 2
    after = runner.model.neck.state_dict()
    for prefix in ('laterals.0.conv', 'upsamples.0.deconv', 'head_convs.5.conv'):
        assert not torch.equal(before[f'{prefix}.weight'], after[f'{prefix}.weight']), prefix
    metrics = runner.test()
    assert 0.0 <= metrics['pascal_voc/mAP'] <= 1.0


def test_voc_stairnet_preset_has_table_7s_numbers():
    from cbam_mmdet.reproduce import PRESETS
    preset = PRESETS['voc-stairnet']
    assert [(v.name, os.path.basename(v.config), v.paper) for v in preset.variants] == [
        ('baseline', 'stairnet300_vgg16_voc0712.py', dict(mAP=78.9)),
        ('SE', 'stairnet300_vgg16_se_voc0712.py', dict(mAP=79.1)),
        ('CBAM', 'stairnet300_vgg16_cbam_voc0712.py', dict(mAP=79.3))]
    assert preset.metrics == {'mAP': 'pascal_voc/mAP'} and not preset.runs_here
    assert preset.input_shape == (3, 300, 300) and 'Table 7' in preset.paper_note


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_configs_train_on_voc0712_and_test_on_voc2007_with_11_point_map(name):
    cfg = Config.fromfile(config(name))
    concat = cfg.train_dataloader.dataset.dataset
    assert [d.ann_file for d in concat.datasets] == [
        'VOC2007/ImageSets/Main/trainval.txt', 'VOC2012/ImageSets/Main/trainval.txt']
    assert cfg.test_dataloader.dataset.ann_file == 'VOC2007/ImageSets/Main/test.txt'
    assert cfg.test_evaluator.type == 'VOCMetric' and cfg.test_evaluator.eval_mode == '11points'
    assert 'cbam_mmdet' in cfg.custom_imports['imports']
