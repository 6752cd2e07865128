"""Train Faster R-CNN R-50 + CBAM on a tiny VOC-format dataset with tools/train.py, save a
checkpoint, evaluate it with tools/test.py and get the VOC metric (11-point mAP@0.5)."""
import importlib.util
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The first three VOC classes, so VOCMetric's per-class summary prints their own names.
CLASSES = ('aeroplane', 'bicycle', 'bird')
COLOURS = ((0, 0, 255), (0, 255, 0), (255, 0, 0))  # BGR, one per class


def write_voc2007(root, n_trainval=4, n_test=4, size=128, seed=0):
    """A VOCdevkit/VOC2007 folder of ``size`` x ``size`` JPEGs with 2-3 filled
    rectangles of the classes' colours, their XML annotations and ImageSets."""
    import cv2

    rng = np.random.default_rng(seed)
    voc = os.path.join(root, 'VOCdevkit', 'VOC2007')
    for sub in ('Annotations', 'JPEGImages', os.path.join('ImageSets', 'Main')):
        os.makedirs(os.path.join(voc, sub))
    ids = [f'{i:06d}' for i in range(n_trainval + n_test)]
    for img_id in ids:
        img = np.full((size, size, 3), 127, np.uint8)
        objects = []
        for k in range(int(rng.integers(2, 4))):
            label = k % len(CLASSES)
            w, h = (int(v) for v in rng.integers(30, 60, 2))
            x1, y1 = (int(v) for v in rng.integers(0, size - 60, 2))
            x2, y2 = x1 + w, y1 + h
            img[y1:y2, x1:x2] = COLOURS[label]
            objects.append(
                f'<object><name>{CLASSES[label]}</name><difficult>0</difficult>'
                f'<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax>'
                f'<ymax>{y2}</ymax></bndbox></object>')
        cv2.imwrite(os.path.join(voc, 'JPEGImages', f'{img_id}.jpg'), img)
        with open(os.path.join(voc, 'Annotations', f'{img_id}.xml'), 'w') as f:
            f.write(f'<annotation><filename>{img_id}.jpg</filename><size><width>{size}'
                    f'</width><height>{size}</height><depth>3</depth></size>'
                    f'{"".join(objects)}</annotation>')
    main_dir = os.path.join(voc, 'ImageSets', 'Main')
    with open(os.path.join(main_dir, 'trainval.txt'), 'w') as f:
        f.write('\n'.join(ids[:n_trainval]) + '\n')
    with open(os.path.join(main_dir, 'test.txt'), 'w') as f:
        f.write('\n'.join(ids[n_trainval:]) + '\n')
    return os.path.join(root, 'VOCdevkit') + os.sep


TINY_CONFIG = """
_base_ = {base!r}
data_root = {data_root!r}
metainfo = dict(classes={classes!r})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='VOCDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='VOC2007/ImageSets/Main/trainval.txt',
                 data_prefix=dict(sub_data_root='VOC2007/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=8),
                 pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(roi_head=dict(bbox_head=dict(num_classes=3)))
"""


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}',
                                                  os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_then_test_reports_voc_map(tmp_path):
    data_root = write_voc2007(str(tmp_path / 'data'))
    cfg_file = tmp_path / 'tiny_faster_rcnn_r50_cbam_voc.py'
    cfg_file.write_text(TINY_CONFIG.format(
        base=os.path.join(ROOT, 'configs', 'faster_rcnn_r50_cbam_voc0712.py'),
        data_root=data_root, classes=CLASSES))
    work_dir = str(tmp_path / 'work')
    options = ['model.backbone.init_cfg=None', 'train_cfg.max_epochs=1',
               'train_cfg.val_interval=1', 'default_hooks.logger.interval=1',
               'randomness.seed=0']

    runner = load_tool('train').main([str(cfg_file), '--work-dir', work_dir,
                                      '--cfg-options', *options])
    checkpoint = os.path.join(work_dir, 'epoch_1.pth')
    assert os.path.isfile(checkpoint)
    # The run trained the CBAM plugins of the backbone (16 for R-50).
    names = [n for n, _ in runner.model.named_modules() if n.endswith('.cbam')]
    assert len(names) == 16
    # ... and saved them: the checkpoint holds the trained plugin weights.
    from cbam_mmdet.checkpoint import load_checkpoint_file
    saved = load_checkpoint_file(checkpoint)['state_dict']
    key = 'backbone.layer1.0.cbam.channel_attention.fc1.weight'
    torch.testing.assert_close(saved[key], runner.model.state_dict()[key])

    metrics = load_tool('test').main([str(cfg_file), checkpoint, '--work-dir',
                                      str(tmp_path / 'test'), '--cfg-options',
                                      'model.backbone.init_cfg=None'])
    print('VOC metrics of the 1-epoch tiny run:', metrics)
    assert {'pascal_voc/mAP', 'pascal_voc/AP50'} <= set(metrics)
    assert 0.0 <= metrics['pascal_voc/mAP'] <= 1.0
