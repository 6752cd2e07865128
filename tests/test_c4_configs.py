"""The Faster R-CNN C4 configs of the paper's COCO protocol (Table 6): tf-faster-rcnn's
detector and schedule in mmdet, a plugin in every ResNet block (conv5 in the shared head
included), the shared head started from the converted ImageNet checkpoint, and the R-50
variants training and testing on tiny generated COCO images."""
import os
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS

from cbam_mmdet import CBAM, SE
from cbam_mmdet.convert import convert_checkpoint_file
from cbam_mmdet.datasets import SHAPE_CLASSES, export_coco
from cbam_mmdet.engine import check_no_frozen_random_attention, frozen_attention_modules
from cbam_mmdet.models import PluginResLayer
from cbam_mmdet.offline_model import load_config, without_pretrained
from test_convert_official_cbam import OfficialResNet, randomize_, save_like_official
from test_convert_timm_seresnet import TimmSEResNet

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NAMES = [f'faster_rcnn_r{d}_c4{v}_coco.py' for d in (50, 101) for v in ('', '_se', '_cbam')]
#: one plugin per Bottleneck: conv2-conv4 in the backbone + conv5 (3 blocks) in the head
BLOCKS = {50: 13 + 3, 101: 30 + 3}
PLUGIN = {'_se': SE, '_cbam': CBAM, '': None}


def config(name):
    return load_config(osp.join(ROOT, 'configs', name))


def variant(name):
    return name.split('_c4')[1][:-len('_coco.py')]


@pytest.mark.parametrize('name', NAMES)
def test_c4_config_has_a_plugin_in_every_resnet_block_conv5_included(name):
    cfg = config(name)
    model = MODELS.build(without_pretrained(cfg.model))  # built, not initialised (faster)
    plugin = PLUGIN[variant(name)]
    found = [m for m in model.modules() if isinstance(m, (CBAM, SE))]
    head = model.roi_head.shared_head
    assert isinstance(head, PluginResLayer) and head.stage == 3
    if plugin is None:
        assert found == []
        return
    assert len(found) == BLOCKS[cfg.model.backbone.depth]
    assert all(type(m) is plugin for m in found)
    in_head = [n for n, m in head.named_modules() if isinstance(m, plugin)]
    assert in_head == [f'layer4.{i}.{plugin.__name__.lower()}' for i in range(3)]


@pytest.mark.parametrize('name', NAMES)
def test_c4_config_is_tf_faster_rcnn_on_coco(name):
    cfg = config(name)
    m = cfg.model
    assert m.backbone.num_stages == 3 and m.backbone.out_indices == (2, )
    assert m.backbone.style == m.roi_head.shared_head.style == 'pytorch'
    assert m.backbone.frozen_stages == 1 and m.backbone.norm_eval
    assert not m.backbone.norm_cfg.requires_grad
    assert m.roi_head.shared_head.depth == m.backbone.depth
    assert m.roi_head.shared_head.stride == 1  # 7x7 crops stay 7x7 through conv5
    assert m.roi_head.bbox_roi_extractor.roi_layer.output_size == 7
    anchors = m.rpn_head.anchor_generator
    assert anchors.scales == [4, 8, 16, 32] and anchors.strides == [16]
    assert m.train_cfg.rcnn.sampler.num == 256
    assert m.test_cfg.rpn.max_per_img == 300 and m.test_cfg.rcnn.nms.iou_threshold == 0.3
    for pipeline in (cfg.train_dataloader.dataset.pipeline,
                     cfg.test_dataloader.dataset.pipeline):
        assert [t.scale for t in pipeline if t.type == 'Resize'] == [(1000, 600)]
    # 490k images at lr 0.001 per image, step at 350k: at 16 images per iteration
    images = cfg.train_dataloader.batch_size * 8
    assert images == cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_cfg.max_iters * images == 490_000
    assert cfg.param_scheduler[1].milestones == [350_000 // images]
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.001 * images)
    # the backbone and the shared head start from the same file
    assert m.backbone.init_cfg == m.roi_head.shared_head.init_cfg
    assert any(h.type == 'FrozenAttentionCheckHook' for h in cfg.custom_hooks)


def test_shared_head_refuses_plugins_with_stages():
    with pytest.raises(ValueError, match="remove 'stages'"):
        MODELS.build(dict(type='PluginResLayer', depth=50, plugins=[dict(
            cfg=dict(type='CBAM'), position='after_conv3', stages=(True, ))]))
    with pytest.raises(ValueError, match='shared_head.plugins must be None or a list'):
        MODELS.build(dict(type='PluginResLayer', depth=50,
                          plugins=dict(cfg=dict(type='SE'), position='after_conv3')))


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """Converted R-50 ImageNet checkpoints, from random official CBAM and timm SE files."""
    tmp = tmp_path_factory.mktemp('imagenet')
    official = tmp / 'RESNET50_CBAM.pth'
    save_like_official(randomize_(OfficialResNet(50), seed=50), official, 50)
    torch.save(randomize_(TimmSEResNet(50), seed=51).state_dict(), tmp / 'seresnet50.pth')
    out = {'_cbam': str(tmp / 'resnet50_cbam_mmdet.pth'),
           '_se': str(tmp / 'seresnet50_mmdet.pth')}
    convert_checkpoint_file(official, out['_cbam'], 'official_cbam', depth=50)
    convert_checkpoint_file(tmp / 'seresnet50.pth', out['_se'], 'timm_seresnet', depth=50)
    return out


