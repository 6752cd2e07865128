"""The placement studies (presets placement, placement-neu): every placement builds, puts
its modules where it says (names, channels, the tensors they see), adds the documented
parameters, trains and loads its own checkpoints strictly; existing keys do not move."""
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from cbam_mmdet import CBAM, SE
from cbam_mmdet.apis import build_train_config, run_train
from cbam_mmdet.checkpoint import latest_checkpoint
from cbam_mmdet.engine.plugin_check import UnknownPluginError, check_model_plugins
from cbam_mmdet.models import AttentionResNet, NeckAttention
from cbam_mmdet.offline_model import build_model_offline, load_config
from cbam_mmdet.reproduce import PRESETS, iteration_budget

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = {v.name: osp.join(ROOT, v.config) for v in PRESETS['placement'].variants}
NEU = {v.name: osp.join(ROOT, v.config) for v in PRESETS['placement-neu'].variants}
BLOCKS = (3, 4, 6, 3)  # ResNet-50


def in_blocks(channels):
    return {f'backbone.layer{s + 1}.{b}.cbam': c for s, c in enumerate(channels)
            for b in range(BLOCKS[s])}


# the demo's narrow ResNet-50 (base_channels=16) and FPN (64 channels, 5 levels)
STEM = {'backbone.stem_attention': 16}
STAGE_INPUTS = {f'backbone.layer{i + 1}_input_attention': c
                for i, c in enumerate((16, 64, 128, 256))}
BLOCK_END = in_blocks((64, 128, 256, 512))
AFTER_NECK = {f'neck.attentions.{i}': 64 for i in range(5)}
EXPECTED = {
    'baseline': {}, 'stem': STEM, 'stage inputs': STAGE_INPUTS,
    'after_conv1': in_blocks((16, 32, 64, 128)), 'after_conv2': in_blocks((16, 32, 64, 128)),
    'block end (paper)': BLOCK_END,
    'backbone outputs': {f'neck.attentions.{i}': c for i, c in enumerate((64, 128, 256, 512))},
    'after neck': AFTER_NECK, 'stem + block end': {**STEM, **BLOCK_END},
    'stem + neck': {**STEM, **AFTER_NECK},
    'stage inputs + block end': {**STAGE_INPUTS, **BLOCK_END}}

# parameters each placement adds to the full-width ResNet-50 / FPN of configs/neu/
NEU_ADDED = {'baseline': 0, 'stem': 680, 'stage inputs': 174_916, 'after_conv1': 162_796,
             'after_conv2': 162_796, 'block end (paper)': 2_532_592,
             'backbone outputs': 700_800, 'after neck': 42_820, 'stem + block end': 2_533_272,
             'stem + neck': 43_500, 'stage inputs + block end': 2_707_508}


def attention_modules(model):
    return {name: m.in_channels for name, m in model.named_modules()
            if isinstance(m, (CBAM, SE))}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def build(config, part=None):
    """The detector of ``config`` (or its ``part``), built without initialisation."""
    model_cfg = load_config(config).model
    return MODELS.build(model_cfg[part] if part else model_cfg)


@pytest.fixture(scope='module')
def demo_models():
    torch.manual_seed(0)
    return {name: build(config) for name, config in DEMO.items()}


def test_the_presets_compare_the_same_placements():
    assert list(DEMO) == list(NEU) == list(EXPECTED)


def test_every_placement_puts_its_modules_where_it_says(demo_models):
    for name, model in demo_models.items():
        assert attention_modules(model) == EXPECTED[name], name


def test_added_parameters_are_the_modules_and_match_the_documented_counts(demo_models):
    base = n_params(demo_models['baseline'])
    for name, model in demo_models.items():
        added = sum(p.numel() for n, p in model.named_parameters()
                    if any(n.startswith(module + '.') for module in EXPECTED[name]))
        assert n_params(model) - base == added, name
    def backbone_and_neck(name):
        return n_params(build(NEU[name], 'backbone')) + n_params(build(NEU[name], 'neck'))

    neu_base = backbone_and_neck('baseline')
    for name, added in NEU_ADDED.items():
        assert backbone_and_neck(name) - neu_base == added, name


def test_pre_and_post_modules_see_the_maps_they_say(demo_models):
    """Stem and stage-input attention sit on the path into each stage, not on what the neck
    receives; NeckAttention(position='before') on exactly what the neck receives."""
    seen, calls = {}, []

    def record(name):
        def hook(module, inputs, output):
            calls.append(name)
            seen[name] = (inputs[0], output)
        return hook

    model = demo_models['stage inputs']
    backbone = model.backbone
    assert isinstance(backbone, AttentionResNet)
    names = [f'layer{i}{s}' for i in range(1, 5) for s in ('_input_attention', '')]
    for name in ['maxpool'] + names:
        getattr(backbone, name).register_forward_hook(record(name))
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 64, 64))
    assert calls == ['maxpool'] + names
    assert seen['layer1_input_attention'][0] is seen['maxpool'][1]
    for i in range(1, 5):
        assert seen[f'layer{i}'][0] is seen[f'layer{i}_input_attention'][1]
        assert outs[i - 1] is seen[f'layer{i}'][1]  # the neck gets the stage's own output
        if i > 1:
            assert seen[f'layer{i}_input_attention'][0] is seen[f'layer{i - 1}'][1]

    neck = demo_models['backbone outputs'].neck
    assert isinstance(neck, NeckAttention) and neck.position == 'before'
    received = []
    neck.neck.register_forward_hook(lambda m, inputs, out: received.append(inputs[0]))
    feats = tuple(torch.randn(1, c, s, s) for c, s in zip((64, 128, 256, 512), (16, 8, 4, 2)))
    with torch.no_grad():
        expected = tuple(att(f) for att, f in zip(neck.attentions, feats))
        neck(feats)
    assert all(torch.equal(a, b) for a, b in zip(received[0], expected))


def test_existing_keys_do_not_move(demo_models):
    keys = {name: set(m.state_dict()) for name, m in demo_models.items()}
    paper = keys['block end (paper)']
    assert 'backbone.layer1.0.cbam.channel_attention.fc1.weight' in paper
    for name, extra in (('stem + block end', 'backbone.stem_attention.'),
                        ('stage inputs + block end', 'backbone.layer')):
        assert paper < keys[name]
        assert all(k.startswith(extra) for k in keys[name] - paper), name
    assert keys['stem'] - keys['baseline'] == {k for k in keys['stem']
                                               if k.startswith('backbone.stem_attention.')}


def test_position_before_reads_the_necks_input_channels_and_is_checked():
    fpn = dict(type='FPN', in_channels=[8, 16], out_channels=8, num_outs=3)
    m = NeckAttention(neck=fpn, attention=dict(type='SE', ratio=4), position='before')
    assert [a.in_channels for a in m.attentions] == [8, 16]
    with pytest.raises(ValueError, match=r"position must be one of \['after', 'before'\]"):
        NeckAttention(neck=fpn, attention=dict(type='SE'), position='inside')
    with pytest.raises(ValueError, match='received 1 levels but 2'):
        m((torch.randn(1, 8, 8, 8),))


@pytest.mark.parametrize('kwargs,match', [
    (dict(stem_attention='CBAM'), "stem_attention must be None or a config dict"),
    (dict(stage_input_attention=dict(type='CBAM', in_channels=8)), 'must not set in_channels'),
])
def test_attention_resnet_refuses_bad_attention_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionResNet(depth=18, **kwargs)


def test_a_typo_in_attention_resnets_types_is_named_before_building():
    cfg = load_config(Config.fromfile(DEMO['stem']))
    cfg.model.backbone.stem_attention.type = 'CBMA'
    with pytest.raises(UnknownPluginError, match=r"model\.backbone\.stem_attention\.type"):
        check_model_plugins(cfg)


@pytest.mark.parametrize('name', ['stem + neck', 'stage inputs + block end',
                                  'backbone outputs'])
def test_placement_trains_and_its_checkpoint_loads_strictly(name, tmp_path):
    cfg = load_config(Config.fromfile(DEMO[name]))
    cfg.merge_from_dict(dict(iteration_budget(2), **{
        'train_dataloader.dataset.num_images': 4, 'train_dataloader.batch_size': 2}))
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    run_train(build_train_config(cfg, work_dir=str(tmp_path)))
    checkpoint = latest_checkpoint(str(tmp_path))
    model = build_model_offline(DEMO[name]).eval()
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    saved = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']
    assert set(saved) == set(model.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