def with_checkpoint(cfg, path):
    """``cfg`` started from ``path`` (backbone and shared head), or from nothing (None)."""
    for part in (cfg.model.backbone, cfg.model.roi_head.shared_head):
        part.init_cfg = dict(type='Pretrained', checkpoint=path) if path else None
    return cfg


@pytest.mark.parametrize('kind', ['_cbam', '_se'])
def test_converted_checkpoint_starts_the_backbone_and_the_shared_head(converted, kind):
    path = converted[kind]
    cfg = with_checkpoint(config(f'faster_rcnn_r50_c4{kind}_coco.py'), path)
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = torch.load(path, weights_only=True)['state_dict']
    head = model.roi_head.shared_head.state_dict()
    assert head and all(torch.equal(v, state[k]) for k, v in head.items())
    assert any('.cbam.' in k or '.se.' in k for k in head)
    backbone = model.backbone.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in backbone.items())
    model.train()  # frozen_stages=1: layer1's plugins are fixed; their weights are in the file
    frozen = [f'backbone.layer1.{i}.{kind[1:]}' for i in range(3)]
    assert frozen_attention_modules(model) == frozen
    check_no_frozen_random_attention(model, [path])
    with pytest.raises(ValueError, match='frozen backbone stage'):
        check_no_frozen_random_attention(model, [])


def tiny_batch(model, seed=0):
    """One 64x96 image with two boxes through the detector's data preprocessor."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    sample = DetDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96),
                                         scale_factor=(1.0, 1.0), pad_shape=(64, 96)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[8., 8., 40., 48.],
                                                            [50., 10., 90., 60.]]),
                                       labels=torch.tensor([1, 2]))
    image = torch.randint(0, 256, (3, 64, 96), generator=gen, dtype=torch.uint8)
    return model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), True)


@pytest.mark.parametrize('kind', ['_cbam', '_se'])
def test_shared_head_plugins_receive_gradients(kind):
    cfg = config(f'faster_rcnn_r50_c4{kind}_coco.py')
    cfg.model.train_cfg.rcnn.sampler.num = 4
    model = MODELS.build(without_pretrained(cfg.model))  # PyTorch's initialisation
    model.train()
    torch.manual_seed(0)
    loss, _ = model.parse_losses(model(**tiny_batch(model), mode='loss'))
    loss.backward()
    plugins = [m for m in model.roi_head.shared_head.modules() if isinstance(m, (CBAM, SE))]
    assert len(plugins) == 3
    for plugin in plugins:
        grads = [p.grad for p in plugin.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def tiny_coco(cfg, root, work_dir):
    """``cfg`` on 4 generated 64x96 COCO images (3 classes; 2 for the test) at their size,
    a few proposals and RoIs, 2 iterations of batch 1, no validation, no loader workers."""
    ann_file = export_coco(root, num_images=4, seed=0, scene_cfg=dict(height=64, width=96,
                                                                   max_size=40))
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # the test loop alone
    for split in ('train', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.update(batch_size=1, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=root, ann_file='annotations.json',
                              data_prefix=dict(img='images/'),
                              metainfo=dict(classes=SHAPE_CLASSES))
        for t in loader.dataset.pipeline:
            if t.type == 'Resize':
                t.scale = (96, 64)
    cfg.test_evaluator.ann_file = ann_file
    cfg.model.roi_head.bbox_head.num_classes = len(SHAPE_CLASSES)
    cfg.test_dataloader.dataset.indices = 2
    cfg.model.train_cfg.rpn_proposal.max_per_img = 16
    cfg.model.train_cfg.rcnn.sampler.num = 4  # conv5 runs on every RoI: keep them few
    cfg.model.test_cfg.rpn.max_per_img = 4
    cfg.train_cfg.max_iters = 2
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = None  # no 120 MB file to write
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.mark.parametrize('kind', ['', '_se', '_cbam'])
def test_r50_c4_trains_two_iterations_and_tests(converted, kind, tmp_path):
    """The R-50 configs as shipped, on tiny data; SE/CBAM from converted checkpoints (the
    frozen layer1 plugins need them), the baseline without torchvision weights."""
    from mmengine.runner import Runner
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg = with_checkpoint(config(f'faster_rcnn_r50_c4{kind}_coco.py'), converted.get(kind))
    cfg = tiny_coco(cfg, str(tmp_path / 'coco'), str(tmp_path / 'work'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    metrics = runner.test()
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert 0.0 <= metrics[key] <= 1.0 or metrics[key] == -1.0


@pytest.mark.parametrize('depth', [50, 101])
def test_c4_presets_are_table_6_with_these_configs(depth):
    from cbam_mmdet.reproduce import PRESETS
    preset = PRESETS[f'coco-c4-r{depth}']
    assert [v.config for v in preset.variants] == [
        f'configs/{n}' for n in NAMES if n.startswith(f'faster_rcnn_r{depth}_')]
    assert all(osp.isfile(osp.join(ROOT, v.config)) for v in preset.variants)
    baseline, se, cbam = (v.paper for v in preset.variants)
    assert se is None and 'Table 6' in preset.paper_note
    assert (baseline['mAP'], cbam['mAP']) == {50: (27.0, 28.1), 101: (29.1, 30.8)}[depth]
    assert preset.input_shape == (3, 600, 1000) and not preset.runs_here
